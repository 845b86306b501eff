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
