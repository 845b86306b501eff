"""Liqo on both sides, declared (DESIGN decisions 8 and 9): what the homelab (the
consumer) and each GPU worker (a provider) must hold for the homelab to see the
worker as a virtual node, as plain data both sides render.

Why declared, not `liqoctl peer`: a worker is usually stopped, and a peering made
by a command would have to be redone after every `pulumi up` that replaces it.
The consumer's credential is a client certificate signed by the worker's k3s
client CA, which the program already holds (components/aws/k3s_pki.py), so the
peering exists before the worker first boots. This follows Liqo v1.2.0's "peering
via custom resources" with networking off:

- provider (k3s manifests, applied at every start): the tenant namespace, a
  Tenant with `authzPolicy: TolerateNoHandshake` (Liqo then skips the handshake
  and also the RoleBinding it would make), and that RoleBinding to ClusterRole
  `liqo-remote-controlplane` for the consumer's user (the certificate's CN);
- consumer (pulumi-kubernetes): the tenant namespace, the control-plane Identity
  kubeconfig Secret, and a ResourceSlice asking for the worker's CPU, memory and
  GPU with `liqo.io/create-virtual-node`. Liqo makes ForeignCluster objects and
  the virtual node (named like the ResourceSlice) itself.

Liqo's network is off (`networking.enabled: false`); IPs are reflected as they
are, so homelab Services point at the worker pods' real addresses, which Nebula
routes. `ipam` still needs each cluster's ranges (its chart always renders them).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from components import versions

NAMESPACE = "liqo"
CONTROL_PLANE_ROLE = "liqo-remote-controlplane"
# Liqo's own certificates carry O=liqo.io; the RoleBinding names only the CN.
CONSUMER_ORGANIZATION = "liqo.io"
VIRTUAL_NODE_TAINT = "virtual-node.liqo.io/not-allowed"
CLUSTER_ID_LABEL = "liqo.io/remote-cluster-id"
# On the worker: the storage class Liqo provisions offloaded claims with, and the
# one PersistentVolume of that class (the model volume's directory).
MODELS_STORAGE_CLASS = "ollama-models"
# The homelab namespace every pod of which runs on a GPU worker (same name there),
# and the claim of Ollama's chart in it, which the worker's volume is reserved for.
OFFLOADED_NAMESPACE = "llm-inference"
MODELS_CLAIM = "ollama-backend"
# Pod Security labels for namespaces we create that Liqo runs things in (Talos
# enforces `baseline` outside kube-system).
PRIVILEGED = {f"pod-security.kubernetes.io/{mode}": "privileged" for mode in ("enforce", "audit", "warn")}


@dataclass(frozen=True)
class Peer:
    """One provider as the consumer sees it."""

    cluster_id: str                      # the worker's Liqo cluster id
    api_address: ipaddress.IPv4Address   # its k3s API on the overlay

    @property
    def tenant_namespace(self) -> str:
        """The consumer's namespace for this provider."""
        return tenant_namespace(self.cluster_id)

    @property
    def api_server(self) -> str:
        return f"https://{self.api_address}:6443"


def tenant_namespace(remote_cluster_id: str) -> str:
    """`liqo-tenant-<remote id>`, the name liqoctl gives tenant namespaces."""
    return f"liqo-tenant-{remote_cluster_id}"


def tenant_namespace_labels(remote_cluster_id: str) -> dict[str, str]:
    return {CLUSTER_ID_LABEL: remote_cluster_id, "liqo.io/tenant-namespace": "true", **PRIVILEGED}


def worker_cluster_id(project: str, stack: str, host: str) -> str:
    """Fixed for the worker's life: Liqo refuses a changed cluster id."""
    return f"{project}-{stack}-{host}"


def _common_values(cluster_id: str, pod_cidrs: list[str], service_cidr: str) -> dict[str, Any]:
    return {
        "discovery": {"config": {"clusterID": cluster_id}},
        "networking": {"enabled": False, "reflectIPs": True},
        "telemetry": {"enabled": False},
        "ipam": {"podCIDRs": pod_cidrs, "serviceCIDR": service_cidr},
    }


def consumer_values(cluster_id: str, pod_cidr: ipaddress.IPv4Network,
                    service_cidr: ipaddress.IPv4Network) -> dict[str, Any]:
    """The homelab's Liqo chart values."""
    values = _common_values(cluster_id, [str(pod_cidr)], str(service_cidr))
    values["storage"] = {"enabled": True}
    return values


def provider_values(cluster_id: str, api_address: ipaddress.IPv4Address, pod_cidr: ipaddress.IPv4Network,
                    service_cidr: ipaddress.IPv4Network) -> dict[str, Any]:
    """A worker's Liqo chart values. `apiServer.address` is what the consumer's
    virtual kubelet is told to dial (otherwise the node's VPC address)."""
    values = _common_values(cluster_id, [str(pod_cidr)], str(service_cidr))
    values["apiServer"] = {"address": f"https://{api_address}:6443"}
    values["storage"] = {"enabled": True, "realStorageClassName": MODELS_STORAGE_CLASS}
    return values


def helm_chart(values_yaml: str) -> dict[str, Any]:
    """The worker's k3s HelmChart for Liqo (applied at every k3s start)."""
    chart = versions.LIQO_CHART
    return {
        "apiVersion": "helm.cattle.io/v1",
        "kind": "HelmChart",
        "metadata": {"name": "liqo", "namespace": "kube-system"},
        "spec": {"repo": chart.repo, "chart": chart.name, "version": chart.version,
                 "targetNamespace": NAMESPACE, "createNamespace": True, "valuesContent": values_yaml},
    }


def provider_manifests(consumer_id: str) -> list[dict[str, Any]]:
    """What a worker holds for the homelab: tenant namespace, Tenant, RoleBinding."""
    namespace = tenant_namespace(consumer_id)
    labels = {CLUSTER_ID_LABEL: consumer_id}
    return [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": namespace, "labels": tenant_namespace_labels(consumer_id)}},
        {"apiVersion": "authentication.liqo.io/v1beta1", "kind": "Tenant",
         "metadata": {"name": consumer_id, "namespace": namespace, "labels": labels},
         "spec": {"clusterID": consumer_id, "authzPolicy": "TolerateNoHandshake", "tenantCondition": "Active"}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": f"liqo-binding-{CONTROL_PLANE_ROLE}", "namespace": namespace, "labels": labels},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROL_PLANE_ROLE},
         "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": consumer_id}]},
    ]


def identity_secret_metadata(peer: Peer, consumer_id: str) -> dict[str, Any]:
    """Metadata of the consumer's control-plane Identity Secret (key `kubeconfig`)."""
    return {
        "name": f"kubeconfig-controlplane-{peer.cluster_id}",
        "namespace": peer.tenant_namespace,
        "labels": {"liqo.io/identity-type": "ControlPlane", CLUSTER_ID_LABEL: peer.cluster_id},
        "annotations": {"liqo.io/remote-tenant-namespace": tenant_namespace(consumer_id)},
    }


def resource_slice(peer: Peer, capacity: dict[str, Any]) -> dict[str, Any]:
    """The consumer's request for the worker's resources (`capacity`: cpu, memory,
    gpus); Liqo replicates it to the provider (the `replication` and `remoteID`
    labels) and makes the virtual node."""
    return {
        "apiVersion": "authentication.liqo.io/v1beta1",
        "kind": "ResourceSlice",
        "metadata": resource_slice_metadata(peer),
        "spec": {"class": "default", "providerClusterID": peer.cluster_id,
                 "resources": {"cpu": capacity["cpu"], "memory": capacity["memory"], "pods": "110",
                               "nvidia.com/gpu": str(capacity["gpus"])}},
    }


def resource_slice_metadata(peer: Peer) -> dict[str, Any]:
    """The slice is named like the provider, and so is the virtual node Liqo makes."""
    return {
        "name": peer.cluster_id,
        "namespace": peer.tenant_namespace,
        "labels": {CLUSTER_ID_LABEL: peer.cluster_id, "liqo.io/remoteID": peer.cluster_id,
                   "liqo.io/replication": "true"},
        "annotations": {"liqo.io/create-virtual-node": "true"},
    }


def namespace_offloading(namespace: str, cluster_ids: list[str]) -> dict[str, Any]:
    """Every pod of `namespace` runs remotely, on the GPU virtual nodes only, in a
    namespace of the same name there (so the worker's PersistentVolume can name it)."""
    return {
        "apiVersion": "offloading.liqo.io/v1beta1",
        "kind": "NamespaceOffloading",
        "metadata": {"name": "offloading", "namespace": namespace},
        "spec": {
            "namespaceMappingStrategy": "EnforceSameName",
            "podOffloadingStrategy": "Remote",
            "clusterSelector": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": CLUSTER_ID_LABEL, "operator": "In", "values": sorted(cluster_ids)}]}]},
        },
    }
