"""The network component, through the whole program under mocks."""

from __future__ import annotations

import ipaddress
import json

import pytest

NEBULA_PORT = 4242
# The session plans of each lighthouse placement (tests/conftest.py).
PLANS = ("dev_plan", "ec2_plan", "homelab_lighthouse_plan")


def _rules(plan, kind: str, group):
    rule_type = f"aws:vpc/securityGroup{kind}Rule:SecurityGroup{kind}Rule"
    return [r for r in plan.children(group) if r.type == rule_type]


def _group(plan, suffix: str):
    return next(r for r in plan.of_type("aws:ec2/securityGroup:SecurityGroup") if r.name.endswith(suffix))


def test_vpc_has_dns_and_the_configured_range(dev_plan):
    (vpc,) = dev_plan.of_type("aws:ec2/vpc:Vpc")
    assert vpc.inputs["cidrBlock"] == dev_plan.config["hybrid-llm:vpcCidr"]
    assert vpc.inputs["enableDnsSupport"] is True and vpc.inputs["enableDnsHostnames"] is True


def test_public_subnet_in_the_pinned_az_inside_the_vpc(dev_plan):
    (subnet,) = dev_plan.of_type("aws:ec2/subnet:Subnet")
    (vpc,) = dev_plan.of_type("aws:ec2/vpc:Vpc")
    assert subnet.inputs["availabilityZone"] == "us-east-1b"
    assert subnet.inputs["vpcId"] == vpc.id
    assert ipaddress.ip_network(subnet.inputs["cidrBlock"]).subnet_of(ipaddress.ip_network(vpc.inputs["cidrBlock"]))
    assert dev_plan.outputs["availabilityZone"].value == "us-east-1b"


def test_unpinned_az_takes_the_regions_first(run_program):
    plan = run_program({"hybrid-llm:availabilityZone": "", "aws:region": "eu-central-1"})
    (subnet,) = plan.of_type("aws:ec2/subnet:Subnet")
    assert subnet.inputs["availabilityZone"] == "eu-central-1a"


def test_default_route_goes_to_the_internet_gateway_and_no_nat(dev_plan):
    (gateway,) = dev_plan.of_type("aws:ec2/internetGateway:InternetGateway")
    (table,) = dev_plan.of_type("aws:ec2/routeTable:RouteTable")
    assert table.inputs["routes"] == [{"cidrBlock": "0.0.0.0/0", "gatewayId": gateway.id}]
    (assoc,) = dev_plan.of_type("aws:ec2/routeTableAssociation:RouteTableAssociation")
    (subnet,) = dev_plan.of_type("aws:ec2/subnet:Subnet")
    assert (assoc.inputs["subnetId"], assoc.inputs["routeTableId"]) == (subnet.id, table.id)
    assert dev_plan.of_type("aws:ec2/natGateway:NatGateway") == []


@pytest.mark.parametrize("plan_fixture, suffix", [("ec2_plan", "-lighthouse-sg"), ("ec2_plan", "-worker-sg"),
                                                   ("dev_plan", "-worker-sg"),
                                                   ("homelab_lighthouse_plan", "-worker-sg")])
def test_only_nebula_udp_comes_in(request, plan_fixture, suffix):
    plan = request.getfixturevalue(plan_fixture)
    group = _group(plan, suffix)
    ingress = _rules(plan, "Ingress", group)
    assert [(r.inputs["ipProtocol"], r.inputs["fromPort"], r.inputs["toPort"], r.inputs["cidrIpv4"])
            for r in ingress] == [("udp", NEBULA_PORT, NEBULA_PORT, "0.0.0.0/0")]


@pytest.mark.parametrize("plan_fixture", PLANS)
def test_no_ssh_anywhere(request, plan_fixture):
    plan = request.getfixturevalue(plan_fixture)
    for kind in ("Ingress", "Egress"):
        for group in plan.of_type("aws:ec2/securityGroup:SecurityGroup"):
            for rule in _rules(plan, kind, group):
                assert not (rule.inputs["ipProtocol"] == "tcp" and rule.inputs["fromPort"] <= 22 <= rule.inputs["toPort"])


@pytest.mark.parametrize("plan_fixture", PLANS)
def test_egress_is_narrow_and_every_rule_described(request, plan_fixture):
    plan = request.getfixturevalue(plan_fixture)
    groups = plan.of_type("aws:ec2/securityGroup:SecurityGroup")
    assert len(groups) == (2 if plan_fixture == "ec2_plan" else 1), [g.name for g in groups]
    for group in groups:
        assert group.inputs["description"]
        egress = _rules(plan, "Egress", group)
        assert egress, group.name
        for rule in egress + _rules(plan, "Ingress", group):
            assert rule.inputs["description"], rule.name
            assert rule.inputs["ipProtocol"] in ("tcp", "udp"), "no all-protocol rule"
        tcp_ports = {r.inputs["fromPort"] for r in egress if r.inputs["ipProtocol"] == "tcp"}
        assert tcp_ports <= {80, 443}


def test_default_security_group_is_emptied(dev_plan):
    (default,) = dev_plan.of_type("aws:ec2/defaultSecurityGroup:DefaultSecurityGroup")
    assert not default.inputs.get("ingress") and not default.inputs.get("egress")


def test_nebula_port_follows_config(run_program):
    plan = run_program({"hybrid-llm:nebulaPort": "14242"})
    group = _group(plan, "-worker-sg")
    (rule,) = _rules(plan, "Ingress", group)
    assert (rule.inputs["fromPort"], rule.inputs["toPort"]) == (14242, 14242)


def test_lighthouse_address_is_a_stack_owned_elastic_ip(ec2_plan):
    (eip,) = ec2_plan.of_type("aws:ec2/eip:Eip")
    (component,) = ec2_plan.of_type("hybrid-llm:index:Network")
    assert eip.inputs["domain"] == "vpc" and eip.parent == component.urn
    assert ec2_plan.outputs["elasticIps"].value == {"lighthouse": eip.state["publicIp"]}


def test_children_are_parented_to_the_network_component(dev_plan):
    (component,) = dev_plan.of_type("hybrid-llm:index:Network")
    children = {r.type for r in dev_plan.children(component)}
    assert {"aws:ec2/vpc:Vpc", "aws:ec2/subnet:Subnet", "aws:ec2/internetGateway:InternetGateway",
            "aws:ec2/routeTable:RouteTable", "aws:ec2/securityGroup:SecurityGroup"} <= children
    assert all(r.name.startswith(component.name) for r in dev_plan.children(component))


def test_every_aws_resource_uses_the_tagging_provider(dev_plan):
    (provider,) = dev_plan.of_type("pulumi:providers:aws")
    assert provider.inputs["region"] == "us-east-1"
    default_tags = provider.inputs["defaultTags"]
    # provider configuration reaches the engine JSON-encoded
    default_tags = json.loads(default_tags) if isinstance(default_tags, str) else default_tags
    assert default_tags["tags"] == {"Project": "hybrid-llm", "Stack": "dev", "ManagedBy": "pulumi"}
