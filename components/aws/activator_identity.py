"""The AWS identity of the homelab's activator: an IAM user (the homelab is
outside AWS, so there is no instance role to assume) whose one inline policy
allows exactly what it does: start the stack's workers by ARN, describe
instances (a read with no resource type), and publish the Activity metric in the
project's namespace. Its access key is a secret output, written only into a
Kubernetes Secret on the homelab.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws

from components.aws.gpu_worker import METRIC_NAMESPACE
from components.generated import publish


def activator_policy(instance_arns: Sequence[str]) -> dict:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "DescribeWorkers", "Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*"},
            {"Sid": "StartWorkers", "Effect": "Allow", "Action": ["ec2:StartInstances"],
             "Resource": sorted(instance_arns)},
            {"Sid": "PublishActivity", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"], "Resource": "*",
             "Condition": {"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}}},
        ],
    }


@dataclass
class ActivatorIdentityArgs:
    instance_arns: Sequence[pulumi.Input[str]]
    user_name: str


class ActivatorIdentity(pulumi.ComponentResource):
    """User, inline policy and access key."""

    access_key_id: pulumi.Output[str]
    secret_access_key: pulumi.Output[str]      # secret
    user_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ActivatorIdentityArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:ActivatorIdentity", name, None, opts)
        user = aws.iam.User(f"{name}-user", name=args.user_name, path="/hybrid-llm/",
                            opts=pulumi.ResourceOptions(parent=self))
        text = pulumi.Output.all(*args.instance_arns).apply(
            lambda arns: json.dumps(activator_policy(arns), indent=2, sort_keys=True))
        publish("iam/activator-policy.json", text)
        policy = aws.iam.UserPolicy(f"{name}-policy", user=user.name, name="activator", policy=text,
                                    opts=pulumi.ResourceOptions(parent=user))
        key = aws.iam.AccessKey(f"{name}-key", user=user.name,
                                opts=pulumi.ResourceOptions(parent=user, depends_on=[policy],
                                                            additional_secret_outputs=["secret"]))
        self.access_key_id = key.id
        self.secret_access_key = pulumi.Output.secret(key.secret)
        self.user_arn = user.arn
        self.register_outputs({"access_key_id": self.access_key_id, "user_arn": self.user_arn})
