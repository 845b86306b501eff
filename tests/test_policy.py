"""The policy pack's rules over the mocked program (everything passes) and over a
broken copy of each guarded resource (the right rule fires, naming the resource)."""

from __future__ import annotations

import base64
import copy
import gzip
import json
import sys

import pytest
import yaml

from components.aws.gpu_worker import encode_user_data
from tests.conftest import PLACEMENTS, ROOT

sys.path.insert(0, str(ROOT / "policy"))

import pack  # noqa: E402
import rules  # noqa: E402
from pulumi_policy import EnforcementLevel, ResourceValidationArgs  # noqa: E402

PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIB3x\n-----END PRIVATE KEY-----"
NEBULA_KEY = "-----BEGIN NEBULA X25519 PRIVATE KEY-----\nAAAA\n-----END NEBULA X25519 PRIVATE KEY-----"
K3S_TOKEN = "K10" + "ab" * 32 + "::server:0123456789abcdef"


def fired(rule: str, resource_type: str, props: dict, name: str, config=None) -> list[str]:
    """The messages of one rule, each checked to name the resource."""
    found = rules.violations(resource_type, props, name, config).get(rule, [])
    assert all(m.startswith(f"{name}: ") for m in found), found
    return found


def planned(plan, resource_type: str, index: int = 0):
    matching = plan.of_type(resource_type)
    assert matching, f"the program declares no {resource_type}"
    resource = matching[index]
    return resource.name, copy.deepcopy(resource.plain())


# The session plan of each lighthouse placement (tests/conftest.py).
PLACEMENT_PLANS = {"workers": "dev_plan", "ec2": "ec2_plan", "homelab": "homelab_lighthouse_plan"}


def lighthouse_instance(plan):
    """The instance that carries its own settings (not launched from a template):
    the EC2 lighthouse, so pass a plan with lighthousePlacement ec2."""
    found = [r for r in plan.of_type(rules.INSTANCE) if not r.plain().get("launchTemplate")]
    assert found, "no instance with its own metadata options"
    return found[0].name, copy.deepcopy(found[0].plain())


# --- the program passes -------------------------------------------------------------


def test_every_placement_has_a_plan():
    assert set(PLACEMENT_PLANS) == set(PLACEMENTS)


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_every_rule_passes_on_the_dev_stack_in_every_placement(request, placement):
    plan = request.getfixturevalue(PLACEMENT_PLANS[placement])
    assert plan.outputs["lighthousePlacement"].value == placement
    failures = {r.name: v for r in plan.resources if (v := rules.violations(r.type, r.plain(), r.name))}
    assert failures == {}


@pytest.mark.parametrize("overrides", [
    {"hybrid-llm:gpuSpot": "false", "hybrid-llm:gpuWorkers": "2"},
    {"hybrid-llm:budgetMonthlyUsd": "40", "hybrid-llm:budgetEmails": '["ops@example.org"]',
     "hybrid-llm:protectModelVolume": "true"},
    {**PLACEMENTS["ec2"], "hybrid-llm:gpuWorkers": "2", "hybrid-llm:lighthouseInstanceType": "t3.micro"},
    {**PLACEMENTS["homelab"], "hybrid-llm:homelabLighthouseEndpoint": "home.example.net:443",
     "hybrid-llm:gpuWorkers": "2"},
])
def test_every_rule_passes_on_other_configs(run_program, overrides):
    plan = run_program(overrides)
    failures = {r.name: v for r in plan.resources if (v := rules.violations(r.type, r.plain(), r.name))}
    assert failures == {}


def test_the_dev_plan_holds_every_guarded_kind(dev_plan):
    present = {r.type for r in dev_plan.resources}
    required = {rules.INSTANCE, rules.LAUNCH_TEMPLATE, rules.VOLUME, rules.SG_INGRESS, rules.LOG_GROUP}
    assert required - present == set()
    assert present & {rules.ROLE_POLICY, rules.POLICY}


# --- each rule fires on a broken resource ---------------------------------------------


def test_imdsv2_optional_fires(dev_plan, ec2_plan):
    name, props = lighthouse_instance(ec2_plan)
    assert not fired("imdsv2-required", rules.INSTANCE, props, name)
    props["metadataOptions"]["httpTokens"] = "optional"
    assert fired("imdsv2-required", rules.INSTANCE, props, name)
    name, props = planned(dev_plan, rules.LAUNCH_TEMPLATE)
    del props["metadataOptions"]
    assert fired("imdsv2-required", rules.LAUNCH_TEMPLATE, props, name)


@pytest.mark.parametrize("limit", [2, 2.0, None])
def test_imds_hop_limit_above_one_fires(dev_plan, ec2_plan, limit):
    """Hop limit 2 let any pod take the worker role, which reads the k3s CA keys."""
    name, props = lighthouse_instance(ec2_plan)
    assert not fired("imds-hop-limit-1", rules.INSTANCE, props, name)
    props["metadataOptions"]["httpPutResponseHopLimit"] = limit
    if limit is None:
        del props["metadataOptions"]["httpPutResponseHopLimit"]
    assert fired("imds-hop-limit-1", rules.INSTANCE, props, name)
    name, props = planned(dev_plan, rules.LAUNCH_TEMPLATE)
    assert not fired("imds-hop-limit-1", rules.LAUNCH_TEMPLATE, props, name)
    props["metadataOptions"]["httpPutResponseHopLimit"] = limit
    assert fired("imds-hop-limit-1", rules.LAUNCH_TEMPLATE, props, name)


def test_instance_from_a_template_is_judged_by_the_template(dev_plan):
    from_template = [r for r in dev_plan.of_type(rules.INSTANCE) if r.plain().get("launchTemplate")]
    assert from_template
    props = copy.deepcopy(from_template[0].plain())
    props.pop("metadataOptions", None)
    assert rules.violations(rules.INSTANCE, props, "w") == {}
    props["metadataOptions"] = {"httpTokens": "optional"}
    assert fired("imdsv2-required", rules.INSTANCE, props, "w")


def test_unencrypted_disks_fire(dev_plan, ec2_plan):
    name, props = planned(dev_plan, rules.VOLUME)
    props["encrypted"] = False
    assert fired("ebs-encrypted", rules.VOLUME, props, name) == [f"{name}: EBS volume is not encrypted"]

    name, props = lighthouse_instance(ec2_plan)
    assert not fired("ebs-encrypted", rules.INSTANCE, props, name)
    props["rootBlockDevice"]["encrypted"] = False
    assert fired("ebs-encrypted", rules.INSTANCE, props, name)

    name, props = planned(dev_plan, rules.LAUNCH_TEMPLATE)
    props["blockDeviceMappings"][0]["ebs"]["encrypted"] = "false"
    assert fired("ebs-encrypted", rules.LAUNCH_TEMPLATE, props, name)
    props["blockDeviceMappings"] = []
    assert fired("ebs-encrypted", rules.LAUNCH_TEMPLATE, props, name)


def test_world_open_ingress_fires_except_nebula(dev_plan):
    name, props = planned(dev_plan, rules.SG_INGRESS)
    assert props["cidrIpv4"] == "0.0.0.0/0" and props["ipProtocol"] == "udp"
    assert fired("no-open-ingress", rules.SG_INGRESS, props, name) == []

    ssh = dict(props, ipProtocol="tcp", fromPort=22, toPort=22)
    assert fired("no-open-ingress", rules.SG_INGRESS, ssh, name)
    v6 = {k: v for k, v in props.items() if k != "cidrIpv4"} | {"cidrIpv6": "::/0", "fromPort": 4000, "toPort": 4300}
    assert fired("no-open-ingress", rules.SG_INGRESS, v6, name)
    # From the homelab's range only: not open to the world.
    assert fired("no-open-ingress", rules.SG_INGRESS, dict(ssh, cidrIpv4="192.168.1.0/24"), name) == []


def test_the_nebula_port_comes_from_the_pack_config(dev_plan):
    name, props = planned(dev_plan, rules.SG_INGRESS)
    moved = dict(props, fromPort=4243, toPort=4243)
    assert fired("no-open-ingress", rules.SG_INGRESS, moved, name)
    assert fired("no-open-ingress", rules.SG_INGRESS, moved, name, {"no-open-ingress": {"nebulaPort": 4243}}) == []


def test_pack_config_file_matches_the_stack_port(dev_plan):
    configured = json.loads((ROOT / "policy" / "config.json").read_text())["no-open-ingress"]["nebulaPort"]
    assert str(configured) == dev_plan.config["hybrid-llm:nebulaPort"]


def test_inline_and_legacy_security_group_rules_fire(dev_plan):
    name, props = planned(dev_plan, rules.SG)
    props["ingress"] = [{"protocol": "tcp", "fromPort": 443, "toPort": 443, "cidrBlocks": ["0.0.0.0/0"]}]
    assert fired("no-open-ingress", rules.SG, props, name)
    props["ingress"] = [{"protocol": "udp", "fromPort": 4242, "toPort": 4242, "cidrBlocks": ["0.0.0.0/0"]}]
    assert fired("no-open-ingress", rules.SG, props, name) == []

    legacy = {"type": "ingress", "protocol": "-1", "fromPort": 0, "toPort": 0,
              "ipv6CidrBlocks": ["::/0"], "securityGroupId": "sg-0123456789abcdef0"}
    assert fired("no-open-ingress", rules.SG_RULE, legacy, "legacy-rule")
    assert fired("no-open-ingress", rules.SG_RULE, dict(legacy, type="egress"), "legacy-rule") == []


def _with_statement(document: str, statement: dict) -> str:
    parsed = json.loads(document)
    parsed["Statement"].append(statement)
    return json.dumps(parsed)


def test_wildcard_iam_fires(dev_plan):
    name, props = planned(dev_plan, rules.ROLE_POLICY)
    base = props["policy"]
    props["policy"] = _with_statement(base, {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::b/*"})
    assert fired("iam-least-privilege", rules.ROLE_POLICY, props, name)
    props["policy"] = _with_statement(base, {"Effect": "Allow", "Action": ["ec2:TerminateInstances"], "Resource": "*"})
    assert fired("iam-least-privilege", rules.ROLE_POLICY, props, name)
    props["policy"] = _with_statement(base, {"Effect": "Allow", "Action": "cloudwatch:PutMetricData", "Resource": "*"})
    assert fired("iam-least-privilege", rules.ROLE_POLICY, props, name), "PutMetricData needs a Condition"
    props["policy"] = _with_statement(base, {"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"})
    assert fired("iam-least-privilege", rules.ROLE_POLICY, props, name)


def test_reads_on_any_resource_pass(dev_plan):
    name, props = planned(dev_plan, rules.ROLE_POLICY)
    props["policy"] = _with_statement(props["policy"], {
        "Effect": "Allow", "Action": ["ec2:DescribeInstances", "cloudwatch:GetMetricData"], "Resource": "*"})
    assert fired("iam-least-privilege", rules.ROLE_POLICY, props, name) == []
    denied = _with_statement(props["policy"], {"Effect": "Deny", "Action": "*", "Resource": "*"})
    assert rules.violations(rules.ROLE_POLICY, dict(props, policy=denied), name) == {}


def test_managed_policy_and_role_inline_policies_are_checked(dev_plan):
    document = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    assert fired("iam-least-privilege", rules.POLICY, {"policy": json.dumps(document)}, "admin")
    name, props = planned(dev_plan, rules.ROLE)
    props["inlinePolicies"] = [{"name": "everything", "policy": json.dumps(document)}]
    assert fired("iam-least-privilege", rules.ROLE, props, name)


def listed(value) -> list:
    return [value] if isinstance(value, str) else list(value)


def stop_policy(plan) -> tuple[str, str, dict, dict]:
    """The planned role policy that grants ec2:StopInstances (the scaler's), or a
    synthetic one on the plan's first instance while the scaler is not wired in."""
    for resource in plan.of_type(rules.ROLE_POLICY):
        props = copy.deepcopy(resource.plain())
        document = json.loads(props["policy"])
        for statement in document["Statement"]:
            if "ec2:StopInstances" in listed(statement.get("Action")):
                return resource.name, rules.ROLE_POLICY, props, document
    instance_arn = plan.of_type(rules.INSTANCE)[0].state["arn"]
    document = {"Version": "2012-10-17", "Statement": [
        {"Sid": "Stop", "Effect": "Allow", "Action": "ec2:StopInstances", "Resource": [instance_arn]}]}
    return "scaler", rules.POLICY, {"policy": json.dumps(document)}, document


def test_stop_permission_must_name_instance_arns(dev_plan):
    name, kind, props, document = stop_policy(dev_plan)
    assert rules.violations(kind, props, name) == {}
    statement = next(s for s in document["Statement"] if "ec2:StopInstances" in listed(s["Action"]))
    instance_arn = listed(statement["Resource"])[0]
    assert rules.INSTANCE_ARN.match(instance_arn)
    for resource in ("*", instance_arn.rsplit("/", 1)[0] + "/*"):
        statement["Resource"] = [instance_arn, resource]
        assert fired("stop-scoped-to-instances", kind, dict(props, policy=json.dumps(document)), name)
    statement["Resource"] = [instance_arn]
    statement["Action"] = "ec2:Stop*"
    assert fired("iam-least-privilege", kind, dict(props, policy=json.dumps(document)), name)


def test_secrets_in_user_data_fire(ec2_plan):
    name, props = lighthouse_instance(ec2_plan)
    assert not fired("no-secrets-in-user-data", rules.INSTANCE, props, name)
    for secret in (PEM_KEY, NEBULA_KEY, f"K3S_TOKEN={K3S_TOKEN}",
                   "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"):
        broken = dict(props, userData=props["userData"] + "\n" + secret + "\n")
        assert fired("no-secrets-in-user-data", rules.INSTANCE, broken, name), secret


def test_secrets_in_a_workers_gzipped_user_data_fire(dev_plan):
    """The worker's user data is base64 of gzip (cloud-init decompresses it): the
    rule must decompress it too, or a leaked key would pass unseen."""
    name, props = planned(dev_plan, rules.LAUNCH_TEMPLATE)
    stream = base64.b64decode(props["userData"], validate=True)
    assert stream.startswith(b"\x1f\x8b"), "the planned worker user data is gzip"
    text = gzip.decompress(stream).decode()
    assert rules.violations(rules.LAUNCH_TEMPLATE, props, name) == {}
    both = [f"{name}: user data contains a PEM private key", f"{name}: user data contains a Nebula private key"]
    for encode in (encode_user_data, lambda t: base64.b64encode(t.encode()).decode()):
        broken = dict(props, userData=encode(text + "\n" + NEBULA_KEY + "\n"))
        assert fired("no-secrets-in-user-data", rules.LAUNCH_TEMPLATE, broken, name) == both
        broken = dict(props, userData=encode(text + "\n" + PEM_KEY + "\n"))
        assert fired("no-secrets-in-user-data", rules.LAUNCH_TEMPLATE, broken, name) == both[:1]
    # An instance's base64 user data is read the same way.
    instance_props = {"userDataBase64": encode_user_data(text + "\n" + PEM_KEY + "\n")}
    assert fired("no-secrets-in-user-data", rules.INSTANCE, instance_props, "i") == \
        ["i: user data contains a PEM private key"]


def test_user_data_gzip_that_does_not_decompress_fires(dev_plan):
    """Unreadable is not clean: a truncated stream cannot be scanned, so it fails."""
    name, props = planned(dev_plan, rules.LAUNCH_TEMPLATE)
    stream = base64.b64decode(props["userData"], validate=True)
    broken = dict(props, userData=base64.b64encode(stream[: len(stream) // 2]).decode())
    assert fired("no-secrets-in-user-data", rules.LAUNCH_TEMPLATE, broken, name) == \
        [f"{name}: user data contains gzip data that does not decompress, so it cannot be checked for secrets"]


def test_reading_a_token_from_a_variable_is_not_a_secret():
    script = 'K3S_TOKEN="$(hybrid-llm-ssm-fetch token)"\nk3s server --token "$K3S_TOKEN"\n'
    assert rules.violations(rules.INSTANCE, {"userData": script, "launchTemplate": {"id": "lt-1"}}, "i") == {}


def test_spot_that_terminates_fires(dev_plan):
    name, props = planned(dev_plan, rules.LAUNCH_TEMPLATE)
    assert props["instanceMarketOptions"]["marketType"] == "spot"
    broken = copy.deepcopy(props)
    broken["instanceMarketOptions"]["spotOptions"]["instanceInterruptionBehavior"] = "terminate"
    assert fired("spot-persistent-stop", rules.LAUNCH_TEMPLATE, broken, name)
    broken = copy.deepcopy(props)
    broken["instanceMarketOptions"]["spotOptions"]["spotInstanceType"] = "one-time"
    assert fired("spot-persistent-stop", rules.LAUNCH_TEMPLATE, broken, name)
    request = {"spotType": "one-time", "instanceInterruptionBehavior": "terminate"}
    assert fired("spot-persistent-stop", rules.SPOT_REQUEST, request, "req")


def test_nat_gateway_fires():
    assert fired("no-nat-gateway", rules.NAT_GATEWAY, {"subnetId": "subnet-1", "allocationId": "eipalloc-1"}, "nat")


def test_log_group_without_retention_fires(dev_plan):
    groups = dev_plan.of_type(rules.LOG_GROUP)
    name, props = (groups[0].name, copy.deepcopy(groups[0].plain())) if groups else ("scaler-logs", {"name": "/x"})
    props.pop("retentionInDays", None)
    assert fired("log-group-retention", rules.LOG_GROUP, props, name)
    assert fired("log-group-retention", rules.LOG_GROUP, dict(props, retentionInDays=0), name)
    assert fired("log-group-retention", rules.LOG_GROUP, dict(props, retentionInDays=14), name) == []


# --- the pack ----------------------------------------------------------------------------


def test_pack_has_one_mandatory_policy_per_rule():
    built = pack.policies()
    assert [p.name for p in built] == [r.name for r in rules.RULES]
    assert len({p.name for p in built}) == len(rules.RULES)
    assert {p.enforcement_level for p in built} == {EnforcementLevel.MANDATORY}


def test_pack_policies_report_through_the_sdk():
    by_name = {p.name: p for p in pack.policies()}
    reported: list[str] = []
    args = ResourceValidationArgs(rules.NAT_GATEWAY, {}, "urn:pulumi:dev::hybrid-llm::aws:ec2/natGateway:NatGateway::nat",
                                  "nat", None, None, {})
    by_name["no-nat-gateway"].validate(args, lambda message, urn=None: reported.append(message))
    by_name["log-group-retention"].validate(args, lambda message, urn=None: reported.append(message))
    assert reported == [rules.violations(rules.NAT_GATEWAY, {}, "nat")["no-nat-gateway"][0]]


def test_pack_project_file_runs_python():
    project = yaml.safe_load((ROOT / "policy" / "PulumiPolicy.yaml").read_text())
    assert project["runtime"]["name"] == "python"
    pinned = (ROOT / "policy" / "requirements.txt").read_text().split()
    dev = (ROOT / "requirements-dev.txt").read_text().split()
    assert [p for p in pinned if p.startswith("pulumi-policy==")] == [p for p in dev if p.startswith("pulumi-policy==")]


# --- the pack as the engine sees it: its real analyzer server over gRPC ----------------


@pytest.fixture(scope="module")
def analyzer():
    """`policy/__main__.py` started as the CLI starts it; it prints its port."""
    import subprocess

    import grpc
    from pulumi.runtime.proto import analyzer_pb2_grpc

    process = subprocess.Popen([sys.executable, str(ROOT / "policy" / "__main__.py")],
                               cwd=ROOT / "policy", stdout=subprocess.PIPE, text=True)
    try:
        port = int(process.stdout.readline())
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        process.kill()
        process.wait()


def test_analyzer_declares_every_policy_mandatory(analyzer):
    from google.protobuf import empty_pb2
    from pulumi.runtime.proto import analyzer_pb2

    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == pack.PACK_NAME
    assert [p.name for p in info.policies] == [r.name for r in rules.RULES]
    assert {p.enforcementLevel for p in info.policies} == {analyzer_pb2.MANDATORY}


def test_analyzer_reports_a_broken_resource(analyzer, dev_plan):
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    name, props = planned(dev_plan, rules.VOLUME)
    props["encrypted"] = False
    properties = struct_pb2.Struct()
    properties.update(props)
    response = analyzer.Analyze(analyzer_pb2.AnalyzeRequest(
        type=rules.VOLUME, properties=properties, name=name,
        urn=f"urn:pulumi:dev::hybrid-llm::{rules.VOLUME}::{name}"))
    assert [(d.policyName, d.enforcementLevel) for d in response.diagnostics] == \
        [("ebs-encrypted", analyzer_pb2.MANDATORY)]
    assert f"{name}: EBS volume is not encrypted" in response.diagnostics[0].message


def _analyze(analyzer, resource_type: str, name: str, props: dict):
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    properties = struct_pb2.Struct()
    properties.update(props)
    return analyzer.Analyze(analyzer_pb2.AnalyzeRequest(
        type=resource_type, properties=properties, name=name,
        urn=f"urn:pulumi:dev::hybrid-llm::{resource_type}::{name}")).diagnostics


def test_analyzer_passes_engine_shaped_numbers(analyzer, dev_plan):
    """The engine sends numbers as floats (protobuf Struct)."""
    assert list(_analyze(analyzer, rules.LOG_GROUP, "logs", {"name": "/aws/lambda/x", "retentionInDays": 14})) == []
    name, props = planned(dev_plan, rules.SG_INGRESS)
    assert list(_analyze(analyzer, rules.SG_INGRESS, name, props)) == []


def test_analyzer_takes_the_nebula_port_from_pack_config(analyzer, dev_plan):
    from google.protobuf import struct_pb2
    from pulumi.runtime.proto import analyzer_pb2

    name, props = planned(dev_plan, rules.SG_INGRESS)
    moved = dict(props, fromPort=4243, toPort=4243)
    assert [d.policyName for d in _analyze(analyzer, rules.SG_INGRESS, name, moved)] == ["no-open-ingress"]
    settings = struct_pb2.Struct()
    settings.update({"nebulaPort": 4243})
    analyzer.Configure(analyzer_pb2.ConfigureAnalyzerRequest(policyConfig={
        "no-open-ingress": analyzer_pb2.PolicyConfig(enforcementLevel=analyzer_pb2.MANDATORY, properties=settings)}))
    assert list(_analyze(analyzer, rules.SG_INGRESS, name, moved)) == []


# --- the pack offline: `python -m policy PLAN.json` over tools/plan.py --json ------------


def run_offline(*args: str, cwd=ROOT):
    import subprocess

    return subprocess.run([sys.executable, "-m", "policy", *args], cwd=cwd,
                           capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def plan_document(tmp_path_factory) -> dict:
    """The dev stack's plan JSON, written by tools/plan.py as a user would."""
    import subprocess

    path = tmp_path_factory.mktemp("offline") / "plan.json"
    result = subprocess.run([sys.executable, str(ROOT / "tools" / "plan.py"), "--json", str(path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(path.read_text())


def _write_plan(tmp_path, document, name="plan.json"):
    path = tmp_path / name
    path.write_text(json.dumps(document))
    return path


def _mutated(document: dict, resource_type: str, change) -> tuple[dict, dict]:
    document = copy.deepcopy(document)
    resource = next(r for r in document["resources"] if r["type"] == resource_type)
    change(resource["inputs"])
    return document, resource


def test_offline_clean_plan_exits_0(plan_document, tmp_path):
    result = run_offline(str(_write_plan(tmp_path, plan_document)))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert f"{len(plan_document['resources'])} resources" in result.stderr and "no violations" in result.stderr


@pytest.mark.parametrize("resource_type,change,rule", [
    (rules.VOLUME, lambda p: p.update(encrypted=False), "ebs-encrypted"),
    (rules.LAUNCH_TEMPLATE, lambda p: p["metadataOptions"].update(httpTokens="optional"), "imdsv2-required"),
])
def test_offline_mutated_plan_exits_1_naming_the_rule(plan_document, tmp_path, resource_type, change, rule):
    document, resource = _mutated(plan_document, resource_type, change)
    result = run_offline(str(_write_plan(tmp_path, document)))
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"{rule}: {resource['urn']}: ")
    assert "Traceback" not in result.stderr and "1 violation" in result.stderr


def test_offline_takes_the_pack_config(plan_document, tmp_path):
    """Like --policy-pack-config: the Nebula port comes from the pack's config file."""
    document, _ = _mutated(plan_document, rules.SG_INGRESS, lambda p: p.update(fromPort=5353, toPort=5353))
    path = _write_plan(tmp_path, document)
    moved = run_offline(str(path))
    assert moved.returncode == 1 and moved.stdout.startswith("no-open-ingress: ")
    (tmp_path / "config.json").write_text(json.dumps({"no-open-ingress": {"nebulaPort": 5353}}))
    assert run_offline(str(path), "--config", str(tmp_path / "config.json")).returncode == 0


@pytest.mark.parametrize("content", [None, "{not json", '{"resources": 3}', "[]", b"\xff\xfe"])
def test_offline_unusable_file_exits_2_with_one_line(tmp_path, content):
    path = tmp_path / "plan.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content)
    result = run_offline(str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], result.stderr
    assert lines[0].startswith("error: ") and result.stdout == ""


def test_offline_help_explains():
    result = run_offline("--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for words in ("PLAN.json", "tools/plan.py --json", "exit", "--config"):
        assert words in text, words
    missing = run_offline("nosuch.json", cwd=ROOT)
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1


def test_pack_starts_as_the_language_host_starts_it():
    """`pulumi preview --policy-pack policy` runs `python -u -m pulumi.policy ENGINE DIR`
    in the pack's folder, which runs `__main__.py` by path: that is the analyzer, not
    the offline command line, and it prints its port."""
    import subprocess

    process = subprocess.Popen([sys.executable, "-u", "-m", "pulumi.policy", "127.0.0.1:1", str(ROOT / "policy")],
                               cwd=ROOT / "policy", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert int(process.stdout.readline()) > 0
    finally:
        process.kill()
        process.wait()
