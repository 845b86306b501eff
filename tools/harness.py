"""Run `__main__.py` in-process under Pulumi mocks with a stack's configuration.

This is what `tools/plan.py` and the tests share: no Pulumi CLI, no cloud
account. Config comes from `Pulumi.yaml` defaults, then `Pulumi.<stack>.yaml`,
then `--set` overrides, as the CLI would merge them.
"""

from __future__ import annotations

import asyncio
import json
import os
import runpy
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import yaml

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pulumi  # noqa: E402
from pulumi.runtime import mocks as pulumi_mocks, rpc, settings  # noqa: E402
from pulumi.runtime.stack import run_pulumi_func  # noqa: E402
from pulumi.runtime.sync_await import _sync_await  # noqa: E402

from components import generated  # noqa: E402
from components.config import KEYS  # noqa: E402
from tools.mocks import AwsMocks  # noqa: E402

PROJECT = "hybrid-llm"
SECRET_KEYS = frozenset(k for k, spec in KEYS.items() if spec.secret)


class StackConfigFileError(Exception):
    """A stack file or a --set that cannot be read."""


def _as_config_string(value: Any) -> str:
    """Config values reach a Pulumi program as strings; arrays and maps as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _load_yaml(path: Path) -> dict:
    """A project or stack file as a mapping; anything else is one line naming the file."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise StackConfigFileError(f"{path.name}: cannot read it ({err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise StackConfigFileError(f"{path.name}: not valid YAML{where} ({problem})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StackConfigFileError(f"{path.name}: expected a mapping at the top, got {type(data).__name__}")
    return data


def _config_block(data: dict, path: Path) -> dict:
    block = data.get("config") or {}
    if not isinstance(block, dict):
        raise StackConfigFileError(f"{path.name}: `config:` must be a mapping of keys to values")
    return block


def _full_key(key: str, project: str) -> str:
    return key if ":" in key else f"{project}:{key}"


def project_schema(root: Optional[Path] = None) -> tuple[dict[str, str], set[str]]:
    """(`key` → default, keys declared without one) from Pulumi.yaml's config block,
    refusing what the Pulumi CLI refuses: a `secret: true` key with a plain default."""
    path = (root or ROOT) / "Pulumi.yaml"
    project = _load_yaml(path)
    defaults: dict[str, str] = {}
    required: set[str] = set()
    for key, spec in _config_block(project, path).items():
        full = _full_key(key, project["name"])
        if not isinstance(spec, dict):
            defaults[full] = _as_config_string(spec)
        elif "default" in spec or "value" in spec:
            if spec.get("secret"):
                raise StackConfigFileError(f"{path.name}: {full} is secret and cannot have a plain default")
            defaults[full] = _as_config_string(spec["default"] if "default" in spec else spec["value"])
        else:
            required.add(full)
    return defaults, required


def project_defaults(root: Optional[Path] = None) -> dict[str, str]:
    """`hybrid-llm:<key>` → default, from Pulumi.yaml's config block."""
    return project_schema(root)[0]


def stack_config(stack: str, overrides: Optional[Mapping[str, str]] = None,
                 root: Optional[Path] = None) -> dict[str, str]:
    """Merged config of a stack, as the Pulumi CLI would hand it to the program, with
    the CLI's own rule: a key Pulumi.yaml declares without a default must be set."""
    root = root or ROOT
    merged, required = project_schema(root)
    path = root / f"Pulumi.{stack}.yaml"
    if path.exists():
        for key, value in _config_block(_load_yaml(path), path).items():
            if isinstance(value, dict) and "secure" in value:
                raise StackConfigFileError(
                    f"{key}: encrypted in {path.name}; the offline plan cannot decrypt it, pass --set {key}=..."
                )
            merged[_full_key(str(key), PROJECT)] = _as_config_string(value)
    elif stack != "dev":
        raise StackConfigFileError(f"no stack file {path.name}")
    for key, value in (overrides or {}).items():
        merged[key] = _as_config_string(value)
    missing = sorted(required - set(merged))
    if missing:
        raise StackConfigFileError(f"Stack '{stack}' is missing configuration value '{missing[0]}' "
                                   "(Pulumi.yaml declares it without a default)")
    return merged


def default_secret_keys(config: Mapping[str, str]) -> frozenset[str]:
    """The keys of `config` that the program requires to be secrets: offline, a
    `--set` of them stands for `pulumi config set --secret`."""
    return frozenset(k for k in config if k.split(":", 1)[-1] in SECRET_KEYS)


@dataclass
class PlannedResource:
    urn: str
    type: str
    name: str
    parent: Optional[str]
    custom: bool
    inputs: dict           # secrets still wrapped (see `is_secret` / `plain`)
    state: dict            # what the mocks answered
    id: Optional[str]
    protect: bool = False
    retain_on_delete: bool = False
    dependencies: tuple[str, ...] = ()   # URNs it depends on: Pulumi deletes it before them
    ignore_changes: tuple[str, ...] = ()
    delete_before_replace: bool = False

    def plain(self) -> dict:
        """Inputs with secrets unwrapped, for assertions."""
        return _strip_secrets(self.inputs, redact=False)


@dataclass
class StackOutput:
    value: Any
    secret: bool


@dataclass
class RenderedFile:
    path: str
    content: str
    secret: bool


@dataclass
class Plan:
    stack: str
    config: dict[str, str]
    resources: list[PlannedResource] = field(default_factory=list)
    outputs: dict[str, StackOutput] = field(default_factory=dict)
    files: list[RenderedFile] = field(default_factory=list)

    def of_type(self, type_token: str) -> list[PlannedResource]:
        return [r for r in self.resources if r.type == type_token]

    def named(self, name: str) -> PlannedResource:
        found = [r for r in self.resources if r.name == name]
        if len(found) != 1:
            raise KeyError(f"{len(found)} resources named {name!r}")
        return found[0]

    def by_urn(self, urn: str) -> PlannedResource:
        return next(r for r in self.resources if r.urn == urn)

    def children(self, parent: PlannedResource) -> list[PlannedResource]:
        return [r for r in self.resources if r.parent == parent.urn]

    def file(self, path: str) -> RenderedFile:
        return next(f for f in self.files if f.path == path)

    def kubernetes_documents(self, show_secrets: bool = False) -> list[tuple[str, dict]]:
        """What the homelab would receive, as (relative path, document): each
        Kubernetes object as its manifest, each Helm release as its values file."""
        out = []
        for r in self.resources:
            if not r.type.startswith("kubernetes:") or r.type.startswith("pulumi:providers:"):
                continue
            inputs = _strip_secrets(r.inputs, redact=not show_secrets)
            if r.type == "kubernetes:helm.sh/v3:Release":
                out.append((f"homelab/releases/{inputs['name']}.values.yaml", inputs.get("values") or {}))
                continue
            meta = inputs.get("metadata") or {}
            where = f"{meta.get('namespace')}-" if meta.get("namespace") else ""
            out.append((f"homelab/manifests/{where}{inputs['kind'].lower()}-{meta.get('name')}.yaml",
                        {k: v for k, v in inputs.items() if k in _MANIFEST_KEYS}))
        return out


_MANIFEST_KEYS = ("apiVersion", "kind", "metadata", "spec", "data", "stringData", "type", "immutable",
                  "rules", "roleRef", "subjects", "aggregationRule")


def _strip_secrets(value: Any, *, redact: bool) -> Any:
    if rpc.is_rpc_secret(value):
        return "[secret]" if redact else _strip_secrets(rpc.unwrap_rpc_secret(value), redact=False)
    if isinstance(value, dict):
        return {k: _strip_secrets(v, redact=redact) for k, v in value.items()}
    if isinstance(value, list):
        return [_strip_secrets(v, redact=redact) for v in value]
    if isinstance(value, (pulumi.Asset, pulumi.Archive)):
        return _describe_asset(value)
    return value


def _describe_asset(value: Any) -> dict:
    """A JSON-friendly view of an asset or archive (the Lambda's code): kind and contents by name."""
    if isinstance(value, pulumi.AssetArchive):
        return {"archive": {k: _describe_asset(v) for k, v in sorted(value.assets.items())}}
    if isinstance(value, (pulumi.FileAsset, pulumi.FileArchive)):
        return {type(value).__name__: str(value.path)}
    if isinstance(value, pulumi.StringAsset):
        return {"StringAsset": f"{len(value.text)} characters"}
    return {type(value).__name__: None}


def redacted(value: Any) -> Any:
    return _strip_secrets(value, redact=True)


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The stock mock monitor, plus what a plan needs: parent, custom, raw inputs,
    protect, retainOnDelete, dependencies, ignoreChanges and deleteBeforeReplace."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.records: list[PlannedResource] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            registration = self.resources[response.urn]
            self.records.append(PlannedResource(
                urn=response.urn, type=request.type, name=request.name,
                parent=request.parent or None, custom=bool(request.custom),
                inputs=rpc.deserialize_properties(request.object),
                state=dict(registration.state), id=registration.id or None,
                protect=bool(request.protect), retain_on_delete=bool(request.retainOnDelete),
                dependencies=tuple(request.dependencies),
                ignore_changes=tuple(request.ignoreChanges),
                delete_before_replace=bool(request.deleteBeforeReplace),
            ))
        return response


def _ensure_event_loop() -> None:
    """Pulumi's runtime runs on the thread's current event loop; code that ran
    `asyncio.run` before (the activator's tests) leaves none behind."""
    try:
        loop = asyncio.get_event_loop()
        if loop.is_closed():
            raise RuntimeError("closed")
    except RuntimeError:
        asyncio.set_event_loop(asyncio.new_event_loop())


def _reset_runtime() -> None:
    settings.ROOT.set(None)
    settings.SETTINGS.outputs.clear() if hasattr(settings, "SETTINGS") else None
    generated.reset()


async def _resolve(value: Any) -> StackOutput:
    output = pulumi.Output.from_input(value)
    resolved = await output.future(with_unknowns=False)
    secret = await output.is_secret()
    return StackOutput(_strip_secrets(resolved, redact=False), bool(secret))


def run(
    config: Mapping[str, str],
    *,
    stack: str = "dev",
    program: Path = ROOT / "__main__.py",
    preview: bool = False,
    secret_keys: Optional[Iterable[str]] = None,
    mocks: Optional[AwsMocks] = None,
) -> Plan:
    """Evaluate the program under mocks with exactly this (merged) config.
    `secret_keys` are the keys held as secrets (`pulumi config set --secret`);
    by default every key the program requires to be secret.

    Raises what the program raises (for instance `ConfigError`)."""
    _reset_runtime()
    _ensure_event_loop()
    region = config.get("aws:region", "us-east-1")
    aws_mocks = mocks or AwsMocks(region=region)
    monitor = _RecordingMonitor(aws_mocks)
    pulumi.runtime.set_mocks(aws_mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    if secret_keys is None:
        secret_keys = default_secret_keys(config)
    pulumi.runtime.set_all_config(dict(config), list(secret_keys))
    os.environ.pop("PULUMI_CONFIG", None)

    plan = Plan(stack=stack, config=dict(config))

    async def collect() -> None:
        for name, value in settings.get_root_resource().outputs.items():
            plan.outputs[name] = await _resolve(value)
        for item in generated.published():
            resolved = await _resolve(item.content)
            plan.files.append(RenderedFile(item.path, resolved.value, resolved.secret))

    def program_then_collect():
        runpy.run_path(str(program), run_name="__main__")
        return collect()

    cwd = os.getcwd()
    os.chdir(program.parent)
    try:
        _sync_await(run_pulumi_func(program_then_collect))
    finally:
        os.chdir(cwd)
    plan.resources = list(monitor.records)
    return plan


# The three lighthouse placements as config overrides of a stack
# (components/mesh/placement.py). The homelab one names a DNS endpoint and the
# first node's LAN address, as a user would.
PLACEMENTS: dict[str, dict[str, str]] = {
    "workers": {"hybrid-llm:lighthousePlacement": "workers"},
    "ec2": {"hybrid-llm:lighthousePlacement": "ec2"},
    "homelab": {"hybrid-llm:lighthousePlacement": "homelab",
                "hybrid-llm:homelabLighthouseEndpoint": "home.example.net:4242",
                "hybrid-llm:homelabLighthouseLanIp": "192.168.1.20"},
}


def run_stack(stack: str = "dev", overrides: Optional[Mapping[str, str]] = None, **kwargs) -> Plan:
    """`run` with the config a stack would have."""
    return run(stack_config(stack, overrides), stack=stack, **kwargs)
