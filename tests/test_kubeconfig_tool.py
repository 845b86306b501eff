"""tools/kubeconfig.py: merging the stack's kubeconfigs into an existing kubeconfig
without disturbing what is already there, and refusing bad input cleanly."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys

import pytest
import yaml

from tests.conftest import ROOT

TOOL = ROOT / "tools" / "kubeconfig.py"

HOMELAB = {
    "apiVersion": "v1", "kind": "Config", "preferences": {},
    "clusters": [{"name": "homelab", "cluster": {"server": "https://192.168.1.10:6443"}}],
    "users": [{"name": "homelab-admin", "user": {"token": "homelab-token"}}],
    "contexts": [{"name": "homelab", "context": {"cluster": "homelab", "user": "homelab-admin", "namespace": "ai"}}],
    "current-context": "homelab",
}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory) -> tuple[dict, object]:
    """Stack outputs of the mocked program with two workers, as `pulumi stack output
    --json --show-secrets` would print them (secrets shown)."""
    from tools import harness

    plan = harness.run_stack("dev", {"hybrid-llm:gpuWorkers": "2"})
    values = {name: out.value for name, out in plan.outputs.items()}
    path = tmp_path_factory.mktemp("outputs") / "outputs.json"
    path.write_text(json.dumps(values))
    return values, path


def tool(*args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, check=False)


def write_homelab(path, extra=None):
    config = json.loads(json.dumps(HOMELAB))
    for section, entries in (extra or {}).items():
        config[section] += entries
    path.write_text(yaml.safe_dump(config))
    os.chmod(path, 0o644)
    return config


def by_name(config: dict, section: str) -> dict:
    return {e["name"]: e for e in config[section]}


def test_merge_keeps_other_entries_and_current_context(tmp_path, outputs):
    values, path = outputs
    target = tmp_path / "config"
    before = write_homelab(target)
    done = tool("--stack", "dev", "--from-file", str(path), "--kubeconfig", str(target))
    assert done.returncode == 0, done.stderr
    after = yaml.safe_load(target.read_text())
    for section in ("clusters", "users", "contexts"):
        assert by_name(after, section)["homelab" if section != "users" else "homelab-admin"] == \
            by_name(before, section)["homelab" if section != "users" else "homelab-admin"]
    assert after["current-context"] == "homelab"
    for worker, ip in values["workerNebulaIps"].items():
        name = f"hybrid-llm-dev-{worker}"
        assert by_name(after, "contexts")[name]["context"] == {"cluster": name, "user": name}
        assert by_name(after, "clusters")[name]["cluster"]["server"] == f"https://{ip}:6443"
        original = yaml.safe_load(values["kubeconfigs"][worker])
        assert by_name(after, "users")[name]["user"] == original["users"][0]["user"]
    assert len(after["contexts"]) == 1 + len(values["workerNebulaIps"]) == 3
    # The secrets stay out of the terminal.
    assert "client-key-data" not in done.stdout and "BEGIN" not in done.stdout


def test_mode_0600_and_backup_of_the_old_file(tmp_path, outputs):
    _, path = outputs
    target = tmp_path / "config"
    write_homelab(target)
    old = target.read_text()
    assert tool("--stack", "dev", "--from-file", str(path), "--kubeconfig", str(target)).returncode == 0
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    backup = tmp_path / "config.bak"
    assert backup.read_text() == old and stat.S_IMODE(backup.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".config.")] == []


def test_rerun_is_idempotent(tmp_path, outputs):
    _, path = outputs
    target = tmp_path / "config"
    write_homelab(target)
    args = ("--stack", "dev", "--from-file", str(path), "--kubeconfig", str(target))
    assert tool(*args).returncode == 0
    first = target.read_text()
    assert tool(*args).returncode == 0
    assert target.read_text() == first


def test_same_named_entries_are_replaced(tmp_path, outputs):
    values, path = outputs
    target = tmp_path / "config"
    stale = "hybrid-llm-dev-gpu-0"
    write_homelab(target, {
        "clusters": [{"name": stale, "cluster": {"server": "https://10.99.0.1:6443"}}],
        "users": [{"name": stale, "user": {"token": "stale"}}],
        "contexts": [{"name": stale, "context": {"cluster": stale, "user": stale, "namespace": "old"}}],
    })
    assert tool("--stack", "dev", "--from-file", str(path), "--kubeconfig", str(target)).returncode == 0
    after = yaml.safe_load(target.read_text())
    assert [c["name"] for c in after["clusters"]].count(stale) == 1
    assert by_name(after, "clusters")[stale]["cluster"]["server"] == f"https://{values['workerNebulaIps']['gpu-0']}:6443"
    assert by_name(after, "users")[stale]["user"] != {"token": "stale"}
    assert by_name(after, "contexts")[stale]["context"] == {"cluster": stale, "user": stale}


def test_use_switches_context_and_kubeconfig_env_picks_the_file(tmp_path, outputs):
    _, path = outputs
    target = tmp_path / "first"
    write_homelab(target)
    other = tmp_path / "second"
    done = tool("--stack", "dev", "--from-file", str(path), "--use", "gpu-1",
                env={"KUBECONFIG": os.pathsep.join([str(target), str(other)])})
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(target.read_text())["current-context"] == "hybrid-llm-dev-gpu-1"
    assert not other.exists()


def test_out_writes_a_file_of_its_own(tmp_path, outputs):
    _, path = outputs
    out = tmp_path / "gpu.yaml"
    assert tool("--stack", "prod", "--from-file", str(path), "--out", str(out)).returncode == 0
    written = yaml.safe_load(out.read_text())
    assert [c["name"] for c in written["contexts"]] == ["hybrid-llm-prod-gpu-0", "hybrid-llm-prod-gpu-1"]
    assert written["current-context"] == "hybrid-llm-prod-gpu-0"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_reads_pulumi_stack_output(tmp_path, outputs):
    """The real subprocess path, with a stand-in `pulumi` that checks its arguments."""
    _, path = outputs
    fake = tmp_path / "bin" / "pulumi"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\n[ "$*" = "stack output --json --show-secrets --stack dev" ] '
                    f'|| {{ echo "error: unexpected args: $*" >&2; exit 3; }}\ncat {path}\n')
    fake.chmod(0o755)
    target = tmp_path / "config"
    env = {"PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}"}
    assert tool("--stack", "dev", "--kubeconfig", str(target), env=env).returncode == 0
    assert "hybrid-llm-dev-gpu-0" in by_name(yaml.safe_load(target.read_text()), "contexts")
    done = tool("--stack", "prod", "--kubeconfig", str(target), env=env)
    assert done.returncode == 2
    assert done.stderr.strip() == "error: pulumi stack output failed (exit 3): error: unexpected args: " \
        "stack output --json --show-secrets --stack prod"


@pytest.mark.parametrize("bad, message", [
    ({"region": "us-east-1"}, "error: stack dev: no 'kubeconfigs' output"),
    ({"kubeconfigs": {"gpu-0": "clusters: [unclosed\n"}}, "error: kubeconfigs.gpu-0: not valid YAML"),
    ({"kubeconfigs": {"gpu-0": "apiVersion: v1\nclusters: []\n"}}, "error: kubeconfigs.gpu-0: expected exactly one"),
    ("{not json", "error: "),
])
def test_bad_input_is_one_line_and_leaves_the_target(tmp_path, bad, message):
    source = tmp_path / "outputs.json"
    source.write_text(bad if isinstance(bad, str) else json.dumps(bad))
    target = tmp_path / "config"
    write_homelab(target)
    before, mtime = target.read_bytes(), target.stat().st_mtime_ns
    done = tool("--stack", "dev", "--from-file", str(source), "--kubeconfig", str(target))
    assert done.returncode == 2
    assert done.stderr.startswith(message) and done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    assert target.read_bytes() == before and target.stat().st_mtime_ns == mtime
    assert not (tmp_path / "config.bak").exists()


def test_broken_existing_kubeconfig_is_left_alone(tmp_path, outputs):
    _, path = outputs
    target = tmp_path / "config"
    target.write_text("clusters: {not: a list}\n")
    done = tool("--stack", "dev", "--from-file", str(path), "--kubeconfig", str(target))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert target.read_text() == "clusters: {not: a list}\n"


def test_a_symlinked_kubeconfig_is_written_through_the_link(tmp_path, outputs):
    _, path = outputs
    real = tmp_path / "dotfiles" / "kubeconfig"
    real.parent.mkdir()
    write_homelab(real)
    link = tmp_path / "config"
    link.symlink_to(real)
    result = tool("--stack", "dev", "--from-file", str(path), "--kubeconfig", str(link))
    assert result.returncode == 0, result.stderr
    assert link.is_symlink() and os.readlink(link) == str(real)
    merged = yaml.safe_load(real.read_text())
    assert "homelab" in by_name(merged, "contexts") and "hybrid-llm-dev-gpu-1" in by_name(merged, "contexts")


def test_an_unwritable_target_is_one_line_and_exit_1(tmp_path, outputs):
    _, path = outputs
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = tool("--stack", "dev", "--from-file", str(path), "--kubeconfig", str(blocker / "config"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write" in lines[0] and "Traceback" not in result.stderr


def test_input_that_is_not_utf8_is_one_line(tmp_path):
    bad = tmp_path / "outputs.json"
    bad.write_bytes(b'{"kubeconfigs": "\xff\xfe"}')
    result = tool("--stack", "dev", "--from-file", str(bad), "--out", str(tmp_path / "k"))
    assert result.returncode == 2 and "not UTF-8" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("value", ["[secret]", {"gpu-0": "[secret]"}])
def test_redacted_outputs_say_to_show_secrets(tmp_path, value):
    redacted = tmp_path / "outputs.json"
    redacted.write_text(json.dumps({"kubeconfigs": value}))
    result = tool("--stack", "dev", "--from-file", str(redacted), "--out", str(tmp_path / "k"))
    assert result.returncode == 2 and "--show-secrets" in result.stderr
    assert not (tmp_path / "k").exists()
