"""Offline plan: run the program under Pulumi mocks with a stack's config and show
what it would declare. No cloud account and no Pulumi CLI needed.

    python tools/plan.py [--stack dev] [--set hybrid-llm:idleMinutes=5 ...]
                         [--json FILE] [--render DIR] [--show-secrets]

Exit code 2 with one line on stderr when the config is invalid, 1 with one line
when an output file cannot be written. Files are written whole (a temporary file,
then a rename), and a render directory loses the files an earlier render wrote
that this one no longer has (a removed worker's), listed in `.plan-render`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import harness  # noqa: E402
from components import costs  # noqa: E402
from components.config import ConfigError, NAMESPACE, parse  # noqa: E402

EXIT_BAD_CONFIG = 2
EXIT_WRITE_FAILED = 1
RENDER_INDEX = ".plan-render"


class WriteError(Exception):
    """An output file could not be written: one line."""


def write_file(path: Path, text: str, mode: int = 0o644) -> None:
    """`text` into `path` whole or not at all: a temporary file beside it, then a rename."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    except OSError as err:
        raise WriteError(f"{path}: cannot write ({err.strerror or err})") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
        os.replace(temp, path)
    except OSError as err:
        Path(temp).unlink(missing_ok=True)
        raise WriteError(f"{path}: cannot write ({err.strerror or err})") from None


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
    """Write every generated file; secret ones redacted unless asked, and 0600.
    Files an earlier render listed in `.plan-render` and this one does not write
    are removed; nothing else in the directory is touched."""
    written = []
    for item in plan.files:
        path = directory / item.path
        text = item.content
        if item.secret and not show_secrets:
            text = "[secret: run tools/plan.py with --show-secrets to write it]\n"
        write_file(path, text, 0o600 if item.secret else 0o644)
        written.append(path)
    for path, document in plan.kubernetes_documents(show_secrets):
        write_file(directory / path, yaml.safe_dump(document, sort_keys=False), 0o600 if show_secrets else 0o644)
        written.append(directory / path)
    index = directory / RENDER_INDEX
    now = {str(p.relative_to(directory)) for p in written}
    try:
        before = index.read_text(encoding="utf-8").splitlines() if index.exists() else []
    except (OSError, UnicodeDecodeError):
        before = []
    for stale in sorted(set(before) - now):
        path = directory / stale
        if ".." not in Path(stale).parts and path.is_file():
            path.unlink()
            _remove_empty_parents(path.parent, directory)
    write_file(index, "".join(f"{p}\n" for p in sorted(now)))
    return written


def _remove_empty_parents(folder: Path, top: Path) -> None:
    while folder != top and folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
        folder = folder.parent


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
        print("\n".join(costs.bill(parse(config, project=harness.PROJECT, stack=args.stack,
                                          secret_keys=harness.default_secret_keys(config))).lines()))
    except costs.UnpricedError as err:
        print(f"Cost estimate: none ({err})")

    try:
        if args.json:
            write_file(args.json, json.dumps(plan_json(plan, args.show_secrets), indent=2, sort_keys=True),
                       0o600 if args.show_secrets else 0o644)
            print(f"Wrote {args.json}")
        if args.render:
            written = render(plan, args.render, args.show_secrets)
            print(f"Rendered {len(written)} files into {args.render}")
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    return 0


if __name__ == "__main__":
    sys.exit(main())
