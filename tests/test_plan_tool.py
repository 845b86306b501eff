"""tools/plan.py as a user runs it: a subprocess, exit codes, files it writes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT


def plan(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "tools" / "plan.py"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan")
    result = plan("--json", str(out / "plan.json"), "--render", str(out / "files"))
    assert result.returncode == 0, result.stderr
    return result, json.loads((out / "plan.json").read_text()), out / "files"


def test_prints_the_tree_and_outputs(planned):
    result, document, _ = planned
    assert "hybrid-llm:index:Network  hybrid-llm-dev" in result.stdout
    assert "    aws:ec2/vpc:Vpc  hybrid-llm-dev-vpc" in result.stdout, "children are indented under the component"
    vpc_id = document["outputs"]["vpcId"]
    assert f"vpcId: {vpc_id}" in result.stdout


def test_json_lists_the_network_with_inputs(planned):
    _, document, _ = planned
    by_type = {}
    for resource in document["resources"]:
        by_type.setdefault(resource["type"], []).append(resource)
        assert set(resource) == {"type", "name", "urn", "parent", "custom", "inputs"}
    for needed in ("aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/internetGateway:InternetGateway",
                   "aws:ec2/routeTable:RouteTable", "aws:ec2/securityGroup:SecurityGroup"):
        assert needed in by_type, needed
    (vpc,) = by_type["aws:ec2/vpc:Vpc"]
    assert vpc["inputs"]["cidrBlock"] == "10.0.0.0/16" and vpc["custom"] is True
    (network,) = by_type["hybrid-llm:index:Network"]
    assert network["custom"] is False
    assert vpc["parent"] == network["urn"]
    assert vpc["urn"].startswith("urn:pulumi:dev::hybrid-llm::")


def test_set_overrides_like_pulumi_config_set(tmp_path):
    result = plan("--set", "hybrid-llm:vpcCidr=10.8.0.0/16", "--set", "nebulaPort=5353",
                  "--json", str(tmp_path / "p.json"))
    assert result.returncode == 0, result.stderr
    document = json.loads((tmp_path / "p.json").read_text())
    (vpc,) = [r for r in document["resources"] if r["type"] == "aws:ec2/vpc:Vpc"]
    assert vpc["inputs"]["cidrBlock"] == "10.8.0.0/16"
    ports = {r["inputs"]["fromPort"] for r in document["resources"]
             if r["type"] == "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"}
    assert ports == {5353}


@pytest.mark.parametrize("setting,names", [
    ("hybrid-llm:nebulaCidr=10.0.0.0/16", ["hybrid-llm:nebulaCidr", "hybrid-llm:vpcCidr", "overlaps"]),
    ("hybrid-llm:gpuInstanceType=t3.micro", ["hybrid-llm:gpuInstanceType"]),
    ("hybrid-llm:gpuWorkrs=2", ["hybrid-llm:gpuWorkrs", "unknown key", "hybrid-llm:gpuWorkers"]),
    ("hybrid-llm:idleMinutes", ["--set", "KEY=VALUE"]),
])
def test_invalid_config_exits_2_with_one_line(setting, names):
    result = plan("--set", setting)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    for name in names:
        assert name in lines[0]


def test_unknown_stack_exits_2():
    result = plan("--stack", "nosuchstack")
    assert result.returncode == 2 and "Pulumi.nosuchstack.yaml" in result.stderr


def test_runs_from_any_directory(tmp_path):
    result = plan(cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Stack dev:" in result.stdout


def test_unwritable_json_is_one_line_and_exit_1(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    result = plan("--json", str(blocker / "plan.json"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {blocker / 'plan.json'}: cannot write")
    assert "Traceback" not in result.stderr


def test_unwritable_render_is_one_line_and_exit_1(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    result = plan("--render", str(blocker))
    assert result.returncode == 1 and len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr and blocker.read_text() == "x"


@pytest.mark.parametrize("text", ["config:\n  aws:region: [oops\n", "config: 3\n", "[1, 2]\n"])
def test_broken_stack_file_exits_2_with_one_line(tmp_path, text):
    """A copy of the project with a broken stack file, run as a user would."""
    for name in ("Pulumi.yaml", "__main__.py"):
        (tmp_path / name).write_text((ROOT / name).read_text())
    (tmp_path / "Pulumi.broken.yaml").write_text(text)
    result = subprocess.run([sys.executable, "-c", (
        "import sys; sys.path.insert(0, %r); from tools import plan, harness; "
        "from pathlib import Path; harness.ROOT = Path(%r); "
        "sys.exit(plan.main(['--stack', 'broken']))") % (str(ROOT), str(tmp_path))],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Pulumi.broken.yaml:")


def test_a_new_render_removes_what_an_older_render_wrote(tmp_path):
    out = tmp_path / "render"
    assert plan("--set", "gpuWorkers=2", "--render", str(out)).returncode == 0
    assert (out / "workers" / "gpu-1" / "boot.sh").exists()
    (out / "notes.txt").write_text("mine")
    assert plan("--render", str(out)).returncode == 0
    assert not (out / "workers" / "gpu-1").exists(), "files of the removed worker are gone"
    assert (out / "workers" / "gpu-0" / "boot.sh").exists()
    assert (out / "notes.txt").read_text() == "mine", "files the plan did not write are kept"
    assert not list(out.rglob(".*.tmp*")) and not [p for p in out.rglob(".boot.sh.*")]
