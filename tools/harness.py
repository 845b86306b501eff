"""Run `__main__.py` in-process under Pulumi mocks with a stack's configuration.

This is what `tools/plan.py` and the tests share: no Pulumi CLI, no cloud
account. Config comes from `Pulumi.yaml` defaults, then `Pulumi.<stack>.yaml`,
then `--set` overrides, as the CLI would merge them.
"""

from __future__ import annotations

import asyncio
import datetime
import decimal
import difflib
import json
import math
import os
import re
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
from tools.policy_port import policy_pack_port_problem  # noqa: E402
from tools.mocks import AwsMocks  # noqa: E402

PROJECT = "hybrid-llm"
SECRET_KEYS = frozenset(k for k, spec in KEYS.items() if spec.secret)


class StackConfigFileError(Exception):
    """A stack file or a --set that cannot be read."""


# The top-level keys of a stack file (Pulumi's "stack settings file reference").
STACK_FILE_KEYS = ("config", "secretsprovider", "encryptedkey", "encryptionsalt", "environment")


# --- YAML as the Pulumi CLI reads it -------------------------------------------------
#
# The CLI reads project and stack files with Go's gopkg.in/yaml.v3, not YAML 1.1 as
# PyYAML does: only true/false (True, TRUE, ...) are booleans, so `yes`, `no`, `on`,
# `off` are strings; `1:30` is a string, not the sexagesimal 90; a key given twice
# is an error. Numbers follow yaml.v3's resolve.go: `_` is dropped, then Go's
# ParseInt with base 0 (so 0x10, 0o10, 0b10, and `010` as the octal 8), then a
# YAML float; a date (2024-01-01) becomes a timestamp. The CLI hands the program a
# number as JSON. A plain decimal is passed on so; every other spelling of a number
# or a date is refused, naming the key, since the CLI would hand the program a value
# other than the one written.


@dataclass(frozen=True)
class _YamlNumber:
    """A plain scalar the CLI reads as a number or a timestamp: as written, and as read."""

    text: str
    value: Any          # int, float, or the timestamp's text (a str)


_PLAIN_DECIMAL = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?")
_GO_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_GO_SPECIAL_FLOATS = {**{s: math.nan for s in (".nan", ".NaN", ".NAN")},
                      **{s: math.inf for s in (".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF")},
                      **{s: -math.inf for s in ("-.inf", "-.Inf", "-.INF")}}
_GO_DATE = re.compile(r"[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([Tt ].*)?")
_INT64 = (-2 ** 63, 2 ** 63 - 1)


def _go_parse_int(text: str, base: int = 0) -> Optional[int]:
    """Go's strconv.ParseInt(text, base, 64) (then ParseUint): None where both fail."""
    sign, digits = (-1, text[1:]) if text[:1] == "-" else (1, text[1:] if text[:1] == "+" else text)
    if base == 0:
        prefix = digits[:2].lower()
        base, digits = {"0x": (16, digits[2:]), "0o": (8, digits[2:]), "0b": (2, digits[2:])}.get(
            prefix, (8, digits[1:]) if digits[:1] == "0" and len(digits) > 1 else (10, digits))
    alphabet = "0123456789abcdef"[:base]
    if not digits or any(c not in alphabet for c in digits.lower()):
        return None
    value = sign * int(digits, base)
    if _INT64[0] <= value <= _INT64[1] or (sign == 1 and text[:1] != "+" and value < 2 ** 64):
        return value
    return None


def _go_yaml_scalar(text: str) -> Any:
    """What yaml.v3 makes of a plain scalar that starts like a number: a `_YamlNumber`,
    or the text itself when it is a string there."""
    if text in _GO_SPECIAL_FLOATS:
        return _YamlNumber(text, _GO_SPECIAL_FLOATS[text])
    if text.startswith("."):
        return _YamlNumber(text, float(text)) if _GO_FLOAT.fullmatch(text) else text
    if _GO_DATE.fullmatch(text) and _go_timestamp(text):
        return _YamlNumber(text, _go_timestamp(text))
    plain = text.replace("_", "")
    number = _go_parse_int(plain)
    if number is not None:
        return _YamlNumber(text, number)
    if _GO_FLOAT.fullmatch(plain):
        return _YamlNumber(text, float(plain))
    return text


def _go_timestamp(text: str) -> Optional[str]:
    """yaml.v3's timestamp forms (date, date and time): how the CLI then prints it."""
    for form in ("%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S"):
        try:
            moment = datetime.datetime.strptime(text.rstrip("Zz").split(".")[0], form)
        except ValueError:
            continue
        return moment.strftime("%Y-%m-%d %H:%M:%S +0000 UTC")
    return None


def _go_json_number(value: float | int) -> str:
    """A number as Go's encoding/json writes it (1.0 is "1", 1e-05 is "0.00001")."""
    if isinstance(value, int) or (value.is_integer() and abs(value) < 1e21):
        return str(int(value))
    text = repr(value)
    if "e" in text and 1e-6 <= abs(value) < 1e21:
        return format(decimal.Decimal(text), "f")
    return text.replace("e-0", "e-").replace("e+0", "e+") if "e" in text else text


class _Reinterpreted(ValueError):
    """A number written so the CLI would hand the program something else."""


def _number_string(number: _YamlNumber) -> str:
    """The text the CLI hands the program for `number`, if that is what is written."""
    value = number.value
    if isinstance(value, str):
        raise _Reinterpreted(f"YAML reads {number.text} as a date (the CLI hands the program {value!r}); "
                             "quote it")
    if isinstance(value, float) and not math.isfinite(value):
        raise _Reinterpreted(f"YAML reads {number.text} as {'not a number' if math.isnan(value) else 'infinity'}, "
                             "which no key takes")
    shown = _go_json_number(value)
    if not _PLAIN_DECIMAL.fullmatch(number.text):
        raise _Reinterpreted(f"YAML reads {number.text} as the number {shown}; write {shown}, "
                             f"or quote '{number.text}' if you mean the text")
    return shown


def _plain_data(value: Any) -> Any:
    """Lists and maps with their numbers as the CLI reads them (for JSON)."""
    if isinstance(value, _YamlNumber):
        return json.loads(_number_string(value))
    if isinstance(value, list):
        return [_plain_data(v) for v in value]
    if isinstance(value, dict):
        return {str(_key_text(k)): _plain_data(v) for k, v in value.items()}
    return value


def _key_text(key: Any) -> Any:
    """A mapping key as written (a number-like key stays its text)."""
    return key.text if isinstance(key, _YamlNumber) else key


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: Any, first: int, again: int):
        super().__init__(f"{key} is set twice (lines {first} and {again}); the Pulumi CLI refuses a key "
                         "given twice")


class _CliLoader(yaml.SafeLoader):
    """PyYAML's safe loader resolving plain scalars as yaml.v3 does (see above), and
    refusing a key given twice in one mapping."""

    yaml_implicit_resolvers: dict = {}

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = _key_text(self.construct_object(key_node, deep=True))
                line = key_node.start_mark.line + 1
                try:
                    if key in seen:
                        raise _DuplicateKey(key, seen[key], line)
                    seen[key] = line
                except TypeError:
                    continue        # an unhashable key: PyYAML refuses it below
        return super().construct_mapping(node, deep=deep)


_CLI_NUMBER_TAG = "tag:hybrid-llm,2025:cli-number"
_CliLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z"),
                                 list("tTfF"))
_CliLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"(?:~|null|Null|NULL|)\Z"),
                                 ["~", "n", "N", ""])
_CliLoader.add_implicit_resolver("tag:yaml.org,2002:merge", re.compile(r"<<\Z"), ["<"])
_CliLoader.add_implicit_resolver(_CLI_NUMBER_TAG, re.compile(r"[-+.0-9]"), list("-+.0123456789"))
_CliLoader.add_constructor(_CLI_NUMBER_TAG, lambda loader, node: _go_yaml_scalar(loader.construct_scalar(node)))


def _as_config_string(value: Any) -> str:
    """Config values reach a Pulumi program as strings; arrays and maps as JSON, and
    numbers as the CLI reads them (`_Reinterpreted` where that is not as written)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, _YamlNumber):
        return _number_string(value)
    if isinstance(value, (list, dict)):
        return json.dumps(_plain_data(value))
    return str(value)


def _load_yaml(path: Path) -> dict:
    """A project or stack file as a mapping, read as the CLI reads it (`_CliLoader`);
    anything else is one line naming the file."""
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_CliLoader)  # noqa: S506 (a safe loader)
    except (OSError, UnicodeDecodeError) as err:
        raise StackConfigFileError(f"{path.name}: cannot read it ({err})") from None
    except _DuplicateKey as err:
        raise StackConfigFileError(f"{path.name}: {err}") from None
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
    return {_key_text(k): v for k, v in block.items()}


def _stack_file_keys(data: dict, path: Path) -> None:
    """A stack file holds STACK_FILE_KEYS only: a misspelt `config:` is not ignored."""
    for key in data:
        key = _key_text(key)
        if key not in STACK_FILE_KEYS:
            guess = difflib.get_close_matches(str(key).lower(), STACK_FILE_KEYS, n=1)
            hint = f"did you mean {guess[0]}? " if guess else ""
            raise StackConfigFileError(f"{path.name}: {key}: unknown top-level key ({hint}a stack file holds "
                                       f"{', '.join(STACK_FILE_KEYS)})")


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
        try:
            if not isinstance(spec, dict):
                defaults[full] = _as_config_string(spec)
            elif "default" in spec or "value" in spec:
                if spec.get("secret"):
                    raise StackConfigFileError(f"{path.name}: {full} is secret and cannot have a plain default")
                defaults[full] = _as_config_string(spec["default"] if "default" in spec else spec["value"])
            else:
                required.add(full)
        except _Reinterpreted as err:
            raise StackConfigFileError(f"{path.name}: {full}: {err}") from None
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
    written: dict[str, str] = {}      # full key -> as the stack file writes it
    if path.exists():
        data = _load_yaml(path)
        _stack_file_keys(data, path)
        for key, value in _config_block(data, path).items():
            full = _full_key(str(key), PROJECT)
            if full in written:
                raise StackConfigFileError(f"{path.name}: {full} is set twice (as {written[full]} and {key}); "
                                           "keep one")
            written[full] = str(key)
            if isinstance(value, dict) and "secure" in value:
                raise StackConfigFileError(
                    f"{key}: encrypted in {path.name}; the offline plan cannot decrypt it, pass --set {key}=..."
                )
            if full.partition(":")[2] in SECRET_KEYS and full.startswith(f"{PROJECT}:") and str(value).strip():
                # Offline, every such key counts as a secret (`default_secret_keys`: a --set of it
                # stands for `pulumi config set --secret`); written in plain text it is none.
                raise StackConfigFileError(f"{path.name}: {full}: in plain text, but it holds credentials: "
                                           f"set it with `pulumi config set --secret {full} ...`")
            try:
                merged[full] = _as_config_string(value)
            except _Reinterpreted as err:
                raise StackConfigFileError(f"{path.name}: {full}: {err}") from None
    elif stack != "dev":
        raise StackConfigFileError(f"no stack file {path.name}")
    overrides = {key: _as_config_string(value) for key, value in (overrides or {}).items()}
    port_key = f"{PROJECT}:nebulaPort"
    pack_config = root / "policy" / "config.json"
    if port_key in merged and pack_config.exists() and port_key not in overrides:
        # The port the stack deploys with (a --set is a what-if): the policy pack must let it in.
        problem = policy_pack_port_problem(merged[port_key], pack_config)
        if problem:
            where = path.name if port_key in written else "Pulumi.yaml"
            raise StackConfigFileError(f"{where}: {problem}")
    merged.update(overrides)
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
    provider: Optional[str] = None       # `urn::id` of its explicit provider, if any
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
                provider=request.provider or None,
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
