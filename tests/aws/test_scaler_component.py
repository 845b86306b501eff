"""The Scaler component under Pulumi mocks (tests/aws/programs/scaler_only.py builds it
with two stand-in workers): least privilege, schedule, alarms, packaging."""

import ast
import json
import sys
from pathlib import Path

import pytest

from tests import iam_sim
from tools import harness

PROGRAM = Path(__file__).resolve().parent / "programs" / "scaler_only.py"
WORKER_IDS = ["i-0aaaaaaaaaaaaaaa1", "i-0bbbbbbbbbbbbbbb2"]
WORKER_ARNS = [f"arn:aws:ec2:us-east-1:123456789012:instance/{i}" for i in WORKER_IDS]
ALLOWED_IMPORTS = set(sys.stdlib_module_names) | {"boto3", "botocore", "scaler_lambda"}


def plan_with(**overrides) -> harness.Plan:
    config = harness.stack_config("dev", {f"hybrid-llm:{k}": v for k, v in overrides.items()})
    return harness.run(config, program=PROGRAM)


@pytest.fixture(scope="module")
def plan() -> harness.Plan:
    return plan_with()


def one(plan, type_token):
    found = plan.of_type(type_token)
    assert len(found) == 1, [r.name for r in found]
    return found[0]


def function(plan):
    return one(plan, "aws:lambda/function:Function")


def policy(plan) -> dict:
    return json.loads(one(plan, "aws:iam/rolePolicy:RolePolicy").plain()["policy"])


def log_group(plan):
    return one(plan, "aws:cloudwatch/logGroup:LogGroup")


def test_stop_is_allowed_on_exactly_the_worker_arns(plan):
    statements = [s for s in policy(plan)["Statement"] if "ec2:StopInstances" in s["Action"]]
    assert len(statements) == 1 and sorted(statements[0]["Resource"]) == sorted(WORKER_ARNS)
    docs = [policy(plan)]
    for arn in WORKER_ARNS:
        assert iam_sim.allowed(docs, "ec2:StopInstances", arn)
    other = "arn:aws:ec2:us-east-1:123456789012:instance/i-0ccccccccccccccc3"
    assert not iam_sim.allowed(docs, "ec2:StopInstances", other)
    for action in ("ec2:TerminateInstances", "ec2:StartInstances", "ec2:ModifyInstanceAttribute"):
        assert not iam_sim.allowed(docs, action, WORKER_ARNS[0])
    # It may note why it stopped a worker on that worker, and tag nothing else.
    assert all(iam_sim.allowed(docs, "ec2:CreateTags", arn) for arn in WORKER_ARNS)
    assert not iam_sim.allowed(docs, "ec2:CreateTags", other)


def test_no_wildcard_resource_on_any_write_action(plan):
    """Writes name exact ARNs: the workers, and the streams of its own log group."""
    own_streams = f"{log_group(plan).state['arn']}:*"
    reads = ("Describe", "Get", "List")
    for statement in policy(plan)["Statement"]:
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        if any(not a.split(":")[1].startswith(reads) for a in statement["Action"]):
            assert set(resources) <= set(WORKER_ARNS) | {own_streams}, statement
    star = {a for s in policy(plan)["Statement"] if s["Resource"] == "*" for a in s["Action"]}
    assert star == {"ec2:DescribeInstances", "cloudwatch:GetMetricData"}


def test_logs_go_only_to_its_own_log_group_with_a_retention(plan):
    group = log_group(plan)
    fn = function(plan).plain()
    assert group.plain()["name"] == f"/aws/lambda/{fn['name']}"
    assert group.plain()["retentionInDays"] > 0
    assert fn["loggingConfig"]["logGroup"] == group.plain()["name"]
    docs = [policy(plan)]
    own_stream = f"{group.state['arn']}:log-stream:2026/11/23/[$LATEST]abc"
    assert iam_sim.allowed(docs, "logs:PutLogEvents", own_stream)
    assert iam_sim.allowed(docs, "logs:CreateLogStream", own_stream)
    other = "arn:aws:logs:us-east-1:123456789012:log-group:/aws/lambda/someone-else:log-stream:x"
    assert not iam_sim.allowed(docs, "logs:PutLogEvents", other)
    assert not iam_sim.allowed(docs, "logs:CreateLogGroup", group.state["arn"])


def test_function_settings(plan):
    fn = function(plan).plain()
    # No reservation: accounts with a concurrency quota of 10 or 50 refuse any.
    assert "reservedConcurrentExecutions" not in fn
    major, minor = fn["runtime"].removeprefix("python").split(".")
    assert fn["runtime"].startswith("python") and (int(major), int(minor)) >= (3, 12)
    role = one(plan, "aws:iam/role:Role")
    assert fn["role"] == role.state["arn"]
    trust = json.loads(role.plain()["assumeRolePolicy"])
    assert trust["Statement"][0]["Principal"] == {"Service": "lambda.amazonaws.com"}
    invoke = one(plan, "aws:lambda/functionEventInvokeConfig:FunctionEventInvokeConfig").plain()
    assert invoke["maximumRetryAttempts"] == 0


def test_environment_contract_follows_config():
    plan = plan_with(idleMinutes="25", maxRunHours="6")
    variables = function(plan).plain()["environment"]["variables"]
    assert variables == {"GPU_INSTANCE_IDS": ",".join(WORKER_IDS), "IDLE_MINUTES": "25",
                         "MAX_RUN_HOURS": "6", "NOT_READY_MINUTES": "30", "HIBERNATE": "false",
                         "METRIC_NAMESPACE": "HybridLLM", "METRIC_NAME": "Activity",
                         "READY_METRIC_NAME": "Ready"}


def test_the_environment_it_sets_is_the_one_the_handler_reads(plan):
    """Every variable parses, and the settings match the stack's config."""
    from scaler_lambda import handler

    env = handler.read_env(function(plan).plain()["environment"]["variables"])
    config = harness.stack_config("dev")
    assert env.settings.idle_minutes == int(config["hybrid-llm:idleMinutes"])
    assert env.settings.max_run_hours == int(config["hybrid-llm:maxRunHours"]) > 0
    assert (env.metric_name, env.ready_metric_name) == ("Activity", "Ready")


def test_schedule_from_config_and_permission_scoped_to_the_rule():
    plan = plan_with(scalerSchedule="rate(5 minutes)")
    rule = one(plan, "aws:cloudwatch/eventRule:EventRule")
    assert rule.plain()["scheduleExpression"] == "rate(5 minutes)"
    fn = function(plan)
    permission = one(plan, "aws:lambda/permission:Permission").plain()
    assert permission["sourceArn"] == rule.state["arn"]
    assert (permission["principal"], permission["action"]) == ("events.amazonaws.com", "lambda:InvokeFunction")
    assert permission["function"] == fn.state["name"]
    target = one(plan, "aws:cloudwatch/eventTarget:EventTarget").plain()
    assert (target["rule"], target["arn"]) == (rule.state["name"], fn.state["arn"])


def test_default_schedule_is_every_minute(plan):
    assert one(plan, "aws:cloudwatch/eventRule:EventRule").plain()["scheduleExpression"] == "rate(1 minute)"


def test_alarms_on_function_errors_and_worker_errors(plan):
    alarms = {a.name: a.plain() for a in plan.of_type("aws:cloudwatch/metricAlarm:MetricAlarm")}
    fn = function(plan).state["name"]
    errors = [a for a in alarms.values() if a["namespace"] == "AWS/Lambda"]
    assert len(errors) == 1 and errors[0]["metricName"] == "Errors"
    assert errors[0]["dimensions"] == {"FunctionName": fn}
    assert errors[0]["comparisonOperator"] == "GreaterThanThreshold" and errors[0]["threshold"] == 0
    metric_filter = one(plan, "aws:cloudwatch/logMetricFilter:LogMetricFilter").plain()
    assert metric_filter["logGroupName"] == log_group(plan).plain()["name"]
    transform = metric_filter["metricTransformation"]
    worker = [a for a in alarms.values() if a["metricName"] == transform["name"]]
    assert len(worker) == 1 and worker[0]["namespace"] == transform["namespace"]


def test_error_filter_matches_the_handlers_error_lines(plan, capsys):
    """The handler's ERROR line has the field and value the filter pattern names."""
    from scaler_lambda import handler

    class Broken:
        def __getattr__(self, name):
            def fail(**kwargs):
                raise LookupError("no such worker")
            return fail

    handler.run({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "5"}, make_client=lambda s: Broken())
    line = json.loads(capsys.readouterr().out)
    pattern = one(plan, "aws:cloudwatch/logMetricFilter:LogMetricFilter").plain()["pattern"]
    field, value = pattern.strip("{} ").split(" = ")
    assert line[field.removeprefix("$.")] == json.loads(value)


def test_archive_holds_the_handler_and_imports_only_stdlib_and_boto3(plan):
    code = function(plan).inputs["code"]
    handler_path = function(plan).plain()["handler"]
    module, func = handler_path.rsplit(".", 1)
    files = {name: Path(asset.path) for name, asset in code.assets.items()}
    assert f"{module.replace('.', '/')}.py" in files
    assert all(name.endswith(".py") for name in files)
    for name, path in files.items():
        tree = ast.parse(path.read_text())
        if name == f"{module.replace('.', '/')}.py":
            assert func in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                roots = {(node.module or "").split(".")[0]}
            else:
                continue
            assert roots <= ALLOWED_IMPORTS, (name, roots)
            if roots == {"scaler_lambda"} and isinstance(node, ast.ImportFrom):
                assert f"{node.module.replace('.', '/')}.py" in files, node.module


def test_decision_module_has_no_aws_dependency(plan):
    decision = Path(function(plan).inputs["code"].assets["scaler_lambda/decision.py"].path)
    names = {a.name.split(".")[0] for n in ast.walk(ast.parse(decision.read_text()))
             if isinstance(n, ast.Import) for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(ast.parse(decision.read_text()))
              if isinstance(n, ast.ImportFrom) and n.module}
    assert not names & {"boto3", "botocore"}


def test_policy_is_published_as_deployed(plan):
    assert json.loads(plan.file("iam/scaler-policy.json").content) == policy(plan)
    assert json.loads(plan.file("iam/scaler-trust.json").content) == json.loads(
        one(plan, "aws:iam/role:Role").plain()["assumeRolePolicy"])


def test_outputs(plan):
    outputs = {k: v.value for k, v in plan.outputs.items()}
    fn = function(plan)
    assert outputs["scalerFunctionName"] == fn.state["name"] == "hybrid-llm-dev-scaler"
    assert outputs["scalerFunctionArn"] == fn.state["arn"]
    assert outputs["scalerRuleArn"] == one(plan, "aws:cloudwatch/eventRule:EventRule").state["arn"]
    assert outputs["scalerLogGroup"] == "/aws/lambda/hybrid-llm-dev-scaler"
    component = one(plan, "hybrid-llm:index:Scaler")
    assert all(r.parent for r in plan.resources if r.custom)
    assert {r.parent for r in plan.resources if r.custom} <= {component.urn} | {
        r.urn for r in plan.resources if r.parent == component.urn}


def test_mismatched_ids_and_arns_are_refused():
    from components.aws.scaler import Scaler, ScalerArgs

    with pytest.raises(ValueError, match="one instance ARN per instance id"):
        Scaler("s", ScalerArgs(instance_ids=["i-1", "i-2"], instance_arns=["arn:1"],
                               idle_minutes=5, schedule="rate(1 minute)"))
