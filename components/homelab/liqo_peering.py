"""Liqo on the homelab (the consumer), and its peering with each GPU worker.

The Helm release runs through pulumi-kubernetes into a `liqo` namespace we create
with the privileged Pod Security labels (Talos enforces `baseline`). Each
worker's peering is a `LiqoPeering`: the consumer's client certificate signed by
that worker's k3s client CA (pulumi-tls, renewed by `pulumi up` in its last
30 days), the tenant namespace, the control-plane Identity Secret and the
ResourceSlice (components/liqo_manifests.py has the shapes and the why).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s
import pulumi_tls as tls

from components import liqo_manifests, versions
from components.aws.k3s_pki import kubeconfig_yaml

CLIENT_VALIDITY_HOURS = 8760
CLIENT_EARLY_RENEWAL_HOURS = 720


# A Liqo object's finalizers wait for the worker's API server; on `pulumi destroy`
# a stopped worker is started first (components/teardown_wake.py), and EC2's
# start, the boot, k3s and Liqo's recovery take minutes (the cold-start budget's
# p99 is 8 minutes). pulumi-kubernetes waits 10 minutes by default.
TEARDOWN_TIMEOUT = "20m"


@dataclass
class LiqoConsumerArgs:
    values: dict
    """The chart's values (components/liqo_manifests.py: consumer_values)."""
    after: Sequence[pulumi.Resource] = ()
    """What must outlive every Liqo object: the mesh to the workers and the workers.
    The release depends on it, and every Liqo object on the release."""


class LiqoConsumer(pulumi.ComponentResource):
    """The `liqo` namespace and Helm release on the homelab."""

    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: LiqoConsumerArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:LiqoConsumer", name, None, opts)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace", metadata=k8s.meta.v1.ObjectMetaArgs(name=liqo_manifests.NAMESPACE, labels=liqo_manifests.PRIVILEGED),
            opts=pulumi.ResourceOptions(parent=self))
        chart = versions.LIQO_CHART
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name="liqo", chart=chart.name, version=chart.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
            namespace=namespace.metadata.name, create_namespace=False,
            values=args.values, atomic=True, timeout=900,
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.after)))
        self.register_outputs({})


@dataclass
class LiqoPeeringArgs:
    peer: liqo_manifests.Peer
    consumer_id: str
    server_ca_pem: pulumi.Input[str]
    client_ca_cert_pem: pulumi.Input[str]
    client_ca_key_pem: pulumi.Input[str]       # secret
    capacity: pulumi.Input[dict]
    """What to ask of the worker: cpu, memory, gpus (GpuWorker.capacity)."""
    after: Sequence[pulumi.Resource] = ()
    """The consumer's Liqo release: its CRDs and webhooks must exist first."""


class LiqoPeering(pulumi.ComponentResource):
    """The consumer side of the peering with one worker."""

    resource_slice: k8s.apiextensions.CustomResource
    identity_kubeconfig: pulumi.Output[str]     # secret

    def __init__(self, name: str, args: LiqoPeeringArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:LiqoPeering", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        peer = args.peer
        key = tls.PrivateKey(f"{name}-key", algorithm="ECDSA", ecdsa_curve="P256", opts=child)
        csr = tls.CertRequest(
            f"{name}-csr", private_key_pem=key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name=args.consumer_id,
                                               organization=liqo_manifests.CONSUMER_ORGANIZATION),
            opts=child)
        cert = tls.LocallySignedCert(
            f"{name}-cert", cert_request_pem=csr.cert_request_pem,
            ca_private_key_pem=args.client_ca_key_pem, ca_cert_pem=args.client_ca_cert_pem,
            validity_period_hours=CLIENT_VALIDITY_HOURS, early_renewal_hours=CLIENT_EARLY_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "client_auth"], opts=child)
        self.identity_kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            args.server_ca_pem, cert.cert_pem, key.private_key_pem).apply(
            lambda v: kubeconfig_yaml(peer.cluster_id, peer.api_server, *v)))

        namespace = k8s.core.v1.Namespace(
            f"{name}-tenant",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=peer.tenant_namespace,
                                                labels=liqo_manifests.tenant_namespace_labels(peer.cluster_id)),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.after),
                                        custom_timeouts=pulumi.CustomTimeouts(delete=TEARDOWN_TIMEOUT)))
        identity = liqo_manifests.identity_secret_metadata(peer, args.consumer_id)
        secret = k8s.core.v1.Secret(
            f"{name}-identity",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=identity["name"], namespace=namespace.metadata.name,
                                                labels=identity["labels"], annotations=identity["annotations"]),
            type="Opaque", string_data={"kubeconfig": self.identity_kubeconfig},
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["stringData", "data"],
                                        custom_timeouts=pulumi.CustomTimeouts(delete=TEARDOWN_TIMEOUT)))
        meta = liqo_manifests.resource_slice_metadata(peer)
        spec = pulumi.Output.from_input(args.capacity).apply(lambda c: liqo_manifests.resource_slice(peer, c)["spec"])
        self.resource_slice = k8s.apiextensions.CustomResource(
            f"{name}-resource-slice",
            api_version="authentication.liqo.io/v1beta1", kind="ResourceSlice",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=meta["name"], namespace=namespace.metadata.name,
                                                labels=meta["labels"], annotations=meta["annotations"]),
            spec=spec,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[secret, *args.after],
                                        custom_timeouts=pulumi.CustomTimeouts(delete=TEARDOWN_TIMEOUT)))
        self.tenant_namespace = peer.tenant_namespace
        self.resource_slice_name = meta["name"]
        self.register_outputs({})

