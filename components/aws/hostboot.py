"""What the lighthouse and the GPU workers share: rendering the boot templates in
`userdata/`, and an instance role that may read only its own SSM parameters.

Templates use `@@{name}` placeholders so shell's own `$VAR` needs no escaping; a
placeholder without a value, or a value without a placeholder, is an error rather
than a silently broken boot script.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Optional

import pulumi
import pulumi_aws as aws

from components.config import NAMESPACE, ConfigError
from components.generated import publish

USERDATA = Path(__file__).resolve().parents[2] / "userdata"
_HEREDOC_END = "HYBRID_LLM_EOF"
# Session Manager (shell without SSH) for every instance; AWS's managed policy.
SSM_CORE_POLICY = "arn:{partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
PARAMETER_READS = ["ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath"]


class _BootTemplate(string.Template):
    delimiter = "@@"
    idpattern = r"[a-z][a-z0-9_]*"
    flags = 0


def render(template: str, values: Mapping[str, object]) -> str:
    """`userdata/<template>` with every `@@{name}` replaced; names must match exactly."""
    text = _BootTemplate((USERDATA / template).read_text())
    wanted = set(text.get_identifiers())
    given = set(values)
    if wanted != given:
        raise ValueError(f"userdata/{template}: missing values {sorted(wanted - given)}, "
                         f"unused values {sorted(given - wanted)}")
    return text.substitute({k: str(v) for k, v in values.items()})


@dataclass(frozen=True)
class BootFile:
    """A file the first boot writes onto the instance."""

    path: str        # absolute path on the instance
    mode: str        # octal, e.g. "0644"
    content: str


def install_block(files: list[BootFile]) -> str:
    """Shell that writes these files (one quoted heredoc each, so nothing expands)."""
    blocks = []
    for item in files:
        if re.search(rf"^{_HEREDOC_END}$", item.content, re.MULTILINE):
            raise ValueError(f"{item.path}: content contains the heredoc terminator")
        blocks.append(render("write-file.sh.tmpl", {
            "path": item.path, "mode": item.mode,
            "content": item.content.rstrip("\n"), "end": _HEREDOC_END,
        }).rstrip("\n"))
    return "\n".join(blocks)


@dataclass(frozen=True)
class Ami:
    """The AMI an instance boots, and the property to hold (`ignore_changes`)."""

    image_id: pulumi.Input[str]
    ignore_changes: list[str]
    owners: Optional[list[str]] = None
    """Who must own it: `amazon` for a public parameter's AMI; a pinned one may be anyone's."""


def resolve_ami(pinned: Optional[str], public_parameter: str, image_property: str,
                parent: pulumi.Resource) -> Ami:
    """A pinned AMI as given; else the one AWS's public SSM parameter names now,
    held after creation: "latest" moves every few weeks, and following it would
    replace the instance on an unrelated `pulumi up`."""
    if pinned:
        return Ami(pinned, [])
    latest = aws.ssm.get_parameter_output(name=public_parameter, opts=pulumi.InvokeOutputOptions(parent=parent))
    return Ami(latest.value, [image_property], owners=["amazon"])


def describe_ami(ami: Ami, parent: pulumi.Resource) -> pulumi.Output[aws.ec2.GetAmiResult]:
    """The AMI's own description. A held AMI is eventually deprecated (public AMIs
    two years after creation), and DescribeImages finds a deprecated one through a
    filter only with IncludeDeprecated: without it every later `up` would fail."""
    return aws.ec2.get_ami_output(
        filters=[aws.ec2.GetAmiFilterArgs(name="image-id", values=[ami.image_id])],
        owners=ami.owners, include_deprecated=True,
        opts=pulumi.InvokeOutputOptions(parent=parent))


def root_device(image: aws.ec2.GetAmiResult, root_gib: int, key: str) -> str:
    """The AMI's root device name, once the root volume asked for is at least its
    snapshot (RunInstances refuses a smaller one): a `ConfigError` naming `key`.
    `root_gib` 0 asks for the snapshot's own size."""
    for mapping in image.block_device_mappings or []:
        if mapping.device_name == image.root_device_name:
            size = (mapping.ebs or {}).get("volume_size")
            if size and root_gib and root_gib < int(size):
                raise ConfigError(f"{NAMESPACE}:{key}: {root_gib} GiB is smaller than the root snapshot "
                                  f"of {image.image_id} ({size} GiB), and EC2 launches no root volume "
                                  f"smaller than its snapshot; set it to 0 (the AMI's own size) or to "
                                  f"{size} or more")
    return image.root_device_name


@dataclass
class AwsAccount:
    """Partition and account id of the stack's AWS account, for building ARNs."""

    partition: pulumi.Output[str]
    account_id: pulumi.Output[str]
    region: str

    @staticmethod
    def lookup(region: str, parent: pulumi.Resource) -> "AwsAccount":
        opts = pulumi.InvokeOutputOptions(parent=parent)
        return AwsAccount(aws.get_partition_output(opts=opts).partition,
                          aws.get_caller_identity_output(opts=opts).account_id, region)

    def parameter_arn(self, ssm_prefix: str) -> pulumi.Output[str]:
        """`arn:<partition>:ssm:<region>:<account>:parameter<prefix>`."""
        return pulumi.Output.all(self.partition, self.account_id).apply(
            lambda pa: f"arn:{pa[0]}:ssm:{self.region}:{pa[1]}:parameter{ssm_prefix}")


def own_parameters_policy(prefix_arn: str) -> dict:
    """Read this host's parameters, and nothing else.

    AmazonSSMManagedInstanceCore (needed for Session Manager) allows
    ssm:GetParameter(s) on every parameter, and the account's aws/ssm key decrypts
    any SecureString, so an explicit Deny outside the host's own subtree is what
    keeps one instance from reading another host's keys."""
    own = f"{prefix_arn}/*"
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "ReadOwnParameters", "Effect": "Allow", "Action": PARAMETER_READS, "Resource": own},
            {"Sid": "NoOtherParameters", "Effect": "Deny",
             "Action": PARAMETER_READS + ["ssm:GetParameterHistory"], "NotResource": own},
        ],
    }


_EC2_TRUST = json.dumps({
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"},
                   "Action": "sts:AssumeRole"}],
})


@dataclass
class InstanceRole:
    role: aws.iam.Role
    profile: aws.iam.InstanceProfile


def instance_role(
    name: str,
    host: str,
    policies: Mapping[str, pulumi.Output[dict]],
    parent: pulumi.Resource,
    account: AwsAccount,
) -> InstanceRole:
    """Role + instance profile: Session Manager plus these inline policies, each
    also published as `iam/<host>/<policy>.json` for review."""
    child = pulumi.ResourceOptions(parent=parent)
    role = aws.iam.Role(
        f"{name}-role", assume_role_policy=_EC2_TRUST,
        description=f"hybrid-llm {host}: Session Manager and its own SSM parameters",
        opts=child,
    )
    publish(f"iam/{host}/trust.json", _EC2_TRUST)
    aws.iam.RolePolicyAttachment(
        f"{name}-ssm-core", role=role.name,
        policy_arn=account.partition.apply(lambda p: SSM_CORE_POLICY.format(partition=p)),
        opts=pulumi.ResourceOptions(parent=role),
    )
    attached = []
    for policy_name, document in policies.items():
        text = document.apply(lambda d: json.dumps(d, indent=2, sort_keys=True))
        publish(f"iam/{host}/{policy_name}.json", text)
        attached.append(aws.iam.RolePolicy(
            f"{name}-{policy_name}", role=role.id, name=policy_name, policy=text,
            opts=pulumi.ResourceOptions(parent=role),
        ))
    profile = aws.iam.InstanceProfile(
        f"{name}-profile", role=role.name,
        opts=pulumi.ResourceOptions(parent=parent, depends_on=attached),
    )
    return InstanceRole(role, profile)
