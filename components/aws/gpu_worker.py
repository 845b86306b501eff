"""One GPU worker: a k3s single-node cluster on an instance that is stopped, never
terminated, when idle, with its models on a separate EBS volume.

Why these resources:
- A launch template carries everything about the machine (AMI, type, IMDSv2 with
  hop limit 1, encrypted gp3 root, profile, user data, market options);
  `aws.ec2.Instance` launches from it into the subnet. Hop limit 1 keeps pods off
  instance metadata: the role reads the k3s CA keys and the Nebula host key, and
  nothing in a pod needs it (the activity agent runs on the host).
- Spot uses RunInstances' own market options: a *persistent* request with
  interruption behaviour *stop* (the only request type that may stop). So an
  interruption, or the scaler's StopInstances, stops the instance and keeps both
  disks; StartInstances resumes it. `aws.ec2.SpotInstanceRequest` is not used: it
  models the request (the instance is only its `spot_instance_id`), and on-demand
  would need a second code path. A persistent request defaults to
  expiring after 7 days, so `valid_until` is set far ahead.
  Deleting an instance launched with a persistent request may leave the request
  open, and it would launch a new instance (terraform-provider-aws issue 38142):
  a `SpotGuard` (components/aws/spot_guard.py) cancels the request first.
- Replacement is delete-before-replace for the instance and the attachment: the
  model volume can be attached to one instance only (a create-first replacement
  fails with VolumeInUse), and a second persistent-spot GPU would run outside
  the scaler's list meanwhile. Delete order (dependents first): attachment (stop,
  detach) -> spot guard (cancel; AWS terminates the now stopped instance) ->
  instance. docs/lifecycle.md has the whole table.
- A stopped worker has no public IP, and the provider reads
  `associate_public_ip_address` back as false (a replacing field): it is in
  `ignore_changes`, so `pulumi refresh` while stopped plans no replacement.
- The model volume is its own resource in the instance's AZ, so it outlives the
  instance; the boot finds it by volume id and never reformats it.
- The PKI (components/aws/k3s_pki.py) makes the kubeconfig a stack output before the
  worker ever boots.
"""

from __future__ import annotations

import base64
import gzip
import ipaddress
from dataclasses import dataclass, field
from typing import Optional, Sequence

import pulumi
import pulumi_aws as aws
import yaml

from components import liqo_manifests, versions
from components.aws import hostboot, k3s_pki
from components.aws.spot_guard import SpotGuard
from components.generated import publish
from components.aws.hostboot import BootFile
from components.aws.lighthouse import nebula_boot_files
from components.mesh.nebula_config import OLLAMA_PORT, TUN_DEVICE
from scaler_lambda.handler import STOP_REASON_TAG, TEARDOWN_HOLD_TAG

DLAMI_PARAMETER = "/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-22.04/latest/ami-id"
METRIC_NAMESPACE = "HybridLLM"
NEBULA_IFACE = TUN_DEVICE
MODELS_DIR = "/var/lib/hybrid-llm/models"
# containerd's root under k3s's default --data-dir (k3s pkg/agent/config/config.go:
# <data-dir>/agent/containerd), bound onto the model volume at IMAGES_SUBDIR.
CONTAINERD_DIR = "/var/lib/rancher/k3s/agent/containerd"
IMAGES_SUBDIR = "containerd"
OLLAMA_MODELS_PV = "ollama-models"
OLLAMA_SELECTOR = "app.kubernetes.io/name=ollama"
# The activity agent (userdata/activity-agent.sh, whose header says why): a minute
# is busy if any GPU reading, one every ACTIVITY_SAMPLE_EVERY_SECONDS from the start
# of the minute until its second ACTIVITY_SAMPLE_UNTIL_SECOND, reaches
# ACTIVITY_GPU_BUSY_PERCENT; the Ready marker lives under ACTIVITY_RUN_DIR (tmpfs).
ACTIVITY_GPU_BUSY_PERCENT = 10
ACTIVITY_SAMPLE_EVERY_SECONDS = 2
ACTIVITY_SAMPLE_UNTIL_SECOND = 35
ACTIVITY_RUN_DIR = "/run/hybrid-llm"
MANIFESTS_DIR = "/var/lib/rancher/k3s/server/manifests"
# The chart's default affinity (values.yaml) requires one of three node labels
# that node-feature-discovery would set; a plain k3s node has none, so the
# plugin would never schedule. The chart documents this one as the way to force
# it; k3s sets it on the node from the start (--node-label).
GPU_PRESENT_LABEL = ("nvidia.com/gpu.present", "true")
# Far ahead: the API's default for a persistent request is 7 days from creation.
SPOT_REQUEST_VALID_UNTIL = "2099-01-01T00:00:00Z"
_WAIT_NEBULA_SECONDS = 180
# Read back as false while the worker is stopped (no public IP); it would force
# a replacement on every refresh.
PUBLIC_IP_FIELD = "associatePublicIpAddress"
# The scaler notes each stop's rule in this tag (scaler_lambda/handler.py); a refresh
# would read it into the instance's tags and the next `up` would strip it.
STOP_REASON_FIELD = f'tags["{STOP_REASON_TAG}"]'
# Likewise the teardown wake's hold (components/teardown_wake.py).
TEARDOWN_HOLD_FIELD = f'tags["{TEARDOWN_HOLD_TAG}"]'
_WAIT_VOLUME_SECONDS = 900


def volume_device(volume_id: str) -> str:
    """The stable by-id path of an attached EBS volume on a Nitro instance."""
    return f"/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_{volume_id.replace('-', '')}"


def k3s_flags(host: str, address: ipaddress.IPv4Address, pod_cidr: ipaddress.IPv4Network,
              service_cidr: ipaddress.IPv4Network) -> list[str]:
    """k3s server flags: API and flannel on the overlay, the stack's own ranges
    (never k3s's 10.42/10.43 defaults, which collide with the usual Nebula range)."""
    return [
        f"--node-name={host}",
        f"--node-ip={address}",
        f"--advertise-address={address}",
        f"--tls-san={address}",
        f"--flannel-iface={NEBULA_IFACE}",
        f"--cluster-cidr={pod_cidr}",
        f"--service-cidr={service_cidr}",
        f"--cluster-dns={service_cidr.network_address + 10}",
        "--default-runtime=nvidia",
        f"--node-label={GPU_PRESENT_LABEL[0]}={GPU_PRESENT_LABEL[1]}",
        "--disable=traefik",
        "--write-kubeconfig-mode=0600",
    ]


def manifests(model_volume_gib: int, liqo_values: dict, consumer_id: str) -> dict[str, list[dict]]:
    """k3s auto-deploy manifests (applied at every k3s start) by file name, each a
    list of documents. Everything the worker needs for the homelab is here, so
    adding the homelab later never changes (and so never replaces) a worker."""
    return {
        "nvidia-device-plugin.yaml": [{
            "apiVersion": "helm.cattle.io/v1",
            "kind": "HelmChart",
            "metadata": {"name": "nvidia-device-plugin", "namespace": "kube-system"},
            "spec": {
                "repo": versions.DEVICE_PLUGIN_CHART.repo,
                "chart": versions.DEVICE_PLUGIN_CHART.name,
                "version": versions.DEVICE_PLUGIN_CHART.version,
                "targetNamespace": "nvidia-device-plugin",
                "createNamespace": True,
            },
        }],
        "liqo.yaml": [liqo_manifests.helm_chart(yaml.safe_dump(liqo_values, sort_keys=False))],
        "liqo-tenant.yaml": liqo_manifests.provider_manifests(consumer_id),
        # Ollama's models on the model volume at a fixed path, so a new instance
        # (new k3s datastore) binds the same directory and keeps the models. Liqo
        # provisions the offloaded claim with this class; the claimRef keeps the
        # volume for Ollama's claim alone.
        "ollama-models-pv.yaml": [
            {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
             "metadata": {"name": liqo_manifests.MODELS_STORAGE_CLASS, "labels": {"app.kubernetes.io/part-of": "hybrid-llm"}},
             "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "Immediate",
             "reclaimPolicy": "Retain"},
            {"apiVersion": "v1", "kind": "PersistentVolume",
             "metadata": {"name": OLLAMA_MODELS_PV, "labels": {"app.kubernetes.io/part-of": "hybrid-llm"}},
             "spec": {
                 "capacity": {"storage": f"{model_volume_gib}Gi"},
                 "accessModes": ["ReadWriteOnce"],
                 "persistentVolumeReclaimPolicy": "Retain",
                 "storageClassName": liqo_manifests.MODELS_STORAGE_CLASS,
                 "claimRef": {"namespace": liqo_manifests.OFFLOADED_NAMESPACE, "name": liqo_manifests.MODELS_CLAIM},
                 "hostPath": {"path": f"{MODELS_DIR}/ollama", "type": "DirectoryOrCreate"},
             }},
        ],
    }


# Kept back from what the homelab may ask for: k3s, Liqo and the agent run there too.
SYSTEM_RESERVE = {"cpu_millis": 500, "memory_mib": 2048}


def offered_capacity(instance: aws.ec2.GetInstanceTypeResult) -> dict:
    """The instance type's vCPUs, memory and GPUs (as EC2 describes them) less a
    reserve for the system, in Kubernetes quantities."""
    gpus = sum(g.count for g in instance.gpuses or [])
    return {"cpu": f"{instance.default_vcpus * 1000 - SYSTEM_RESERVE['cpu_millis']}m",
            "memory": f"{instance.memory_size - SYSTEM_RESERVE['memory_mib']}Mi",
            "gpus": gpus}


def render_manifest(documents: list[dict]) -> str:
    """One k3s manifest file: YAML documents separated by `---`."""
    return yaml.safe_dump_all(documents, sort_keys=False)


def activity_agent(region: str, serves_ollama: bool = True) -> str:
    """The activity agent as the worker runs it (/usr/local/sbin/hybrid-llm-activity).
    Its Ready check: Ollama's answer on the worker that runs Ollama, k3s's /readyz
    on the others (they serve GPU pods of the user's own, never Ollama)."""
    return hostboot.render("activity-agent.sh", {
        "region": region, "namespace": METRIC_NAMESPACE,
        "ollama_selector": OLLAMA_SELECTOR, "ollama_port": OLLAMA_PORT,
        "gpu_busy_percent": ACTIVITY_GPU_BUSY_PERCENT,
        "sample_every_seconds": ACTIVITY_SAMPLE_EVERY_SECONDS,
        "sample_until_second": ACTIVITY_SAMPLE_UNTIL_SECOND,
        "run_dir": ACTIVITY_RUN_DIR,
        "ready_check": "ollama" if serves_ollama else "k3s",
    })


def encode_user_data(text: str) -> str:
    """The launch template's user data: the boot script gzipped, then base64.

    EC2 counts the decoded bytes (at most 16384) and the whole boot script is larger;
    cloud-init gunzips user data itself before anything else (canonical/cloud-init
    `cloudinit/user_data.py` `convert_string` -> `util.decomp_gzip`), so the
    instance runs the same script. Deterministic: no file name and mtime 0, so the
    same text gives the same bytes. That matters because a changed user data is a
    new launch-template version, which replaces the worker (docs/lifecycle.md).
    The header's OS byte (index 9) is set to 255 ("unknown"): Python 3.11 and 3.12
    take it from zlib (3 on Unix), earlier and later versions write 255 (CPython
    issue 112346), and it is outside the CRC. Caveat: identical only on the same
    deflate; a Python linked against another implementation (zlib-ng, as on
    Fedora 40+) may compress to other bytes, and a deploy from there makes a new
    template version and so replaces the worker.
    """
    stream = gzip.compress(text.encode(), compresslevel=9, mtime=0)
    return base64.b64encode(stream[:9] + b"\xff" + stream[10:]).decode()


def metrics_policy() -> dict:
    """PutMetricData has no resource type, so the namespace condition is its scope."""
    return {
        "Version": "2012-10-17",
        "Statement": [{
            "Sid": "PublishActivity", "Effect": "Allow", "Action": ["cloudwatch:PutMetricData"],
            "Resource": "*",
            "Condition": {"StringEquals": {"cloudwatch:namespace": METRIC_NAMESPACE}},
        }],
    }


@dataclass
class GpuWorkerArgs:
    host: str                                    # gpu-N
    nebula_ip: ipaddress.IPv4Address
    region: str
    ssm_prefix: str
    instance_type: str
    subnet_id: pulumi.Input[str]
    availability_zone: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    pod_cidr: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network
    root_volume_gib: int
    model_volume_gib: int
    spot: bool = True
    spot_max_price: Optional[str] = None
    ami_id: Optional[str] = None
    protect_model_volume: bool = False
    serves_ollama: bool = True
    """The first worker runs Ollama; the others take GPU pods of the user's own."""
    nebula_parameters: Sequence[pulumi.Resource] = field(default_factory=list)
    """The host's Nebula SSM parameters; the instance boots only after they exist."""
    boot_after: Sequence[pulumi.Resource] = field(default_factory=list)
    """What the first boot needs in place, e.g. the subnet's internet route."""
    liqo_cluster_id: str = "gpu"
    """This worker's Liqo cluster id (components/liqo_manifests.py: never changes)."""
    consumer_cluster_id: str = "homelab"
    """The homelab's Liqo cluster id: the tenant this worker serves."""
    root_volume_key: str = "gpuRootVolumeGiB"
    """Config key named when the root volume is smaller than the AMI's snapshot."""
    eip_allocation_id: Optional[pulumi.Input[str]] = None
    """The stack's Elastic IP for this worker when it is a lighthouse (components/aws/network.py)."""


class GpuWorker(pulumi.ComponentResource):
    """Launch template, instance, model volume, IAM and k3s PKI of one worker."""

    instance_id: pulumi.Output[str]
    instance_arn: pulumi.Output[str]
    availability_zone: pulumi.Output[str]
    model_volume_id: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]               # secret
    launch_template_id: pulumi.Output[str]
    pki: k3s_pki.K3sPki
    """The worker's cluster CAs (the homelab's Liqo credential is signed by its client CA)."""
    capacity: pulumi.Output[dict]
    """What the homelab may ask of it through Liqo: cpu, memory, gpus."""
    liqo_cluster_id: str

    def __init__(self, name: str, args: GpuWorkerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:GpuWorker", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        host = args.host

        pki = k3s_pki.K3sPki(f"{name}-pki", k3s_pki.K3sPkiArgs(
            host=host, ssm_prefix=args.ssm_prefix, api_address=args.nebula_ip), opts=child)

        account = hostboot.AwsAccount.lookup(args.region, self)
        parameters = account.parameter_arn(args.ssm_prefix).apply(hostboot.own_parameters_policy)
        iam = hostboot.instance_role(
            name, host, {"parameters": parameters, "metrics": pulumi.Output.from_input(metrics_policy())},
            self, account)

        ami = hostboot.resolve_ami(args.ami_id, DLAMI_PARAMETER, "imageId", self)

        # The root mapping must name the AMI's own root device, or it adds a disk;
        # and it must be at least the AMI's snapshot size, or RunInstances fails.
        image = hostboot.describe_ami(ami, self)
        root_device = image.apply(lambda i: hostboot.root_device(i, args.root_volume_gib, args.root_volume_key))

        # The volume first: its id is in the boot script (the by-id device path).
        volume = aws.ebs.Volume(
            f"{name}-models",
            availability_zone=args.availability_zone, size=args.model_volume_gib,
            type="gp3", encrypted=True,
            tags={"Name": f"{name}-models", "Role": "models", "Worker": host},
            # Kept in AWS (retain_on_delete) when asked: `pulumi destroy` completes and the
            # models stay, as does a volume replaced by a change of the pinned AZ.
            opts=pulumi.ResourceOptions(parent=self, retain_on_delete=args.protect_model_volume),
        )
        liqo_values = liqo_manifests.provider_values(args.liqo_cluster_id, args.nebula_ip, args.pod_cidr, args.service_cidr)
        rendered = {file_name: render_manifest(documents) for file_name, documents in
                    manifests(args.model_volume_gib, liqo_values, args.consumer_cluster_id).items()}
        for file_name, text in rendered.items():
            publish(f"workers/{host}/manifests/{file_name}", text)
        user_data = volume.id.apply(lambda vid: self._user_data(args, vid, rendered))
        publish(f"workers/{host}/boot.sh", user_data)

        template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            description=f"hybrid-llm GPU worker {host}",
            image_id=ami.image_id,
            instance_type=args.instance_type,
            update_default_version=True,
            iam_instance_profile=aws.ec2.LaunchTemplateIamInstanceProfileArgs(arn=iam.profile.arn),
            metadata_options=aws.ec2.LaunchTemplateMetadataOptionsArgs(
                http_endpoint="enabled", http_tokens="required", http_put_response_hop_limit=1,
            ),
            block_device_mappings=[aws.ec2.LaunchTemplateBlockDeviceMappingArgs(
                device_name=root_device,
                # No size (gpuRootVolumeGiB 0): EC2 takes the snapshot's own, so a
                # new AMI release never changes the template (docs/lifecycle.md).
                ebs=aws.ec2.LaunchTemplateBlockDeviceMappingEbsArgs(
                    volume_type="gp3", volume_size=args.root_volume_gib or None,
                    encrypted="true", delete_on_termination="true",
                ),
            )],
            instance_market_options=self._market_options(args),
            user_data=user_data.apply(encode_user_data),
            tag_specifications=[
                aws.ec2.LaunchTemplateTagSpecificationArgs(
                    resource_type=kind, tags={"Name": f"{name}-{host}", "Role": "gpu-worker", "Worker": host})
                for kind in ("instance", "volume")
            ],
            # A held AMI: a new Deep Learning AMI release would otherwise change
            # the template and replace the worker (and start it) on any `up`.
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=ami.ignore_changes),
        )

        instance = aws.ec2.Instance(
            f"{name}-instance",
            launch_template=aws.ec2.InstanceLaunchTemplateArgs(
                id=template.id, version=template.latest_version.apply(str)),
            subnet_id=args.subnet_id,
            availability_zone=args.availability_zone,
            vpc_security_group_ids=[args.security_group_id],
            # A public address instead of a NAT gateway (~$32/month idle).
            associate_public_ip_address=True,
            tags={"Name": f"{name}-{host}", "Role": "gpu-worker", "Worker": host},
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=list(args.nebula_parameters) + pki.parameters + list(args.boot_after),
                delete_before_replace=True, ignore_changes=[PUBLIC_IP_FIELD, STOP_REASON_FIELD, TEARDOWN_HOLD_FIELD]),
        )
        # Created after the instance, deleted before it; the attachment waits for
        # it so that on delete the guard cancels only once the volume is detached.
        guard = SpotGuard(f"{name}-spot-guard", instance_id=instance.id, region=args.region,
                          opts=child) if args.spot else None
        aws.ec2.VolumeAttachment(
            f"{name}-models-attachment",
            instance_id=instance.id, volume_id=volume.id, device_name="/dev/sdf",
            # Detaching happens only on destroy or replacement, when the instance
            # goes anyway: stop it first so a mounted volume is never yanked.
            stop_instance_before_detaching=True,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True,
                                        depends_on=[guard] if guard else []),
        )

        if args.eip_allocation_id is not None:
            # Every argument replaces (terraform-provider-aws ec2_eip_association.go):
            # a new instance gets a new association, the address stays the stack's.
            aws.ec2.EipAssociation(
                f"{name}-eip-association", allocation_id=args.eip_allocation_id, instance_id=instance.id,
                opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True))

        self.instance_id = instance.id
        self.instance_arn = instance.arn
        self.availability_zone = instance.availability_zone
        self.model_volume_id = volume.id
        self.kubeconfig = pki.kubeconfig
        self.launch_template_id = template.id
        self.pki = pki
        self.liqo_cluster_id = args.liqo_cluster_id
        self.capacity = aws.ec2.get_instance_type_output(
            instance_type=args.instance_type, opts=pulumi.InvokeOutputOptions(parent=self)).apply(offered_capacity)
        self.register_outputs({
            "instance_id": self.instance_id,
            "instance_arn": self.instance_arn,
            "availability_zone": self.availability_zone,
            "model_volume_id": self.model_volume_id,
            "kubeconfig": self.kubeconfig,
            "launch_template_id": self.launch_template_id,
        })

    @staticmethod
    def _market_options(args: GpuWorkerArgs) -> Optional[aws.ec2.LaunchTemplateInstanceMarketOptionsArgs]:
        """Persistent spot that stops on interruption, or None (on-demand)."""
        if not args.spot:
            return None
        return aws.ec2.LaunchTemplateInstanceMarketOptionsArgs(
            market_type="spot",
            spot_options=aws.ec2.LaunchTemplateInstanceMarketOptionsSpotOptionsArgs(
                spot_instance_type="persistent",
                instance_interruption_behavior="stop",
                valid_until=SPOT_REQUEST_VALID_UNTIL,
                max_price=args.spot_max_price,
            ),
        )

    @staticmethod
    def _user_data(args: GpuWorkerArgs, volume_id: str, rendered_manifests: dict[str, str]) -> str:
        """The first-boot script with every unit, per-start script and manifest inside
        (`rendered_manifests`: k3s manifest text by file name)."""
        nebula, k3s = versions.NEBULA, versions.K3S
        sbin, units = "/usr/local/sbin", "/etc/systemd/system"
        tls_files = " ".join(f"{path}:{mode}" for path, mode in k3s_pki.tls_files())
        flags = " \\\n  ".join(k3s_flags(args.host, args.nebula_ip, args.pod_cidr, args.service_cidr))
        files = nebula_boot_files(args.region, args.ssm_prefix) + [
            BootFile(f"{sbin}/hybrid-llm-wait-nebula", "0755", hostboot.render("wait-nebula.sh", {
                "iface": NEBULA_IFACE, "address": args.nebula_ip, "timeout_seconds": _WAIT_NEBULA_SECONDS})),
            BootFile(f"{units}/hybrid-llm-nebula-ready.service", "0644",
                     hostboot.render("units/hybrid-llm-nebula-ready.service", {"iface": NEBULA_IFACE})),
            BootFile(f"{sbin}/hybrid-llm-model-volume", "0755", hostboot.render("model-volume.sh", {
                "device": volume_device(volume_id), "mountpoint": MODELS_DIR, "label": "hybrid-models",
                "images_dir": CONTAINERD_DIR, "images_subdir": IMAGES_SUBDIR,
                "timeout_seconds": _WAIT_VOLUME_SECONDS})),
            BootFile(f"{units}/hybrid-llm-model-volume.service", "0644",
                     hostboot.render("units/hybrid-llm-model-volume.service", {})),
            BootFile(f"{units}/hybrid-llm-k3s-tls.service", "0644", hostboot.render(
                "units/hybrid-llm-k3s-tls.service", {"ssm_prefix": args.ssm_prefix, "files": tls_files})),
            BootFile(f"{units}/k3s.service", "0644", hostboot.render("units/k3s.service", {"flags": flags})),
            BootFile(f"{sbin}/hybrid-llm-activity", "0755", activity_agent(args.region, args.serves_ollama)),
            BootFile(f"{units}/hybrid-llm-activity.service", "0644",
                     hostboot.render("units/hybrid-llm-activity.service", {})),
            BootFile(f"{units}/hybrid-llm-activity.timer", "0644",
                     hostboot.render("units/hybrid-llm-activity.timer", {})),
        ] + [
            BootFile(f"{MANIFESTS_DIR}/{file_name}", "0644", text) for file_name, text in rendered_manifests.items()
        ]
        return hostboot.render("worker-boot.sh", {
            "host": args.host,
            "boot_lib": hostboot.render("boot-lib.sh", {}).rstrip("\n"),
            "nebula_version": nebula.version,
            "nebula_url": nebula.url("amd64"),
            "nebula_sha256": nebula.digest("amd64"),
            "k3s_version": k3s.version,
            "k3s_url": k3s.url("amd64"),
            "k3s_sha256": k3s.digest("amd64"),
            "files": hostboot.install_block(files),
        })
