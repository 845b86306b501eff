"""hybrid-llm: an on-demand cloud GPU for a homelab Kubernetes cluster.

Config in, components built, outputs out. Resource logic lives in components/.
"""

import pulumi
import pulumi_aws as aws

from components.config import load_config
from components.aws.network import Network, NetworkArgs
from components import inventory
from components.mesh import nebula_config, placement
from components.mesh.nebula import NebulaMesh, NebulaMeshArgs
from components.aws.gpu_worker import GpuWorker, GpuWorkerArgs
from components.aws.lighthouse import Lighthouse, LighthouseArgs
from components.aws.scaler import Scaler, ScalerArgs
from components import costs, liqo_manifests
from components.aws.budget import CostGuard, CostGuardArgs
from components.aws.activator_identity import ActivatorIdentity, ActivatorIdentityArgs
from components.homelab.homelab import Homelab, HomelabArgs, TeardownSettings, WorkerPeer
from components.homelab.nebula import HomelabNode

cfg = load_config()

aws_provider = aws.Provider(
    "aws",
    region=cfg.region,
    # No `profile`: provider inputs are kept in the state and `pulumi destroy`
    # reuses them, and a named profile overrides environment credentials, so a
    # profile recorded on a laptop breaks a destroy from CI. Credentials come from
    # the environment of whoever runs Pulumi (AWS_PROFILE, keys, OIDC).
    allowed_account_ids=list(cfg.aws_allowed_account_ids) or None,
    default_tags=aws.ProviderDefaultTagsArgs(
        tags={"Project": cfg.project, "Stack": cfg.stack, "ManagedBy": "pulumi"}
    ),
)
on_aws = pulumi.ResourceOptions(providers=[aws_provider])

mesh_hosts = inventory.hosts(cfg)
ec2_lighthouse = cfg.lighthouse_placement == "ec2"
network = Network(
    cfg.resource_prefix,
    NetworkArgs(vpc_cidr=cfg.vpc_cidr, nebula_port=cfg.nebula_port,
                availability_zone=cfg.availability_zone,
                instance_types=placement.zone_instance_types(cfg),
                public_hosts=placement.aws_lighthouses(mesh_hosts), ec2_lighthouse=ec2_lighthouse,
                lighthouse_udp_ports=placement.home_udp_ports(cfg)),
    opts=on_aws,
)

mesh = NebulaMesh(
    cfg.resource_prefix,
    NebulaMeshArgs(
        hosts=mesh_hosts, network=cfg.nebula_cidr, port=cfg.nebula_port,
        lighthouse_endpoints=placement.public_endpoints(cfg, mesh_hosts, network.public_ips),
        lan_endpoints=placement.lan_endpoints(cfg),
        ssm_prefixes={h.name: inventory.ssm_prefix(cfg, h) for h in mesh_hosts if h.on_aws},
        ca_validity_hours=cfg.nebula_ca_validity_hours,
        cert_validity_hours=cfg.nebula_cert_validity_hours,
        early_renewal_hours=cfg.nebula_early_renewal_hours,
    ),
    opts=on_aws,
)

lighthouse = Lighthouse(
    f"{cfg.resource_prefix}-lighthouse",
    LighthouseArgs(
        instance_type=cfg.lighthouse_instance_type, region=cfg.region,
        ssm_prefix=inventory.ssm_prefix(cfg, "lighthouse"),
        subnet_id=network.subnet_id, security_group_id=network.lighthouse_security_group_id,
        eip_allocation_id=network.eip_allocation_ids["lighthouse"],
        disable_api_termination=cfg.lighthouse_disable_api_termination, ami_id=cfg.lighthouse_ami_id,
        nebula_parameters=mesh.parameters["lighthouse"], boot_after=network.internet_route,
    ),
    opts=on_aws,
) if ec2_lighthouse else None
gpu_hosts = [h for h in mesh_hosts if h.role == "gpu"]
workers = {
    host.name: GpuWorker(
        f"{cfg.resource_prefix}-{host.name}",
        GpuWorkerArgs(
            host=host.name, nebula_ip=host.overlay_ip, region=cfg.region,
            ssm_prefix=inventory.ssm_prefix(cfg, host), instance_type=cfg.gpu_instance_type,
            subnet_id=network.subnet_id, availability_zone=network.availability_zone,
            security_group_id=network.worker_security_group_id,
            pod_cidr=host.pod_cidr, service_cidr=cfg.gpu_cluster_service_cidr,
            liqo_cluster_id=liqo_manifests.worker_cluster_id(cfg.project, cfg.stack, host.name),
            consumer_cluster_id=cfg.homelab_cluster_id,
            root_volume_gib=cfg.gpu_root_volume_gib, model_volume_gib=cfg.model_volume_gib,
            spot=cfg.gpu_spot, spot_max_price=cfg.gpu_spot_max_price,
            ami_id=cfg.gpu_ami_id,
            protect_model_volume=cfg.protect_model_volume, serves_ollama=host is gpu_hosts[0],
            nebula_parameters=mesh.parameters[host.name], boot_after=network.internet_route,
            eip_allocation_id=network.eip_allocation_ids.get(host.name),
        ),
        opts=on_aws,
    )
    for host in gpu_hosts
}

scaler = Scaler(
    f"{cfg.resource_prefix}-scaler",
    ScalerArgs(
        instance_ids=[w.instance_id for w in workers.values()],
        instance_arns=[w.instance_arn for w in workers.values()],
        idle_minutes=cfg.idle_minutes, schedule=cfg.scaler_schedule,
        max_run_hours=cfg.max_run_hours, hibernate=cfg.gpu_hibernate,
        name_prefix=cfg.resource_prefix,
    ),
    opts=on_aws,
)

pulumi.export("region", cfg.region)
pulumi.export("vpcId", network.vpc_id)
pulumi.export("subnetId", network.subnet_id)
pulumi.export("availabilityZone", network.availability_zone)
pulumi.export("lighthousePlacement", cfg.lighthouse_placement)
pulumi.export("lighthouseEndpoints", mesh.lighthouse_endpoints)
pulumi.export("elasticIps", network.public_ips)
pulumi.export("nebulaIps", mesh.overlay_ips)
pulumi.export("nebulaCaCert", mesh.ca_cert_pem)
pulumi.export("lighthouseInstanceId", lighthouse.instance_id if lighthouse else None)
pulumi.export("workerInstanceIds", {name: w.instance_id for name, w in workers.items()})
pulumi.export("workerNebulaIps", {h.name: str(h.overlay_ip) for h in gpu_hosts})
pulumi.export("kubeconfigs", pulumi.Output.secret({name: w.kubeconfig for name, w in workers.items()}))
pulumi.export("modelVolumeIds", {name: w.model_volume_id for name, w in workers.items()})
pulumi.export("scalerFunctionName", scaler.function_name)
pulumi.export("scalerFunctionArn", scaler.function_arn)
pulumi.export("scalerRuleArn", scaler.rule_arn)
pulumi.export("scalerLogGroup", scaler.log_group_name)

if cfg.homelab_kubeconfig is not None:
    identity = ActivatorIdentity(f"{cfg.resource_prefix}-activator", ActivatorIdentityArgs(
        instance_arns=[w.instance_arn for w in workers.values()], user_name=f"{cfg.resource_prefix}-activator"),
        opts=on_aws)
    homelab = Homelab(f"{cfg.resource_prefix}-homelab", HomelabArgs(
        kubeconfig=cfg.homelab_kubeconfig, cluster_id=cfg.homelab_cluster_id,
        pod_cidr=cfg.homelab_pod_cidr, service_cidr=cfg.homelab_service_cidr,
        nodes=[HomelabNode(h.name, mesh.host_files[h.name].cert_pem, mesh.host_files[h.name].key_pem,
                           config_yaml=mesh.host_files[h.name].config_yaml if h.lighthouse else None,
                           listen_port=nebula_config.listen_port(h, cfg.nebula_port) or None)
               for h in mesh_hosts if h.role == "homelab"],
        nebula_ca_pem=mesh.ca_cert_pem, nebula_config_yaml=mesh.homelab_config_yaml,
        snat_script=mesh.homelab_snat_script, node_label=cfg.homelab_node_label,
        workers=[WorkerPeer(
            peer=liqo_manifests.Peer(w.liqo_cluster_id, host.overlay_ip),
            instance_id=w.instance_id, capacity=w.capacity,
            server_ca_pem=w.pki.server_ca_cert_pem, client_ca_cert_pem=w.pki.client_ca_cert_pem,
            client_ca_key_pem=w.pki.client_ca_key_pem)
            for host, w in zip(gpu_hosts, workers.values())],
        models=cfg.models, model_volume_gib=cfg.model_volume_gib,
        region=cfg.region, activator_access_key_id=identity.access_key_id,
        activator_secret_access_key=identity.secret_access_key,
        mesh_path=[*workers.values(), *([lighthouse] if lighthouse else [])],
        teardown=TeardownSettings(cfg.region),
    ))
    pulumi.export("homelab", {"ollamaUrl": homelab.ollama_url, "virtualNodes": homelab.virtual_nodes,
                              "nebulaNamespace": homelab.nebula_namespace})
else:
    pulumi.export("homelab", "not installed: set hybrid-llm:homelabKubeconfig with "
                             "`pulumi config set --secret hybrid-llm:homelabKubeconfig \"$(cat kubeconfig)\"`")

if cfg.budget_monthly_usd:
    CostGuard(f"{cfg.resource_prefix}-cost", CostGuardArgs(cfg.budget_monthly_usd, cfg.budget_emails), opts=on_aws)
bill = costs.try_bill(cfg)
pulumi.export("costIdleMonthlyUsd", round(bill.idle_monthly_usd, 2) if bill else None)
pulumi.export("costActiveHourlyUsd", round(bill.active_hourly_usd, 4) if bill else None)
