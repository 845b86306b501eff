"""hybrid-llm: an on-demand cloud GPU for a homelab Kubernetes cluster.

Config in, components built, outputs out. Resource logic lives in components/.
"""

import pulumi
import pulumi_aws as aws

from components.config import load_config
from components.network import Network, NetworkArgs

cfg = load_config()

aws_provider = aws.Provider(
    "aws",
    region=cfg.region,
    default_tags=aws.ProviderDefaultTagsArgs(
        tags={"Project": cfg.project, "Stack": cfg.stack, "ManagedBy": "pulumi"}
    ),
)
on_aws = pulumi.ResourceOptions(providers=[aws_provider])

network = Network(
    cfg.resource_prefix,
    NetworkArgs(vpc_cidr=cfg.vpc_cidr, nebula_port=cfg.nebula_port,
                availability_zone=cfg.availability_zone),
    opts=on_aws,
)

pulumi.export("region", cfg.region)
pulumi.export("vpcId", network.vpc_id)
pulumi.export("subnetId", network.subnet_id)
pulumi.export("availabilityZone", network.availability_zone)
pulumi.export("lighthousePublicIp", network.lighthouse_public_ip)
