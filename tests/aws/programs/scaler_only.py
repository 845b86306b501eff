"""A program that builds only the Scaler, for its component tests: two stand-in
workers (the real GpuWorker ids and ARNs are wired in by __main__.py)."""

import pulumi

from components.config import load_config
from components.aws.scaler import Scaler, ScalerArgs

cfg = load_config()
WORKERS = {"i-0aaaaaaaaaaaaaaa1": "gpu-0", "i-0bbbbbbbbbbbbbbb2": "gpu-1"}

scaler = Scaler(
    f"{cfg.resource_prefix}-scaler",
    ScalerArgs(
        instance_ids=list(WORKERS),
        instance_arns=[f"arn:aws:ec2:{cfg.region}:123456789012:instance/{i}" for i in WORKERS],
        idle_minutes=cfg.idle_minutes, schedule=cfg.scaler_schedule,
        max_run_hours=cfg.max_run_hours, hibernate=cfg.gpu_hibernate,
        name_prefix=cfg.resource_prefix,
    ),
)
pulumi.export("scalerFunctionName", scaler.function_name)
pulumi.export("scalerFunctionArn", scaler.function_arn)
pulumi.export("scalerRuleArn", scaler.rule_arn)
pulumi.export("scalerLogGroup", scaler.log_group_name)
