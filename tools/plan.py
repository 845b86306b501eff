"""Offline plan: run the program under Pulumi mocks with a stack's config and show
what it would declare. No cloud account and no Pulumi CLI needed.

    python tools/plan.py [--stack dev] [--set hybrid-llm:idleMinutes=5 ...]
                         [--json FILE] [--render DIR] [--destroy-order] [--show-secrets]

Exit code 2 with one line on stderr when the config is invalid, 1 with one line
when an output file cannot be written. Files are written whole (a temporary file,
then a rename), and a render directory loses the files an earlier render wrote
that this one no longer has (a removed worker's), listed in `.plan-render`. A
render writes and deletes only inside DIR (resolved once), never through a
symlink inside it; a `.plan-render` entry that names anything outside DIR is
ignored with a warning.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import secrets
import stat
import sys
import tempfile
from pathlib import Path, PurePosixPath

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import destroy_order, harness  # noqa: E402
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


def plan_json(plan: harness.Plan, show_secrets: bool, order: list[list[str]]) -> dict:
    """Every resource with what the engine orders deletes by (its dependencies,
    parent and provider), the destroy order as the engine computes it
    (tools/destroy_order.py), and the outputs."""
    show = (lambda v: harness._strip_secrets(v, redact=False)) if show_secrets else harness.redacted
    return {
        "stack": plan.stack,
        "resources": [
            {"type": r.type, "name": r.name, "urn": r.urn, "parent": r.parent,
             "custom": r.custom, "inputs": show(r.inputs), "dependencies": sorted(set(r.dependencies)),
             "provider": destroy_order.provider_urn(r.provider) if r.provider else None}
            for r in plan.resources
        ],
        "destroyOrder": order,
        "outputs": {k: (o.value if show_secrets or not o.secret else "[secret]")
                    for k, o in plan.outputs.items()},
    }


def render(plan: harness.Plan, directory: Path, show_secrets: bool) -> list[Path]:
    """Write every generated file; secret ones redacted unless asked, and 0600.
    Files an earlier render listed in `.plan-render` and this one does not write
    are removed; nothing else in the directory is touched.

    Everything happens inside `directory` as resolved once here: each folder is
    opened relative to its parent without following symlinks, so a symlink inside
    DIR is never written into or deleted through (a write through one is refused,
    a record entry through one is skipped with a warning), and only folders
    strictly inside DIR that the removal emptied are pruned."""
    root = directory.resolve()
    try:
        root.mkdir(parents=True, exist_ok=True)
        top = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as err:
        raise WriteError(f"{directory}: cannot write ({err.strerror or err})") from None
    try:
        outputs = []
        for item in plan.files:
            text = item.content
            if item.secret and not show_secrets:
                text = "[secret: run tools/plan.py with --show-secrets to write it]\n"
            outputs.append((item.path, text, 0o600 if item.secret else 0o644))
        for path, document in plan.kubernetes_documents(show_secrets):
            outputs.append((path, yaml.safe_dump(document, sort_keys=False), 0o600 if show_secrets else 0o644))
        written, now = [], set()
        for path, text, mode in outputs:
            parts = _inside_parts(path)
            if parts is None:
                raise WriteError(f"{directory / path}: cannot write (not a relative path inside {directory})")
            _write_inside(top, parts, text, mode, directory)
            written.append(directory / Path(*parts))
            now.add("/".join(parts))
        for stale in sorted(set(_read_index(top, directory)) - now):
            _remove_stale(top, root, stale, directory)
        _write_inside(top, (RENDER_INDEX,), "".join(f"{p}\n" for p in sorted(now)), 0o644, directory)
        return written
    finally:
        os.close(top)


def _inside_parts(entry: str) -> tuple[str, ...] | None:
    """The components of a relative path that stays inside its folder by name
    (no root, no `..`); None otherwise. `a/./b` is `("a", "b")`."""
    pure = PurePosixPath(entry)
    if pure.is_absolute() or not pure.parts or ".." in pure.parts:
        return None
    return pure.parts


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)


def _open_folder(top: int, parts: tuple[str, ...], create: bool) -> list[int]:
    """File descriptors of `top` and each folder along `parts` (the caller closes
    all but `top`), opened without following symlinks; OSError (ELOOP or ENOTDIR
    for a symlink) otherwise."""
    fds = [top]
    try:
        for name in parts:
            if create:
                try:
                    os.mkdir(name, dir_fd=fds[-1])
                except FileExistsError:
                    pass
            fds.append(os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fds[-1]))
    except OSError:
        _close(fds[1:])
        raise
    return fds


def _close(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)


def _symlink_in(top: int, parts: tuple[str, ...]) -> str | None:
    """The first component of `parts` (under `top`) that is a symlink, as a relative path."""
    fd = top
    opened = []
    try:
        for index, name in enumerate(parts):
            try:
                if stat.S_ISLNK(os.lstat(name, dir_fd=fd).st_mode):
                    return "/".join(parts[:index + 1])
                fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
            except OSError:
                return None
            opened.append(fd)
        return None
    finally:
        _close(opened)


def _write_inside(top: int, parts: tuple[str, ...], text: str, mode: int, directory: Path) -> None:
    """`text` into `top/parts` whole or not at all (a temporary file beside it,
    then a rename), creating folders, never through a symlinked folder. A symlink
    at the file's own name is replaced, not followed."""
    shown = directory / Path(*parts)
    *folders, name = parts
    try:
        fds = _open_folder(top, tuple(folders), create=True)
    except OSError as err:
        link = _symlink_in(top, tuple(folders))
        reason = f"{directory / link} is a symlink" if link else (err.strerror or str(err))
        raise WriteError(f"{shown}: cannot write ({reason})") from None
    parent = fds[-1]
    try:
        temp = None
        for _ in range(100):
            candidate = f".{name}.{secrets.token_hex(4)}"
            try:
                fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=parent)
            except FileExistsError:
                continue
            temp = candidate
            break
        if temp is None:
            raise OSError(errno.EEXIST, "no free temporary name")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                os.fchmod(handle.fileno(), mode)
                handle.write(text)
            os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError:
            try:
                os.unlink(temp, dir_fd=parent)
            except OSError:
                pass
            raise
    except OSError as err:
        raise WriteError(f"{shown}: cannot write ({err.strerror or err})") from None
    finally:
        _close(fds[1:])


def _read_index(top: int, directory: Path) -> list[str]:
    """What the last render wrote, from `.plan-render` (not followed if a symlink)."""
    try:
        fd = os.open(RENDER_INDEX, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=top)
    except FileNotFoundError:
        return []
    except OSError as err:
        _warn(f"{directory / RENDER_INDEX}: not read ({err.strerror or err}); no earlier files removed")
        return []
    try:
        with os.fdopen(fd, encoding="utf-8") as handle:
            return [line for line in handle.read().splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as err:
        _warn(f"{directory / RENDER_INDEX}: not read ({err}); no earlier files removed")
        return []


def _remove_stale(top: int, root: Path, entry: str, directory: Path) -> None:
    """Delete one file an earlier render wrote, then the folders (strictly inside
    DIR) that this left empty. An entry that names anything outside DIR, goes
    through a symlink, or is no longer a regular file is left alone."""
    parts = _inside_parts(entry)
    where = f"{directory / RENDER_INDEX}: ignoring {entry!r}"
    if parts is None:
        _warn(f"{where} (not a relative path inside {directory})")
        return
    if not Path(os.path.realpath(root.joinpath(*parts))).is_relative_to(root):
        _warn(f"{where} (resolves outside {directory})")
        return
    *folders, name = parts
    try:
        fds = _open_folder(top, tuple(folders), create=False)
    except FileNotFoundError:
        return
    except OSError:
        link = _symlink_in(top, tuple(folders))
        _warn(f"{where} ({directory / link} is a symlink)" if link else f"{where} (not a folder on the way)")
        return
    try:
        try:
            kind = os.lstat(name, dir_fd=fds[-1]).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISREG(kind):
            _warn(f"{where} (no longer a regular file)")
            return
        os.unlink(name, dir_fd=fds[-1])
        for index in range(len(folders) - 1, -1, -1):
            try:
                os.rmdir(folders[index], dir_fd=fds[index])
            except OSError:
                break
    except OSError as err:
        _warn(f"{where} (not removed: {err.strerror or err})")
    finally:
        _close(fds[1:])


HELP_EPILOG = """\
examples:
  venv/bin/python tools/plan.py --set hybrid-llm:gpuWorkers=2 --set idleMinutes=5
      the dev stack with two GPU workers and a 5-minute idle stop: tree, outputs, cost
  venv/bin/python tools/plan.py --stack dev --json plan-out/plan.json --render plan-out
      also write every resource as JSON (input of `python -m policy plan-out/plan.json`)
      and every generated file under plan-out/

exit status: 0 planned; 2 invalid config or stack file (one line on stderr);
1 an output file cannot be written (one line on stderr).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog=HELP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--stack", default="dev", metavar="STACK",
        help="stack whose config to plan: Pulumi.yaml defaults, then Pulumi.<STACK>.yaml "
             "beside it (default: %(default)s)")
    parser.add_argument(
        "--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
        help="override one config value, as `pulumi config set` would (a key without a "
             f"namespace gets {NAMESPACE}:; arrays and objects as JSON); repeat for more "
             "(default: none)")
    parser.add_argument(
        "--json", type=Path, metavar="FILE",
        help="also write every resource (type, name, urn, parent, custom, inputs, dependencies, "
             "provider), the destroy order and the stack outputs as JSON to FILE, anywhere you "
             "name (default: not written unless given)")
    parser.add_argument(
        "--render", type=Path, metavar="DIR",
        help="also write every generated file (boot scripts, Nebula configs, IAM policies, "
             "Kubernetes manifests, Helm values) under DIR, and remove the files an earlier "
             f"render recorded in DIR/{RENDER_INDEX} that this one no longer writes; writes and "
             "deletes only inside DIR, never through a symlink inside it (default: not written unless given)")
    parser.add_argument(
        "--destroy-order", action="store_true",
        help="also print the order `pulumi destroy` deletes the resources in, wave by wave, as "
             "the engine schedules it (a wave's resources are deleted at the same time; "
             "default: not printed); --json always carries it as destroyOrder")
    parser.add_argument(
        "--show-secrets", action="store_true",
        help="print and write secret values (private keys, kubeconfigs) instead of [secret] "
             "(default: redacted); files that hold secrets are written 0600")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

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

    order = destroy_order.waves(plan.resources) if args.destroy_order or args.json else []
    if args.destroy_order:
        names = {r.urn: r.name for r in plan.resources}
        print("Destroy order (pulumi destroy, first wave first):")
        for index, wave in enumerate(order, 1):
            print(f"  {index:3d}. {', '.join(names[urn] for urn in wave)}")
    try:
        if args.json:
            write_file(args.json, json.dumps(plan_json(plan, args.show_secrets, order), indent=2, sort_keys=True),
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
