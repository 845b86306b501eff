"""The pack's rules offline, over the JSON `tools/plan.py --json FILE` writes.

    venv/bin/python -m policy PLAN.json [--config FILE]     (from the project root)

Every rule in `rules.RULES` runs over every resource in the plan (its `type`,
`name`, `urn` and `inputs`, which are the engine's camelCase props), as the pack
does under `pulumi preview --policy-pack policy`. Violations go to stdout, one a
line: `RULE: URN: MESSAGE`; a summary goes to stderr. Exit 0 when none, 1 when
any, 2 with one line on stderr when the plan or config file is missing,
unreadable or not what `tools/plan.py --json` / `--policy-pack-config` take.

No Pulumi engine or `pulumi_policy` is needed: `rules.py` is pure.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rules

EXIT_CLEAN = 0
EXIT_VIOLATIONS = 1
EXIT_BAD_INPUT = 2
HERE = Path(__file__).resolve().parent
DEFAULT_CONFIG = HERE / "config.json"
LEVELS = ("advisory", "mandatory", "remediate", "disabled")
REDACTED = "[secret]"


class InputError(Exception):
    """A plan or config file that cannot be used: one line."""


@dataclass(frozen=True)
class Violation:
    rule: str
    resource: str   # the URN, or the name when the plan has none
    message: str
    level: str = "mandatory"

    def line(self) -> str:
        suffix = "" if self.level != "advisory" else " [advisory]"
        return f"{self.rule}: {self.resource}: {self.message}{suffix}"


def _read_json(path: Path, what: str) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what} file") from None
    except IsADirectoryError:
        raise InputError(f"{path}: is a directory, not a {what} file") from None
    except OSError as err:
        raise InputError(f"{path}: cannot read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: not UTF-8 text, so not a {what} file") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise InputError(f"{path}: not JSON (line {err.lineno} column {err.colno}: {err.msg})") from None


def load_plan(path: Path) -> list[Mapping[str, Any]]:
    """The resources of a plan JSON, each checked to have what the rules need."""
    document = _read_json(path, "plan")
    if not isinstance(document, Mapping) or not isinstance(document.get("resources"), list):
        raise InputError(f"{path}: not a plan (expected an object with a \"resources\" list, "
                         "as tools/plan.py --json writes)")
    for index, resource in enumerate(document["resources"]):
        where = f"{path}: resources[{index}]"
        if not isinstance(resource, Mapping):
            raise InputError(f"{where} is not an object")
        for key in ("type", "name"):
            if not isinstance(resource.get(key), str) or not resource[key]:
                raise InputError(f"{where} has no {key}")
        if not isinstance(resource.get("inputs", {}), Mapping):
            raise InputError(f"{where} ({resource['name']}): inputs is not an object")
    return document["resources"]


def load_config(path: Path) -> dict[str, dict[str, Any]]:
    """A `--policy-pack-config` file ({policy: level or {enforcementLevel?, props...}},
    "all" for every policy's level) as {rule name: {"level": ..., "props": {...}}}."""
    raw = _read_json(path, "config")
    if not isinstance(raw, Mapping):
        raise InputError(f"{path}: not a policy config (expected an object keyed by policy name)")
    known = {rule.name for rule in rules.RULES}
    default_level = "mandatory"
    out: dict[str, dict[str, Any]] = {}
    for key, value in raw.items():
        if key != "all" and key not in known:
            raise InputError(f"{path}: unknown policy {key!r} (known: {', '.join(sorted(known))})")
        if isinstance(value, str):
            level, props = value, {}
        elif isinstance(value, Mapping):
            props = {k: v for k, v in value.items() if k != "enforcementLevel"}
            level = value.get("enforcementLevel", None)
        else:
            raise InputError(f"{path}: {key}: expected an enforcement level or an object")
        if level is not None and level not in LEVELS:
            raise InputError(f"{path}: {key}: enforcement level {level!r} is not one of {', '.join(LEVELS)}")
        if key == "all":
            if props:
                raise InputError(f"{path}: all: takes only an enforcement level")
            default_level = level or default_level
            continue
        out[key] = {"level": level, "props": props}
    return {rule.name: {"level": (out.get(rule.name, {}).get("level") or default_level),
                        "props": out.get(rule.name, {}).get("props", {})}
            for rule in rules.RULES}


def _redacted(value: Any) -> bool:
    if value == REDACTED:
        return True
    if isinstance(value, Mapping):
        return any(_redacted(v) for k, v in value.items() if not str(k).startswith("__"))
    if isinstance(value, list):
        return any(_redacted(v) for v in value)
    return False


def check(resources: list[Mapping[str, Any]],
          config: Mapping[str, Mapping[str, Any]] | None = None) -> list[Violation]:
    """Every rule over every resource. A rule that cannot judge a resource (its
    inputs are not what the engine would send) counts as a violation: fail closed."""
    found: list[Violation] = []
    for resource in resources:
        name, rtype = resource["name"], resource["type"]
        where = resource.get("urn") or name
        props = resource.get("inputs") or {}
        for rule in rules.RULES:
            settings = (config or {}).get(rule.name, {})
            level = settings.get("level") or "mandatory"
            if level == "disabled":
                continue
            try:
                messages = rule(rtype, props, name, settings.get("props") or {})
            except Exception as err:  # noqa: BLE001 - a rule that crashes must not pass the plan
                messages = [f"{name}: cannot be checked ({type(err).__name__}: {err})"]
            prefix = f"{name}: "
            found.extend(Violation(rule.name, where, m[len(prefix):] if m.startswith(prefix) else m, level)
                         for m in messages)
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m policy",
        description="Run the hybrid-llm policy pack's rules offline over a plan's JSON, the file\n"
                    "`tools/plan.py --json FILE` writes; no Pulumi engine needed. (Under\n"
                    "`pulumi preview --policy-pack policy` the same folder is the pack itself.)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""\
output: one violation a line on stdout, `RULE: URN: MESSAGE` (` [advisory]` appended
when the config makes that rule advisory); a summary line on stderr.

exit status: 0 no violations; 1 at least one mandatory violation; 2 the plan or config
file is missing, unreadable or invalid (one line on stderr).

examples:
  venv/bin/python tools/plan.py --json plan-out/plan.json && venv/bin/python -m policy plan-out/plan.json
  venv/bin/python tools/plan.py --set nebulaPort=5353 --json p.json
  venv/bin/python -m policy p.json --config my-config.json    # {"no-open-ingress": {"nebulaPort": 5353}}

Secret inputs are "[secret]" in a plan written without --show-secrets, so the rules
see the redacted text; a note on stderr says when a guarded resource has any.
""")
    parser.add_argument("plan", metavar="PLAN.json", type=Path,
                        help="plan JSON written by `tools/plan.py --json FILE`")
    parser.add_argument("--config", metavar="FILE", type=Path, default=None,
                        help="policy config, the format `pulumi preview --policy-pack-config` takes "
                             "({policy: {property: value, enforcementLevel: ...}}) "
                             f"(default: the pack's {DEFAULT_CONFIG.name}, as CI passes it)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        resources = load_plan(args.plan)
        config_path = args.config or DEFAULT_CONFIG
        config = load_config(config_path) if (args.config or DEFAULT_CONFIG.exists()) else None
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT

    found = check(resources, config)
    for violation in found:
        print(violation.line())
    failing = [v for v in found if v.level != "advisory"]
    redacted = sum(1 for r in resources if r["type"] in rules.GUARDED_TYPES and _redacted(r.get("inputs")))
    if redacted:
        print(f"note: {redacted} checked resource{'s' if redacted != 1 else ''} with [secret] inputs; "
              "write the plan with --show-secrets to check their values", file=sys.stderr)
    scope = f"{len(resources)} resources, {len(rules.RULES)} rules"
    if not found:
        print(f"policy: {scope}: no violations", file=sys.stderr)
    else:
        count = len({v.resource for v in found})
        print(f"policy: {scope}: {len(found)} violation{'s' if len(found) != 1 else ''} in {count} "
              f"resource{'s' if count != 1 else ''}"
              + (f" ({len(found) - len(failing)} advisory)" if len(failing) != len(found) else ""),
              file=sys.stderr)
    return EXIT_VIOLATIONS if failing else EXIT_CLEAN


if __name__ == "__main__":
    sys.exit(main())
