"""Nebula on the homelab nodes. Talos installs no packages, so Nebula runs as a
pod with host networking on each node named in `homelabNodes`.

- One DaemonSet per node, each pinned to its node by a node selector
  (`kubernetes.io/hostname` unless `homelabNodeLabel` says otherwise) and
  mounting that node's own certificate and key from its own Secret: every node
  keeps its own overlay address, and a renewal restarts only that node's pod.
- The config (the same for every homelab node but a lighthouse, which has its
  own under `config-<node>.yml`) and the CA certificate come from one ConfigMap;
  keys only from Secrets. A lighthouse node listens on its fixed port on the
  host (host networking), which the home router forwards to.
- Least privilege: `NET_ADMIN` and the host's `/dev/net/tun`, nothing else (no
  privileged container); the namespace is labelled for the `privileged` Pod
  Security level because host networking and hostPath are beyond `baseline`,
  which Talos enforces. The hostPath only puts the device node in the pod; that
  the pod may open it comes from runc's default device rules, which list tun
  (c 10:200) in every runc but 1.2.0-1.2.3 (opencontainers/runc #3468, restored
  by #4556 in 1.2.4): Talos 1.8.0-1.9.1 ship those, 1.9.2 ships runc 1.2.4.
  The program cannot see a node's runc, so the README states the minimum.
- An init container applies the source-NAT rule (components/mesh/snat.py) in
  the host's network namespace before Nebula starts: homelab pods' traffic
  leaves with the node's overlay address, the only source a worker accepts.
  The image is Kubernetes' distroless-iptables (kube-proxy's base); the script
  calls `iptables-nft` by name, so nothing in the read-only root is rewritten
  and no host xtables lock is needed.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.homelab.cluster import resources as _resources
from components.liqo_manifests import PRIVILEGED
from components.mesh.nebula_config import PKI_DIR

NAMESPACE = "nebula"
PART_OF = {"app.kubernetes.io/part-of": "hybrid-llm"}


@dataclass
class HomelabNode:
    name: str
    cert_pem: pulumi.Input[str]
    key_pem: pulumi.Input[str]       # secret
    config_yaml: Optional[pulumi.Input[str]] = None
    """A config of its own (a lighthouse); None: the shared one."""
    listen_port: Optional[int] = None
    """The fixed UDP port a lighthouse listens on (documented on the pod)."""

    @property
    def config_key(self) -> str:
        return "config.yml" if self.config_yaml is None else f"config-{self.name}.yml"


@dataclass
class HomelabNebulaArgs:
    nodes: Sequence[HomelabNode]
    ca_pem: pulumi.Input[str]
    config_yaml: Optional[pulumi.Input[str]]
    """Shared by every node without a config of its own (None: there is none)."""
    snat_script: str
    node_label: str = "kubernetes.io/hostname"


def _digest(*parts: str) -> str:
    """Changes when any part does, so the pod restarts with new files."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


class HomelabNebula(pulumi.ComponentResource):
    """Namespace, ConfigMap, and a Secret and DaemonSet per homelab node."""

    namespace: pulumi.Output[str]
    daemon_sets: dict[str, k8s.apps.v1.DaemonSet]

    def __init__(self, name: str, args: HomelabNebulaArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:HomelabNebula", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE, labels={**PRIVILEGED, **PART_OF}),
            opts=child)
        configs = {node.config_key: node.config_yaml if node.config_yaml is not None else args.config_yaml
                   for node in args.nodes}
        missing = [key for key, value in configs.items() if value is None]
        if missing:
            raise ValueError(f"HomelabNebula: no config for {missing}")
        shared = k8s.core.v1.ConfigMap(
            f"{name}-config",
            metadata=k8s.meta.v1.ObjectMetaArgs(name="nebula-config", namespace=namespace.metadata.name,
                                                labels=PART_OF),
            data={**configs, "ca.crt": args.ca_pem, "snat.sh": args.snat_script},
            opts=child)
        self.daemon_sets = {}
        for node in args.nodes:
            secret = k8s.core.v1.Secret(
                f"{name}-{node.name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=f"nebula-{node.name}", namespace=namespace.metadata.name,
                                                    labels=PART_OF),
                type="Opaque",
                string_data={"host.crt": node.cert_pem, "host.key": pulumi.Output.secret(node.key_pem)},
                opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stringData", "data"]))
            checksum = pulumi.Output.all(configs[node.config_key], args.ca_pem, node.cert_pem,
                                         args.snat_script).apply(lambda parts: _digest(*parts))
            self.daemon_sets[node.name] = k8s.apps.v1.DaemonSet(
                f"{name}-{node.name}",
                metadata=k8s.meta.v1.ObjectMetaArgs(name=f"nebula-{node.name}", namespace=namespace.metadata.name,
                                                    labels=PART_OF),
                spec=daemon_set_spec(node.name, args.node_label, shared.metadata.name, secret.metadata.name,
                                     checksum, config_key=node.config_key, listen_port=node.listen_port),
                opts=child)
        self.namespace = namespace.metadata.name
        self.register_outputs({"namespace": self.namespace})


def daemon_set_spec(node: str, node_label: str, config_map: pulumi.Input[str], secret: pulumi.Input[str],
                    checksum: pulumi.Input[str], config_key: str = "config.yml",
                    listen_port: Optional[int] = None) -> k8s.apps.v1.DaemonSetSpecArgs:
    labels = {"app.kubernetes.io/name": "nebula", "app.kubernetes.io/instance": node}
    net_admin_only = k8s.core.v1.SecurityContextArgs(
        capabilities=k8s.core.v1.CapabilitiesArgs(add=["NET_ADMIN"], drop=["ALL"]),
        allow_privilege_escalation=False, privileged=False, read_only_root_filesystem=True)
    return k8s.apps.v1.DaemonSetSpecArgs(
        selector=k8s.meta.v1.LabelSelectorArgs(match_labels=labels),
        update_strategy=k8s.apps.v1.DaemonSetUpdateStrategyArgs(type="RollingUpdate"),
        template=k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=labels, annotations={"hybrid-llm/files": checksum}),
            spec=k8s.core.v1.PodSpecArgs(
                host_network=True,
                dns_policy="ClusterFirstWithHostNet",
                node_selector={node_label: node},
                # The mesh is plumbing: it runs on control-plane nodes too.
                tolerations=[k8s.core.v1.TolerationArgs(operator="Exists")],
                priority_class_name="system-node-critical",
                automount_service_account_token=False,
                init_containers=[k8s.core.v1.ContainerArgs(
                    name="snat", image=versions.IPTABLES_IMAGE, command=["/bin/sh", "/snat/snat.sh"],
                    security_context=net_admin_only,
                    volume_mounts=[k8s.core.v1.VolumeMountArgs(name="snat", mount_path="/snat", read_only=True)],
                    resources=_resources("10m", "16Mi", "64Mi"),
                )],
                containers=[k8s.core.v1.ContainerArgs(
                    name="nebula", image=versions.NEBULA_IMAGE, args=["-config", f"{PKI_DIR}/config.yml"],
                    security_context=net_admin_only,
                    # A lighthouse's fixed port; with host networking it is the node's own
                    # (the one the home router forwards to).
                    ports=[k8s.core.v1.ContainerPortArgs(name="nebula", container_port=listen_port, protocol="UDP")]
                    if listen_port else None,
                    volume_mounts=[
                        k8s.core.v1.VolumeMountArgs(name="pki", mount_path=PKI_DIR, read_only=True),
                        k8s.core.v1.VolumeMountArgs(name="tun", mount_path="/dev/net/tun"),
                    ],
                    resources=_resources("20m", "32Mi", "128Mi"),
                )],
                volumes=[
                    k8s.core.v1.VolumeArgs(name="pki", projected=k8s.core.v1.ProjectedVolumeSourceArgs(
                        default_mode=0o400,
                        sources=[
                            k8s.core.v1.VolumeProjectionArgs(config_map=k8s.core.v1.ConfigMapProjectionArgs(
                                name=config_map, items=[k8s.core.v1.KeyToPathArgs(key=config_key, path="config.yml"),
                                                        k8s.core.v1.KeyToPathArgs(key="ca.crt", path="ca.crt")])),
                            k8s.core.v1.VolumeProjectionArgs(secret=k8s.core.v1.SecretProjectionArgs(
                                name=secret, items=[k8s.core.v1.KeyToPathArgs(key="host.crt", path="host.crt"),
                                                    k8s.core.v1.KeyToPathArgs(key="host.key", path="host.key")])),
                        ])),
                    k8s.core.v1.VolumeArgs(name="snat", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(
                        name=config_map, items=[k8s.core.v1.KeyToPathArgs(key="snat.sh", path="snat.sh")])),
                    k8s.core.v1.VolumeArgs(name="tun", host_path=k8s.core.v1.HostPathVolumeSourceArgs(
                        path="/dev/net/tun", type="CharDevice")),
                ],
            ),
        ),
    )

