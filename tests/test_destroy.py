"""`pulumi destroy` leaves nothing behind: what would otherwise be created outside
the stack (Lambda log groups, parameters, the address) is a stack resource, only
the model volume may be protected, and no boot script creates AWS resources."""

from __future__ import annotations

import json
import re

import pytest

from tools.mocks import decode_user_data

LAMBDA = "aws:lambda/function:Function"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
PARAMETER = "aws:ssm/parameter:Parameter"
VOLUME = "aws:ebs/volume:Volume"
IAM_DOCUMENT_TYPES = ("aws:iam/rolePolicy:RolePolicy", "aws:iam/policy:Policy")

# The session plan of each lighthouse placement (tests/conftest.py) and the AWS
# hosts it runs: the EC2 lighthouse only with placement ec2.
PLANS = {"dev_plan": {"gpu-0"}, "ec2_plan": {"lighthouse", "gpu-0"}, "homelab_lighthouse_plan": {"gpu-0"}}

# AWS CLI verbs that create something Pulumi would not know about.
_CREATING = re.compile(
    r"\b(create-[a-z-]+|run-instances|request-spot-[a-z-]+|allocate-address|put-parameter|"
    r"register-[a-z-]+|import-[a-z-]+|copy-image|copy-snapshot|mb)\b")
_AWS_CLI = re.compile(r"(^|[\s;&|(`$])aws\s")


def creating_commands(script: str) -> list[str]:
    """Lines of a shell script that call the AWS CLI with a creating verb
    (continuation lines joined first)."""
    joined = re.sub(r"\\\n\s*", " ", script)
    return [line.strip() for line in joined.splitlines()
            if _AWS_CLI.search(line) and _CREATING.search(line.split("aws", 1)[1])]


def test_every_lambda_has_a_declared_log_group_with_retention(dev_plan):
    functions = dev_plan.of_type(LAMBDA)
    assert functions, "the scaler Lambda is not in the program yet"
    groups = {g.state["name"]: g.plain() for g in dev_plan.of_type(LOG_GROUP)}
    for function in functions:
        expected = f"/aws/lambda/{function.state['name']}"
        assert expected in groups, f"{function.name}: no log group {expected}"
        assert groups[expected].get("retentionInDays", 0) > 0


def test_no_role_may_create_log_groups_behind_the_stack(dev_plan):
    """Lambda creates its own log group on first run when its role may; without
    logs:CreateLogGroup it can only write to the declared one."""
    documents = [r.plain()["policy"] for t in IAM_DOCUMENT_TYPES for r in dev_plan.of_type(t)]
    assert documents
    for text in documents:
        document = json.loads(text) if isinstance(text, str) else text
        for statement in document["Statement"]:
            actions = statement.get("Action", [])
            actions = [actions] if isinstance(actions, str) else actions
            if statement["Effect"] == "Allow":
                assert not {a.lower() for a in actions} & {"logs:createloggroup", "logs:*", "*"}


@pytest.mark.parametrize("plan_fixture, lighthouses", [("dev_plan", {"gpu-0"}), ("ec2_plan", {"lighthouse"}),
                                                        ("homelab_lighthouse_plan", set())])
def test_the_lighthouse_addresses_are_stack_resources(request, plan_fixture, lighthouses):
    """Every address the mesh dials is an Elastic IP of the stack (destroy releases
    it), associated by the stack; a homelab lighthouse needs none."""
    plan = request.getfixturevalue(plan_fixture)
    eips = {e.plain()["tags"]["NebulaHost"]: e for e in plan.of_type("aws:ec2/eip:Eip")}
    assert set(eips) == lighthouses
    assert plan.outputs["elasticIps"].value == {host: e.state["publicIp"] for host, e in eips.items()}
    associations = plan.of_type("aws:ec2/eipAssociation:EipAssociation")
    assert sorted(a.plain()["allocationId"] for a in associations) == \
        sorted(e.state["allocationId"] for e in eips.values())


@pytest.mark.parametrize("plan_fixture", sorted(PLANS))
def test_every_aws_host_reads_parameters_the_stack_owns(request, plan_fixture):
    plan = request.getfixturevalue(plan_fixture)
    names = [p.state["name"] for p in plan.of_type(PARAMETER)]
    prefix = "/hybrid-llm/dev/hosts/"
    assert names and all(n.startswith(prefix) for n in names)
    hosts = {n[len(prefix):].split("/", 1)[0] for n in names}
    assert hosts == PLANS[plan_fixture]
    # Every parameter path a boot file names is one the stack declares.
    declared_prefixes = {prefix + h for h in hosts}
    scripts = "\n".join(f.content for f in plan.files if not f.secret)
    referenced = set(re.findall(r"/hybrid-llm/dev/hosts/[a-z0-9-]+", scripts))
    assert referenced and referenced <= declared_prefixes


@pytest.mark.parametrize("plan_fixture", sorted(PLANS))
def test_nothing_is_protected_or_retained_by_default(request, plan_fixture):
    plan = request.getfixturevalue(plan_fixture)
    kept = [(r.type, r.name) for r in plan.resources if r.protect or r.retain_on_delete]
    assert kept == []
    for instance in plan.of_type("aws:ec2/instance:Instance"):
        assert not instance.plain().get("disableApiTermination")


def test_protect_model_volume_retains_only_the_model_volumes(run_program):
    plan = run_program({"hybrid-llm:protectModelVolume": "true", "hybrid-llm:gpuWorkers": "2"})
    retained = [r for r in plan.resources if r.retain_on_delete]
    assert {r.type for r in retained} == {VOLUME}
    assert sorted(r.id for r in retained) == \
        sorted(plan.outputs["modelVolumeIds"].value.values())
    assert [r for r in plan.resources if r.protect] == [], "protect would make destroy fail"


@pytest.mark.parametrize("plan_fixture", sorted(PLANS))
def test_no_boot_script_creates_aws_resources(request, plan_fixture):
    plan = request.getfixturevalue(plan_fixture)
    scripts = {f.path: f.content for f in plan.files if f.path.endswith(".sh") and not f.secret}
    assert any(p.startswith("workers/") for p in scripts)
    assert ("lighthouse/boot.sh" in scripts) == ("lighthouse" in PLANS[plan_fixture])
    for launch_template in plan.of_type("aws:ec2/launchTemplate:LaunchTemplate"):
        scripts[launch_template.name] = decode_user_data(launch_template.plain()["userData"])
    for instance in plan.of_type("aws:ec2/instance:Instance"):
        if instance.plain().get("userData"):
            scripts[instance.name] = instance.plain()["userData"]
    found = {path: creating_commands(text) for path, text in scripts.items() if creating_commands(text)}
    assert found == {}


@pytest.mark.parametrize("script", [
    "aws ec2 create-volume --size 10",
    'aws --region "$REGION" ssm put-parameter --name /x --value y',
    "aws s3 mb s3://bucket",
    "ID=$(aws ec2 run-instances \\\n  --image-id ami-1)",
    "aws logs create-log-group --log-group-name /x",
])
def test_the_boot_script_check_catches_creation(script):
    assert creating_commands(script)


def test_the_boot_script_check_allows_reads_and_metrics():
    script = ('aws ssm get-parameters-by-path --path "$P" --with-decryption\n'
              "aws cloudwatch put-metric-data --namespace HybridLLM --metric-name Activity --value 1\n"
              "aws ec2 describe-volumes --volume-ids vol-1\n")
    assert creating_commands(script) == []
