"""Scale to zero: a Lambda on an EventBridge schedule stops each GPU worker that
has had no work for `idleMinutes` since it was last ready, one that never became
ready, and one up `maxRunHours` (rules in scaler_lambda/decision.py).

Why it is shaped this way:
- The function's name is set, so its log group `/aws/lambda/<name>` is declared
  here with a retention and the function depends on it: the log group is the
  stack's (destroy removes it) and the role may write to it and nothing else.
- The role may stop exactly the workers it is given; DescribeInstances and
  GetMetricData are read actions without resource-level permissions, so `*`.
  The function reads two metrics of each running worker, `Activity` and `Ready`.
- No reserved concurrency: AWS keeps a minimum of unreserved concurrency (100, or
  10 and 50 on new accounts whose quota is that low), so reserving even 1 fails
  there, and it would fail after the workers exist. None is needed: each pass
  is self-contained and StopInstances is idempotent, so two overlapping passes
  at most both ask to stop the same idle worker. No async retries: a failed pass
  is simply re-run by the next tick.
- Two alarms: the function's own `Errors` (a crash, a broken environment), and a
  metric filter on its ERROR decision lines (an API failure on one worker, which
  the handler reports without crashing so the others are still decided).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws

from components.generated import publish
from components.aws.gpu_worker import METRIC_NAMESPACE
from scaler_lambda.decision import MAX_RUN_HOURS, NOT_READY_MINUTES

CODE_DIR = Path(__file__).resolve().parents[2] / "scaler_lambda"
CODE_FILES = ("__init__.py", "decision.py", "handler.py")
RUNTIME = "python3.13"
HANDLER = "scaler_lambda.handler.handler"
METRIC_NAME = "Activity"
READY_METRIC_NAME = "Ready"
ERROR_METRIC = "ScalerWorkerErrors"
# Matches the handler's decision lines for a worker it could not decide or stop.
ERROR_PATTERN = '{ $.level = "ERROR" }'
_LAMBDA_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
}


def code_archive() -> pulumi.AssetArchive:
    """Only the module's source files, so a stray __pycache__ never changes the hash."""
    return pulumi.AssetArchive({
        f"scaler_lambda/{file}": pulumi.FileAsset(str(CODE_DIR / file)) for file in CODE_FILES
    })


def scaler_policy(instance_arns: Sequence[str], log_group_arn: str) -> dict:
    """What the function may do: read instances and metrics, stop its workers and
    tag them with the stop's reason, write its own log group."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "DescribeWorkers", "Effect": "Allow", "Action": ["ec2:DescribeInstances"],
             "Resource": "*"},
            {"Sid": "StopWorkers", "Effect": "Allow", "Action": ["ec2:StopInstances"],
             "Resource": sorted(instance_arns)},
            # The stop's reason, as a tag on the worker it stopped (handler.STOP_REASON_TAG).
            {"Sid": "NoteStopReason", "Effect": "Allow", "Action": ["ec2:CreateTags"],
             "Resource": sorted(instance_arns)},
            {"Sid": "ReadActivity", "Effect": "Allow", "Action": ["cloudwatch:GetMetricData"],
             "Resource": "*"},
            {"Sid": "WriteOwnLogs", "Effect": "Allow",
             "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
             "Resource": f"{log_group_arn}:*"},
        ],
    }


@dataclass
class ScalerArgs:
    instance_ids: Sequence[pulumi.Input[str]]
    instance_arns: Sequence[pulumi.Input[str]]
    idle_minutes: int
    schedule: str
    """EventBridge schedule expression, e.g. rate(1 minute)."""
    max_run_hours: int = MAX_RUN_HOURS
    """0 turns the backstop off."""
    not_ready_minutes: int = NOT_READY_MINUTES
    """A worker whose Ollama has not answered this long after a start is stopped."""
    hibernate: bool = False
    name_prefix: Optional[str] = None
    """Physical function name is `<name_prefix>-scaler`; defaults to the component name."""
    log_retention_days: int = 14


class Scaler(pulumi.ComponentResource):
    """The idle-stop Lambda, its role, log group, schedule and alarms."""

    function_name: pulumi.Output[str]
    function_arn: pulumi.Output[str]
    rule_arn: pulumi.Output[str]
    log_group_name: pulumi.Output[str]
    errors_alarm_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ScalerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        if not args.instance_ids or len(args.instance_ids) != len(args.instance_arns):
            raise ValueError(f"Scaler {name}: needs one instance ARN per instance id "
                             f"({len(args.instance_ids)} ids, {len(args.instance_arns)} ARNs)")
        super().__init__("hybrid-llm:index:Scaler", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        function_name = f"{args.name_prefix or name}-scaler"

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs", name=f"/aws/lambda/{function_name}",
            retention_in_days=args.log_retention_days, opts=child,
        )
        trust = json.dumps(_LAMBDA_TRUST, indent=2, sort_keys=True)
        publish("iam/scaler-trust.json", trust)
        role = aws.iam.Role(
            f"{name}-role", assume_role_policy=trust,
            description="hybrid-llm scaler: stop idle GPU workers", opts=child,
        )
        policy_text = pulumi.Output.all(log_group.arn, *args.instance_arns).apply(
            lambda v: json.dumps(scaler_policy(v[1:], v[0]), indent=2, sort_keys=True))
        publish("iam/scaler-policy.json", policy_text)
        policy = aws.iam.RolePolicy(
            f"{name}-policy", role=role.id, name="scaler", policy=policy_text,
            opts=pulumi.ResourceOptions(parent=role),
        )

        function = aws.lambda_.Function(
            f"{name}-function",
            name=function_name,
            description="hybrid-llm: stop GPU workers with no work for idleMinutes",
            runtime=RUNTIME, architectures=["arm64"], handler=HANDLER,
            code=code_archive(), role=role.arn,
            timeout=60, memory_size=128,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables={
                "GPU_INSTANCE_IDS": pulumi.Output.all(*args.instance_ids).apply(",".join),
                "IDLE_MINUTES": str(args.idle_minutes),
                "MAX_RUN_HOURS": str(args.max_run_hours),
                "NOT_READY_MINUTES": str(args.not_ready_minutes),
                "HIBERNATE": "true" if args.hibernate else "false",
                "METRIC_NAMESPACE": METRIC_NAMESPACE,
                "METRIC_NAME": METRIC_NAME,
                "READY_METRIC_NAME": READY_METRIC_NAME,
            }),
            logging_config=aws.lambda_.FunctionLoggingConfigArgs(log_format="Text", log_group=log_group.name),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[log_group, policy]),
        )
        aws.lambda_.FunctionEventInvokeConfig(
            f"{name}-no-retries", function_name=function.name,
            maximum_retry_attempts=0, maximum_event_age_in_seconds=60, opts=child,
        )

        rule = aws.cloudwatch.EventRule(
            f"{name}-schedule", schedule_expression=args.schedule,
            description="hybrid-llm: run the idle check", opts=child,
        )
        permission = aws.lambda_.Permission(
            f"{name}-invoke", action="lambda:InvokeFunction", function=function.name,
            principal="events.amazonaws.com", source_arn=rule.arn, opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-target", rule=rule.name, arn=function.arn,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[permission]),
        )

        errors_alarm = aws.cloudwatch.MetricAlarm(
            f"{name}-errors",
            alarm_description="The scaler Lambda failed: idle GPU workers may keep running",
            namespace="AWS/Lambda", metric_name="Errors", dimensions={"FunctionName": function.name},
            statistic="Sum", period=300, evaluation_periods=1,
            comparison_operator="GreaterThanThreshold", threshold=0,
            treat_missing_data="notBreaching", opts=child,
        )
        aws.cloudwatch.LogMetricFilter(
            f"{name}-worker-errors-filter", log_group_name=log_group.name, pattern=ERROR_PATTERN,
            metric_transformation=aws.cloudwatch.LogMetricFilterMetricTransformationArgs(
                name=ERROR_METRIC, namespace=METRIC_NAMESPACE, value="1", default_value="0"),
            opts=child,
        )
        aws.cloudwatch.MetricAlarm(
            f"{name}-worker-errors",
            alarm_description="The scaler could not decide or stop a GPU worker (see its log group)",
            namespace=METRIC_NAMESPACE, metric_name=ERROR_METRIC,
            statistic="Sum", period=300, evaluation_periods=1,
            comparison_operator="GreaterThanThreshold", threshold=0,
            treat_missing_data="notBreaching", opts=child,
        )

        self.function_name = function.name
        self.function_arn = function.arn
        self.rule_arn = rule.arn
        self.log_group_name = log_group.name
        self.errors_alarm_arn = errors_alarm.arn
        self.register_outputs({
            "function_name": self.function_name,
            "function_arn": self.function_arn,
            "rule_arn": self.rule_arn,
            "log_group_name": self.log_group_name,
            "errors_alarm_arn": self.errors_alarm_arn,
        })
