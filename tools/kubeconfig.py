"""Put the stack's GPU-cluster kubeconfigs where kubectl finds them.

    python tools/kubeconfig.py --stack dev                    # merge into ~/.kube/config
    python tools/kubeconfig.py --stack dev --use gpu-0        # ... and switch to it
    python tools/kubeconfig.py --stack dev --out gpu.yaml     # a file of its own
    python tools/kubeconfig.py --stack dev --from-file outputs.json --kubeconfig PATH

Reads the `kubeconfigs` output (worker name -> kubeconfig YAML) from
`pulumi stack output --json --show-secrets` (or a file holding that JSON) and names
each cluster, user and context `hybrid-llm-<stack>-<worker>`. A merge replaces only
entries of those names and keeps every other entry and the current context. The
target is written atomically, mode 0600, after a copy of the old file to `.bak`;
a target that is a symbolic link is written through the link, which stays. Exit
code 2 with one line on stderr for bad input, 1 with one line when the target
cannot be written; the target is then untouched.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

import yaml

EXIT_BAD_INPUT = 2
EXIT_WRITE_FAILED = 1
OUTPUT = "kubeconfigs"
# What `pulumi stack output --json` prints for a secret without --show-secrets.
_REDACTED = "[secret]"
_SECTIONS = (("clusters", "cluster"), ("users", "user"), ("contexts", "context"))


class KubeconfigError(Exception):
    """Bad input: reported as one line, exit code 2."""


def context_name(stack: str, worker: str) -> str:
    return f"hybrid-llm-{stack}-{worker}"


def read_outputs(stack: str, from_file: Optional[Path]) -> dict:
    """The stack's outputs as `pulumi stack output --json --show-secrets` prints them."""
    if from_file is not None:
        try:
            text = from_file.read_text(encoding="utf-8")
        except OSError as err:
            raise KubeconfigError(f"{from_file}: cannot read ({err.strerror})") from None
        except UnicodeDecodeError:
            raise KubeconfigError(f"{from_file}: not UTF-8 text (expected the JSON of pulumi stack output)") from None
        source = str(from_file)
    else:
        command = ["pulumi", "stack", "output", "--json", "--show-secrets", "--stack", stack]
        try:
            done = subprocess.run(command, capture_output=True, text=True, encoding="utf-8", check=False)
        except FileNotFoundError:
            raise KubeconfigError("pulumi: not found on PATH (or pass --from-file)") from None
        except UnicodeDecodeError:
            raise KubeconfigError("pulumi stack output: printed something that is not UTF-8") from None
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["no message"])[0]
            raise KubeconfigError(f"pulumi stack output failed (exit {done.returncode}): {first}")
        text, source = done.stdout, f"pulumi stack output --stack {stack}"
    try:
        outputs = json.loads(text)
    except json.JSONDecodeError as err:
        raise KubeconfigError(f"{source}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(outputs, dict):
        raise KubeconfigError(f"{source}: expected a JSON object of stack outputs")
    return outputs


def _one(config: dict, section: str, worker: str) -> dict:
    entries = config.get(section)
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        raise KubeconfigError(f"{OUTPUT}.{worker}: expected exactly one entry in {section}")
    return entries[0]


def renamed_entries(stack: str, outputs: dict) -> dict[str, list[dict]]:
    """clusters/users/contexts of every worker, renamed to `hybrid-llm-<stack>-<worker>`."""
    kubeconfigs = outputs.get(OUTPUT)
    if kubeconfigs == _REDACTED or (isinstance(kubeconfigs, dict) and _REDACTED in kubeconfigs.values()):
        raise KubeconfigError(f"stack {stack}: '{OUTPUT}' reads {_REDACTED}; make the JSON with "
                              "`pulumi stack output --json --show-secrets`")
    if not isinstance(kubeconfigs, dict) or not kubeconfigs:
        raise KubeconfigError(f"stack {stack}: no '{OUTPUT}' output (a map of worker name to kubeconfig)")
    merged: dict[str, list[dict]] = {section: [] for section, _ in _SECTIONS}
    for worker, text in sorted(kubeconfigs.items()):
        try:
            config = yaml.safe_load(text) if isinstance(text, str) else None
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark else ""
            raise KubeconfigError(f"{OUTPUT}.{worker}: not valid YAML{where}") from None
        if not isinstance(config, dict):
            raise KubeconfigError(f"{OUTPUT}.{worker}: not a kubeconfig document")
        name = context_name(stack, worker)
        cluster, user = _one(config, "clusters", worker), _one(config, "users", worker)
        context = _one(config, "contexts", worker).get("context") or {}
        merged["clusters"].append({"name": name, "cluster": cluster.get("cluster")})
        merged["users"].append({"name": name, "user": user.get("user")})
        merged["contexts"].append({"name": name, "context": dict(context, cluster=name, user=name)})
    return merged


def load_target(path: Path) -> dict:
    """The existing kubeconfig at `path`, or an empty one."""
    if not path.exists():
        return {"apiVersion": "v1", "kind": "Config", "preferences": {}}
    try:
        config = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError:
        raise KubeconfigError(f"{path}: existing kubeconfig is not UTF-8 text; left untouched") from None
    except yaml.YAMLError:
        raise KubeconfigError(f"{path}: existing kubeconfig is not valid YAML; left untouched") from None
    except OSError as err:
        raise KubeconfigError(f"{path}: cannot read ({err.strerror})") from None
    if not isinstance(config, dict):
        raise KubeconfigError(f"{path}: existing kubeconfig is not a mapping; left untouched")
    for section, _ in _SECTIONS:
        if config.get(section) is not None and not isinstance(config[section], list):
            raise KubeconfigError(f"{path}: '{section}' is not a list; left untouched")
    return config


def merge(existing: dict, entries: dict[str, list[dict]], use: Optional[str]) -> dict:
    """`existing` with same-named entries replaced and new ones appended."""
    result = dict(existing)
    for section, _ in _SECTIONS:
        ours = {e["name"]: e for e in entries[section]}
        kept = [e for e in (existing.get(section) or []) if not (isinstance(e, dict) and e.get("name") in ours)]
        result[section] = kept + entries[section]
    if use:
        result["current-context"] = use
    return result


def standalone(entries: dict[str, list[dict]], use: Optional[str]) -> dict:
    return {"apiVersion": "v1", "kind": "Config", "preferences": {}, **entries,
            "current-context": use or entries["contexts"][0]["name"]}


class WriteError(Exception):
    """The target could not be written: one line, exit code 1."""


def write_private(path: Path, config: dict) -> None:
    """Temp file beside the target, mode 0600 from the start, then an atomic rename.
    A symbolic link is followed, so the file it points at is replaced and the link
    stays (kubeconfigs kept in a dotfiles repository are often linked)."""
    path = Path(os.path.realpath(path))
    try:
        _write_private(path, config)
    except OSError as err:
        raise WriteError(f"{path}: cannot write ({err.strerror or err}); nothing was changed") from None


def _write_private(path: Path, config: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), 0o600)
            yaml.safe_dump(config, handle, sort_keys=False, default_flow_style=False)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def default_target() -> Path:
    """First path of $KUBECONFIG, else ~/.kube/config (as kubectl writes)."""
    paths = [p for p in os.environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return Path(paths[0]) if paths else Path.home() / ".kube" / "config"


def run(args: argparse.Namespace) -> list[str]:
    """Do the work; returns the context names written."""
    entries = renamed_entries(args.stack, read_outputs(args.stack, args.from_file))
    names = [c["name"] for c in entries["contexts"]]
    use = context_name(args.stack, args.use) if args.use else None
    if use and use not in names:
        prefix = context_name(args.stack, "")
        raise KubeconfigError(f"--use {args.use}: no such worker (have: {', '.join(n[len(prefix):] for n in names)})")
    if args.out:
        write_private(args.out, standalone(entries, use))
        return names
    target = args.kubeconfig or default_target()
    merged = merge(load_target(target), entries, use)
    if target.exists():
        real = Path(os.path.realpath(target))
        backup = real.with_name(real.name + ".bak")
        try:
            shutil.copy2(real, backup)
            os.chmod(backup, 0o600)
        except OSError as err:
            raise WriteError(f"{backup}: cannot write the backup ({err.strerror or err}); nothing was changed") from None
    write_private(target, merged)
    return names


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="stack name (also names the contexts)")
    parser.add_argument("--from-file", type=Path, metavar="FILE",
                        help="JSON from `pulumi stack output --json --show-secrets` instead of running pulumi")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--out", type=Path, metavar="FILE", help="write a kubeconfig of its own")
    where.add_argument("--kubeconfig", type=Path, metavar="PATH", help="merge into this file")
    parser.add_argument("--use", metavar="WORKER", help="make this worker's context the current one")
    args = parser.parse_args(argv)
    try:
        names = run(args)
    except KubeconfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except WriteError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_WRITE_FAILED
    print(f"Wrote contexts: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
