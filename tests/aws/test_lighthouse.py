"""The EC2 lighthouse (lighthousePlacement ec2), through the whole program under
mocks. The other placements run no lighthouse instance (test_placement_aws.py)."""

from __future__ import annotations

import json

import pytest

from components import versions
from components.aws.lighthouse import AL2023_AMI_PARAMETER
from tests import iam_sim
from tests.conftest import PLACEMENTS
from tools import mocks

INSTANCE = "aws:ec2/instance:Instance"
PARAMETER_ARN = f"arn:aws:ssm:us-east-1:{mocks.ACCOUNT_ID}:parameter/hybrid-llm/dev/hosts"


def ec2_lighthouse(**overrides: str) -> dict[str, str]:
    """Config overrides of the dev stack with an EC2 lighthouse."""
    return {**PLACEMENTS["ec2"], **overrides}


def lighthouse_instance(plan):
    (instance,) = [r for r in plan.of_type(INSTANCE) if r.name.endswith("-lighthouse-instance")]
    return instance


def role_documents(plan, host: str) -> list[dict]:
    """Inline policies of the host's role, plus the managed policy's parameter reads."""
    (role,) = [r for r in plan.of_type("aws:iam/role:Role") if r.name == f"hybrid-llm-dev-{host}-role"]
    inline = [json.loads(p.inputs["policy"]) for p in plan.children(role) if p.type == "aws:iam/rolePolicy:RolePolicy"]
    attached = [a.inputs["policyArn"] for a in plan.children(role)
                if a.type == "aws:iam/rolePolicyAttachment:RolePolicyAttachment"]
    assert attached == ["arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"]
    return inline + [iam_sim.SSM_CORE_PARAMETER_READS]


def ami_answer(parameter: str) -> str:
    """What SSM answers (in the mocks) for a public AMI parameter."""
    return mocks._ssm_get_parameter(mocks.AwsMocks(), {"name": parameter})["value"]


@pytest.mark.parametrize("instance_type, arch, release", [("t4g.nano", "arm64", "arm64"),
                                                          ("t3.micro", "x86_64", "amd64")])
def test_ami_and_nebula_release_follow_the_architecture(run_program, instance_type, arch, release):
    plan = run_program(ec2_lighthouse(**{"hybrid-llm:lighthouseInstanceType": instance_type}))
    instance = lighthouse_instance(plan)
    assert instance.inputs["instanceType"] == instance_type
    assert instance.inputs["ami"] == ami_answer(AL2023_AMI_PARAMETER.format(arch=arch))
    boot = plan.file("lighthouse/boot.sh").content
    assert f'"{versions.NEBULA.url(release)}" "{versions.NEBULA.digest(release)}"' in boot
    other = "amd64" if release == "arm64" else "arm64"
    assert versions.NEBULA.url(other) not in boot


def test_elastic_ip_of_the_network_is_associated(ec2_plan):
    (eip,) = ec2_plan.of_type("aws:ec2/eip:Eip")
    (association,) = ec2_plan.of_type("aws:ec2/eipAssociation:EipAssociation")
    instance = lighthouse_instance(ec2_plan)
    assert eip.name == "hybrid-llm-dev-lighthouse-eip"
    assert association.inputs["allocationId"] == eip.state["allocationId"]
    assert association.inputs["instanceId"] == instance.id
    assert ec2_plan.outputs["lighthouseInstanceId"].value == instance.id
    assert ec2_plan.outputs["elasticIps"].value == {"lighthouse": eip.state["publicIp"]}
    assert ec2_plan.outputs["lighthouseEndpoints"].value == {"lighthouse": f"{eip.state['publicIp']}:4242"}


def test_instance_settings(ec2_plan):
    instance = lighthouse_instance(ec2_plan).plain()
    group = next(r for r in ec2_plan.of_type("aws:ec2/securityGroup:SecurityGroup") if r.name.endswith("-lighthouse-sg"))
    (subnet,) = ec2_plan.of_type("aws:ec2/subnet:Subnet")
    assert instance["vpcSecurityGroupIds"] == [group.id]
    assert instance["subnetId"] == subnet.id
    assert instance["associatePublicIpAddress"] is True
    assert instance["metadataOptions"] == {"httpEndpoint": "enabled", "httpTokens": "required",
                                           "httpPutResponseHopLimit": 1}
    root = instance["rootBlockDevice"]
    assert (root["volumeType"], root["encrypted"]) == ("gp3", True)
    assert instance["disableApiTermination"] is False
    assert instance["userData"] == ec2_plan.file("lighthouse/boot.sh").content


def test_termination_protection_is_configurable(run_program):
    plan = run_program(ec2_lighthouse(**{"hybrid-llm:lighthouseDisableApiTermination": "true"}))
    assert lighthouse_instance(plan).inputs["disableApiTermination"] is True


def test_profile_carries_the_lighthouse_role(ec2_plan):
    (profile,) = [r for r in ec2_plan.of_type("aws:iam/instanceProfile:InstanceProfile")
                  if r.name == "hybrid-llm-dev-lighthouse-profile"]
    (role,) = [r for r in ec2_plan.of_type("aws:iam/role:Role") if r.name == "hybrid-llm-dev-lighthouse-role"]
    assert profile.inputs["role"] == role.state["name"]
    assert lighthouse_instance(ec2_plan).inputs["iamInstanceProfile"] == profile.state["name"]
    trust = json.loads(role.inputs["assumeRolePolicy"])
    assert trust["Statement"] == [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                                   "Action": "sts:AssumeRole"}]


def test_role_reads_only_its_own_parameters(ec2_plan):
    documents = role_documents(ec2_plan, "lighthouse")
    own = f"{PARAMETER_ARN}/lighthouse/nebula/host.key"
    for action in ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"):
        assert iam_sim.allowed(documents, action, own)
        assert iam_sim.allowed(documents, action, f"{PARAMETER_ARN}/lighthouse/nebula")
    for other in (f"{PARAMETER_ARN}/gpu-0/nebula/host.key", f"{PARAMETER_ARN}/gpu-0/k3s/server-ca.key",
                  f"{PARAMETER_ARN}/lighthouse-evil/nebula/host.key",
                  f"arn:aws:ssm:us-east-1:{mocks.ACCOUNT_ID}:parameter/other-project/secret"):
        for action in ("ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath", "ssm:GetParameterHistory"):
            assert not iam_sim.allowed(documents, action, other), (action, other)
    assert not iam_sim.allowed(documents, "ssm:PutParameter", own)


def test_policy_documents_are_rendered(ec2_plan):
    rendered = json.loads(ec2_plan.file("iam/lighthouse/parameters.json").content)
    (policy,) = [r for r in ec2_plan.of_type("aws:iam/rolePolicy:RolePolicy")
                 if r.name == "hybrid-llm-dev-lighthouse-parameters"]
    assert json.loads(policy.inputs["policy"]) == rendered


def test_the_latest_ami_is_held_unless_pinned(ec2_plan, run_program):
    (instance,) = [r for r in ec2_plan.of_type("aws:ec2/instance:Instance") if "lighthouse" in r.name]
    assert instance.ignore_changes == ("ami",), "a new AL2023 release must not replace the lighthouse"
    pinned = run_program(ec2_lighthouse(**{"hybrid-llm:lighthouseAmiId": "ami-0fedcba9876543210"}))
    (instance,) = [r for r in pinned.of_type("aws:ec2/instance:Instance") if "lighthouse" in r.name]
    assert instance.ignore_changes == ()
    assert instance.plain()["ami"] == "ami-0fedcba9876543210"
