"""What AWS gets for each `lighthousePlacement`, through the whole program under
mocks: which Elastic IPs the network allocates and who associates them, that no
EC2 lighthouse (instance, security group, address) exists unless asked for, the
worker egress a homelab lighthouse on a low port needs, and the endpoints the
stack reports (components/mesh/placement.py)."""

from __future__ import annotations

import pytest

from tests.conftest import PLACEMENTS
from tools import harness

EIP = "aws:ec2/eip:Eip"
ASSOCIATION = "aws:ec2/eipAssociation:EipAssociation"
INSTANCE = "aws:ec2/instance:Instance"
SG = "aws:ec2/securityGroup:SecurityGroup"
EGRESS = "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule"
NETWORK = "hybrid-llm:index:Network"
GPU_WORKER = "hybrid-llm:index:GpuWorker"
LIGHTHOUSE = "hybrid-llm:index:Lighthouse"
PORT = 4242
WORKERS = ("gpu-0", "gpu-1")


def run(placement: str, **overrides: str) -> harness.Plan:
    """The dev stack with two workers in this placement, plus `overrides`."""
    return harness.run_stack("dev", {**PLACEMENTS[placement], "hybrid-llm:gpuWorkers": str(len(WORKERS)),
                                     **overrides})


@pytest.fixture(scope="module")
def plans() -> dict[str, harness.Plan]:
    """Each placement with two GPU workers, evaluated once for this module."""
    return {placement: run(placement) for placement in PLACEMENTS}


def eips_by_host(plan) -> dict[str, harness.PlannedResource]:
    return {e.plain()["tags"]["NebulaHost"]: e for e in plan.of_type(EIP)}


def worker_egress(plan) -> list[tuple]:
    (group,) = [g for g in plan.of_type(SG) if g.name == "hybrid-llm-dev-worker-sg"]
    return sorted((r.inputs["ipProtocol"], r.inputs["fromPort"], r.inputs["toPort"], r.inputs["cidrIpv4"])
                  for r in plan.children(group) if r.type == EGRESS)


def test_the_placements_are_the_three_the_config_knows(plans):
    assert set(PLACEMENTS) == {"workers", "ec2", "homelab"}
    for placement, plan in plans.items():
        assert plan.outputs["lighthousePlacement"].value == placement


def test_workers_is_the_default_placement(dev_plan):
    assert dev_plan.outputs["lighthousePlacement"].value == "workers"
    assert harness.project_defaults()["hybrid-llm:lighthousePlacement"] == "workers"
    assert harness.stack_config("dev")["hybrid-llm:lighthousePlacement"] == "workers"


# --- which Elastic IPs exist ------------------------------------------------------------


@pytest.mark.parametrize("placement, hosts", [("workers", WORKERS), ("ec2", ("lighthouse",)), ("homelab", ())])
def test_the_network_allocates_one_elastic_ip_per_aws_lighthouse(plans, placement, hosts):
    plan = plans[placement]
    (network,) = plan.of_type(NETWORK)
    (gateway,) = plan.of_type("aws:ec2/internetGateway:InternetGateway")
    eips = eips_by_host(plan)
    assert sorted(eips) == sorted(hosts)
    for host, eip in eips.items():
        assert eip.name == f"hybrid-llm-dev-{host}-eip"
        assert eip.plain() == {"domain": "vpc", "tags": {"Name": f"hybrid-llm-dev-{host}", "NebulaHost": host}}
        assert eip.parent == network.urn, "the stack's address, not an instance's"
        assert gateway.urn in eip.dependencies
    assert plan.outputs["elasticIps"].value == {host: eip.state["publicIp"] for host, eip in eips.items()}


def test_the_ec2_lighthouse_keeps_its_address_name(plans):
    """The EC2 lighthouse's Elastic IP has the name it had before placements
    existed, so an existing stack keeps its address."""
    (eip,) = plans["ec2"].of_type(EIP)
    assert eip.name == "hybrid-llm-dev-lighthouse-eip"


def test_each_worker_associates_its_own_address_and_replaces_delete_first(plans):
    plan = plans["workers"]
    eips = eips_by_host(plan)
    associations = plan.of_type(ASSOCIATION)
    assert len(associations) == len(WORKERS)
    for host in WORKERS:
        (component,) = [c for c in plan.of_type(GPU_WORKER) if c.name == f"hybrid-llm-dev-{host}"]
        (instance,) = [i for i in plan.of_type(INSTANCE) if i.name == f"hybrid-llm-dev-{host}-instance"]
        (association,) = [a for a in associations if a.parent == component.urn]
        assert association.name == f"{component.name}-eip-association"
        assert association.plain() == {"allocationId": eips[host].state["allocationId"], "instanceId": instance.id}
        assert instance.urn in association.dependencies
        # Every argument of an association forces replacement: the old one must
        # let go of the address before the new one takes it.
        assert association.delete_before_replace is True


def test_the_ec2_lighthouse_association_is_the_lighthouses(plans):
    plan = plans["ec2"]
    (eip,) = plan.of_type(EIP)
    (association,) = plan.of_type(ASSOCIATION)
    (component,) = plan.of_type(LIGHTHOUSE)
    (instance,) = [i for i in plan.of_type(INSTANCE) if i.name == "hybrid-llm-dev-lighthouse-instance"]
    assert association.parent == component.urn
    assert association.plain() == {"allocationId": eip.state["allocationId"], "instanceId": instance.id}
    assert not any(a.parent and "GpuWorker" in a.parent for a in plan.of_type(ASSOCIATION)), \
        "workers do not associate an address when they are not lighthouses"


def test_a_homelab_lighthouse_needs_no_address_on_aws(plans):
    plan = plans["homelab"]
    assert plan.of_type(EIP) == [] and plan.of_type(ASSOCIATION) == []
    assert plan.outputs["elasticIps"].value == {}


# --- no EC2 lighthouse unless asked for ----------------------------------------------


@pytest.mark.parametrize("placement", ["workers", "homelab"])
def test_no_ec2_lighthouse_outside_the_ec2_placement(plans, placement):
    plan = plans[placement]
    assert plan.of_type(LIGHTHOUSE) == []
    assert sorted(i.name for i in plan.of_type(INSTANCE)) == sorted(f"hybrid-llm-dev-{h}-instance" for h in WORKERS)
    assert [g.name for g in plan.of_type(SG)] == ["hybrid-llm-dev-worker-sg"]
    assert not [e for e in plan.of_type(EIP) if "lighthouse" in e.name]
    assert not [r.name for r in plan.resources if r.name.startswith("hybrid-llm-dev-lighthouse")]
    assert not [p for p in plan.of_type("aws:ssm/parameter:Parameter")
                if p.plain()["name"].startswith("/hybrid-llm/dev/hosts/lighthouse/")]
    assert not [f.path for f in plan.files if f.path.startswith(("lighthouse/", "iam/lighthouse/"))]
    assert plan.outputs["lighthouseInstanceId"].value is None


def test_the_ec2_placement_runs_the_lighthouse(plans):
    plan = plans["ec2"]
    (component,) = plan.of_type(LIGHTHOUSE)
    (instance,) = [i for i in plan.of_type(INSTANCE) if i.name == "hybrid-llm-dev-lighthouse-instance"]
    assert sorted(g.name for g in plan.of_type(SG)) == ["hybrid-llm-dev-lighthouse-sg", "hybrid-llm-dev-worker-sg"]
    assert plan.outputs["lighthouseInstanceId"].value == instance.id


# --- worker egress to a homelab lighthouse -----------------------------------------------


def test_a_homelab_lighthouse_on_a_privileged_port_gets_one_worker_egress_rule(plans):
    base = worker_egress(plans["workers"])
    plan = run("homelab", **{"hybrid-llm:homelabLighthouseEndpoint": "home.example.net:443"})
    egress = worker_egress(plan)
    extra = [rule for rule in egress if rule not in base]
    assert extra == [("udp", 443, 443, "0.0.0.0/0")]
    assert len(egress) == len(base) + 1
    (rule,) = [r for r in plan.of_type(EGRESS) if r.inputs["ipProtocol"] == "udp" and r.inputs["fromPort"] == 443]
    assert rule.inputs["description"]
    assert plan.outputs["lighthouseEndpoints"].value == {"talos-cp-1": "home.example.net:443"}


def test_a_homelab_lighthouse_on_an_unprivileged_port_needs_no_extra_rule(plans):
    """4242 is inside the ephemeral range the workers already reach over UDP."""
    assert PLACEMENTS["homelab"]["hybrid-llm:homelabLighthouseEndpoint"].endswith(":4242")
    assert worker_egress(plans["homelab"]) == worker_egress(plans["workers"]) == worker_egress(plans["ec2"])
    assert ("udp", 1024, 65535, "0.0.0.0/0") in worker_egress(plans["homelab"])


# --- the endpoints the stack reports -------------------------------------------------------


def test_workers_are_found_at_their_own_elastic_ips(plans):
    plan = plans["workers"]
    eips = eips_by_host(plan)
    assert plan.outputs["lighthouseEndpoints"].value == {
        host: f"{eips[host].state['publicIp']}:{PORT}" for host in WORKERS}
    assert len(set(plan.outputs["lighthouseEndpoints"].value.values())) == len(WORKERS)


def test_the_endpoints_follow_the_nebula_port():
    plan = run("workers", **{"hybrid-llm:nebulaPort": "14242"})
    eips = eips_by_host(plan)
    assert plan.outputs["lighthouseEndpoints"].value == {
        host: f"{eips[host].state['publicIp']}:14242" for host in WORKERS}


def test_the_ec2_lighthouse_is_found_at_its_elastic_ip(plans):
    plan = plans["ec2"]
    (eip,) = plan.of_type(EIP)
    assert plan.outputs["lighthouseEndpoints"].value == {"lighthouse": f"{eip.state['publicIp']}:{PORT}"}


def test_a_homelab_lighthouse_is_found_at_the_configured_endpoint(plans):
    assert plans["homelab"].outputs["lighthouseEndpoints"].value == {
        "talos-cp-1": PLACEMENTS["homelab"]["hybrid-llm:homelabLighthouseEndpoint"]}
    other = run("homelab", **{"hybrid-llm:homelabLighthouseNode": "talos-worker-1",
                              "hybrid-llm:homelabLighthouseEndpoint": "home.example.net:51820"})
    assert other.outputs["lighthouseEndpoints"].value == {"talos-worker-1": "home.example.net:51820"}
