"""The Nebula lighthouse: a small always-on instance behind the stack's Elastic IP.

Its address belongs to the network component (every host's static_host_map names
it), so replacing this instance never changes what the mesh dials. The AMI is
Amazon Linux 2023 for the instance type's architecture; the boot script only
installs, and systemd units read the host's Nebula files from SSM at each start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws

from components import instance_types, versions
from components.aws import hostboot
from components.generated import publish
from components.aws.hostboot import BootFile
from components.mesh.nebula import FILES as NEBULA_FILES
from components.mesh.nebula_config import PKI_DIR

AL2023_AMI_PARAMETER = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-{arch}"
ROOT_VOLUME_GIB = 8          # the AL2023 snapshot size; nebula needs nothing more
_RELEASE_ARCH = {"x86_64": "amd64", "arm64": "arm64"}


def nebula_boot_files(region: str, ssm_prefix: str) -> list[BootFile]:
    """The fetch script and the units every Nebula host on AWS runs: fetch at each
    start, nebula itself, and a daily refresh that reloads nebula with renewed files
    (the lighthouse never stops, so start-time fetching alone would let it expire)."""
    fetch = {"ssm_prefix": ssm_prefix, "nebula_dir": PKI_DIR,
             "files": " ".join(f"{name}:{'0600' if name.endswith('.key') else '0644'}" for name in NEBULA_FILES)}
    units = "/etc/systemd/system"
    return [
        BootFile("/usr/local/sbin/hybrid-llm-ssm-fetch", "0755",
                 hostboot.render("ssm-fetch.sh", {"region": region})),
        BootFile(f"{units}/hybrid-llm-nebula-config.service", "0644",
                 hostboot.render("units/hybrid-llm-nebula-config.service", fetch)),
        BootFile(f"{units}/nebula.service", "0644",
                 hostboot.render("units/nebula.service", {"nebula_dir": PKI_DIR})),
        BootFile(f"{units}/hybrid-llm-nebula-refresh.service", "0644",
                 hostboot.render("units/hybrid-llm-nebula-refresh.service", fetch)),
        BootFile(f"{units}/hybrid-llm-nebula-refresh.timer", "0644",
                 hostboot.render("units/hybrid-llm-nebula-refresh.timer", {})),
    ]


def release_arch(instance_type: str) -> str:
    """`amd64`/`arm64`: how release downloads name the instance type's architecture."""
    return _RELEASE_ARCH[instance_types.architecture(instance_type)]


@dataclass
class LighthouseArgs:
    instance_type: str
    region: str
    ssm_prefix: str                              # the lighthouse's own parameter subtree
    subnet_id: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    eip_allocation_id: pulumi.Input[str]
    disable_api_termination: bool = False
    ami_id: Optional[str] = None
    """A pinned AMI; None takes the current AL2023 at creation and holds it."""
    nebula_parameters: Sequence[pulumi.Resource] = field(default_factory=list)
    """The host's Nebula SSM parameters; the instance boots only after they exist."""
    boot_after: Sequence[pulumi.Resource] = field(default_factory=list)
    """What the first boot needs in place, e.g. the subnet's internet route."""


class Lighthouse(pulumi.ComponentResource):
    """Instance, its role and profile, and the Elastic IP association."""

    instance_id: pulumi.Output[str]
    instance_arn: pulumi.Output[str]
    private_ip: pulumi.Output[str]
    role_name: pulumi.Output[str]

    def __init__(self, name: str, args: LighthouseArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:Lighthouse", name, None, opts)
        arch = instance_types.architecture(args.instance_type)
        ami = hostboot.resolve_ami(args.ami_id, AL2023_AMI_PARAMETER.format(arch=arch), "ami", self)

        account = hostboot.AwsAccount.lookup(args.region, self)
        policy = account.parameter_arn(args.ssm_prefix).apply(hostboot.own_parameters_policy)
        iam = hostboot.instance_role(f"{name}", "lighthouse", {"parameters": policy}, self, account)

        nebula = versions.NEBULA
        user_data = hostboot.render("lighthouse-boot.sh", {
            "boot_lib": hostboot.render("boot-lib.sh", {}).rstrip("\n"),
            "nebula_version": nebula.version,
            "nebula_url": nebula.url(release_arch(args.instance_type)),
            "nebula_sha256": nebula.digest(release_arch(args.instance_type)),
            "files": hostboot.install_block(nebula_boot_files(args.region, args.ssm_prefix)),
        })
        publish("lighthouse/boot.sh", user_data)

        instance = aws.ec2.Instance(
            f"{name}-instance",
            ami=ami.image_id,
            instance_type=args.instance_type,
            subnet_id=args.subnet_id,
            vpc_security_group_ids=[args.security_group_id],
            associate_public_ip_address=True,
            iam_instance_profile=iam.profile.name,
            disable_api_termination=args.disable_api_termination,
            metadata_options=aws.ec2.InstanceMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1,
            ),
            root_block_device=aws.ec2.InstanceRootBlockDeviceArgs(
                volume_type="gp3", volume_size=ROOT_VOLUME_GIB, encrypted=True, delete_on_termination=True,
            ),
            user_data=user_data,
            user_data_replace_on_change=True,
            tags={"Name": f"{name}-lighthouse", "Role": "lighthouse"},
            # A held AMI: a replaced lighthouse is a mesh outage.
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.nebula_parameters) + list(args.boot_after),
                                        ignore_changes=ami.ignore_changes),
        )
        aws.ec2.EipAssociation(
            f"{name}-eip", allocation_id=args.eip_allocation_id, instance_id=instance.id,
            opts=pulumi.ResourceOptions(parent=self),
        )

        self.instance_id = instance.id
        self.instance_arn = instance.arn
        self.private_ip = instance.private_ip
        self.role_name = iam.role.name
        self.register_outputs({
            "instance_id": self.instance_id,
            "instance_arn": self.instance_arn,
            "private_ip": self.private_ip,
            "role_name": self.role_name,
        })
