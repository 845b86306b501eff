"""Offline plan: run the program under Pulumi mocks with a stack's config and show
what it would declare. No cloud account and no Pulumi CLI needed.

    python tools/plan.py [--stack dev] [--set hybrid-llm:idleMinutes=5 ...]
                         [--json FILE] [--render DIR] [--show-secrets]

Exit code 2 with one line on stderr when the config is invalid.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import harness  # noqa: E402
from components import costs  # noqa: E402
from components.config import ConfigError, NAMESPACE, parse  # noqa: E402

EXIT_BAD_CONFIG = 2


def parse_set(items: list[str]) -> dict[str, str]:
    """`KEY=VALUE` pairs, keys namespaced as `pulumi config set` does."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE")
        out[key if ":" in key else f"{NAMESPACE}:{key}"] = value
    return out


def tree_lines(plan: harness.Plan) -> list[str]:
    """Resources as an indented tree: type, name (children under their parent)."""
    by_parent: dict[str | None, list[harness.PlannedResource]] = {}
    urns = {r.urn for r in plan.resources}
    for r in plan.resources:
        by_parent.setdefault(r.parent if r.parent in urns else None, []).append(r)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for r in sorted(by_parent.get(parent, []), key=lambda x: (x.type, x.name)):
            lines.append(f"{'  ' * depth}{r.type}  {r.name}")
            walk(r.urn, depth + 1)

    walk(None, 0)
    return lines


def plan_json(plan: harness.Plan, show_secrets: bool) -> dict:
    show = (lambda v: harness._strip_secrets(v, redact=False)) if show_secrets else harness.redacted
    return {
        "stack": plan.stack,
        "resources": [
            {"type": r.type, "name": r.name, "urn": r.urn, "parent": r.parent,
             "custom": r.custom, "inputs": show(r.inputs)}
            for r in plan.resources
        ],
        "outputs": {k: (o.value if show_secrets or not o.secret else "[secret]")
                    for k, o in plan.outputs.items()},
    }


def render(plan: harness.Plan, directory: Path, show_secrets: bool) -> list[Path]:
    """Write every generated file; secret ones redacted unless asked, and 0600."""
    written = []
    for item in plan.files:
        path = directory / item.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if item.secret and not show_secrets:
            path.write_text("[secret: run tools/plan.py with --show-secrets to write it]\n")
        else:
            path.write_text(item.content)
        if item.secret:
            os.chmod(path, 0o600)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", default="dev")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--json", type=Path, metavar="FILE")
    parser.add_argument("--render", type=Path, metavar="DIR")
    parser.add_argument("--show-secrets", action="store_true")
    args = parser.parse_args(argv)

    try:
        config = harness.stack_config(args.stack, parse_set(args.sets))
        plan = harness.run(config, stack=args.stack)
    except (ConfigError, harness.StackConfigFileError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_CONFIG

    print(f"Stack {args.stack}: {len(plan.resources)} resources")
    for line in tree_lines(plan):
        print(f"  {line}")
    print("Outputs:")
    for name, out in sorted(plan.outputs.items()):
        value = "[secret]" if out.secret and not args.show_secrets else out.value
        print(f"  {name}: {json.dumps(value) if not isinstance(value, str) else value}")
    try:
        print("\n".join(costs.bill(parse(config, project=harness.PROJECT, stack=args.stack)).lines()))
    except costs.UnpricedError as err:
        print(f"Cost estimate: none ({err})")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(plan_json(plan, args.show_secrets), indent=2, sort_keys=True))
        print(f"Wrote {args.json}")
    if args.render:
        written = render(plan, args.render, args.show_secrets)
        print(f"Rendered {len(written)} files into {args.render}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
