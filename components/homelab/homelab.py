"""The homelab side in one component: the provider from `homelabKubeconfig`, Nebula
on the nodes, Liqo and its peering with each worker, and Ollama offloaded to the
first worker. Declared only when the kubeconfig is set; the AWS side never
depends on it, so adding the homelab later changes no worker.

`pulumi destroy` deletes dependents first (pulumi/pulumi `ScheduleDeletes`), and
Liqo's finalizers need the worker's API server through the mesh, so the order is
declared: the Liqo release depends on the homelab's Nebula and on `mesh_path`
(the workers and what the homelab dials them at), and every Liqo object on the
release, so the mesh outlives them all; the Ollama namespace goes before the
virtual nodes it runs on; and each worker's `TeardownWake` (components/teardown_wake.py),
which depends on that worker's Liqo objects and Ollama's, runs first and wakes
it. tests/homelab/test_destroy_order.py replays the engine's order against these needs.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional, Sequence

import pulumi

from components import liqo_manifests
from components.homelab import cluster
from components.homelab.liqo_peering import LiqoConsumer, LiqoConsumerArgs, LiqoPeering, LiqoPeeringArgs
from components.homelab.nebula import HomelabNebula, HomelabNebulaArgs, HomelabNode
from components.homelab import ollama as ollama_chart
from components.homelab.activator import Activator, ActivatorArgs
from components.homelab.ollama import Ollama, OllamaArgs
from components.mesh.nebula_config import OLLAMA_PORT
from components.teardown_wake import TeardownWake


@dataclass
class WorkerPeer:
    """What the homelab needs of one worker to peer with it."""

    peer: liqo_manifests.Peer
    instance_id: pulumi.Input[str]
    capacity: pulumi.Input[dict]
    server_ca_pem: pulumi.Input[str]
    client_ca_cert_pem: pulumi.Input[str]
    client_ca_key_pem: pulumi.Input[str]


@dataclass
class HomelabArgs:
    kubeconfig: pulumi.Output[str]
    cluster_id: str
    pod_cidr: ipaddress.IPv4Network
    service_cidr: ipaddress.IPv4Network
    nodes: Sequence[HomelabNode]
    nebula_ca_pem: pulumi.Input[str]
    nebula_config_yaml: Optional[pulumi.Input[str]]
    """The config of every node that is not a lighthouse (None: every node is one)."""
    snat_script: str
    workers: Sequence[WorkerPeer]
    models: Sequence[str]
    model_volume_gib: int
    region: str
    activator_access_key_id: pulumi.Input[str]
    activator_secret_access_key: pulumi.Input[str]     # secret
    node_label: str = "kubernetes.io/hostname"
    mesh_path: Sequence[pulumi.Resource] = ()
    """AWS resources the peerings need until they are gone: the worker instances and
    where the homelab dials them (Elastic IP associations, an EC2 lighthouse)."""
    teardown: Optional["TeardownSettings"] = None
    """How `pulumi destroy` wakes a stopped worker; None declares no wake."""


@dataclass
class TeardownSettings:
    region: str


class Homelab(pulumi.ComponentResource):
    """Everything `pulumi up` puts on the homelab cluster."""

    ollama_url: str
    virtual_nodes: list[str]
    nebula_namespace: pulumi.Output[str]

    def __init__(self, name: str, args: HomelabArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:Homelab", name, None, opts)
        provider = cluster.provider(f"{name}-k8s", args.kubeconfig, opts=pulumi.ResourceOptions(parent=self))
        on_homelab = pulumi.ResourceOptions(parent=self, providers={"kubernetes": provider})

        cluster_ids = [w.peer.cluster_id for w in args.workers]
        nebula = HomelabNebula(f"{name}-nebula", HomelabNebulaArgs(
            nodes=args.nodes, ca_pem=args.nebula_ca_pem, config_yaml=args.nebula_config_yaml,
            snat_script=args.snat_script, node_label=args.node_label), opts=on_homelab)
        consumer = LiqoConsumer(f"{name}-liqo", LiqoConsumerArgs(
            values=liqo_manifests.consumer_values(args.cluster_id, args.pod_cidr, args.service_cidr),
            after=[nebula, *args.mesh_path]), opts=on_homelab)
        peerings = [
            LiqoPeering(f"{name}-peer-{w.peer.cluster_id}", LiqoPeeringArgs(
                peer=w.peer, consumer_id=args.cluster_id, server_ca_pem=w.server_ca_pem,
                client_ca_cert_pem=w.client_ca_cert_pem, client_ca_key_pem=w.client_ca_key_pem,
                capacity=w.capacity, after=[consumer.release]), opts=on_homelab)
            for w in args.workers
        ]
        ollama = Ollama(f"{name}-ollama", OllamaArgs(
            models=args.models, model_volume_gib=args.model_volume_gib,
            worker_cluster_ids=cluster_ids,
            after=[consumer.release, *[p.resource_slice for p in peerings]]), opts=on_homelab)
        wakes = [
            TeardownWake(f"{name}-teardown-wake-{w.peer.cluster_id}", instance_id=w.instance_id,
                         region=args.teardown.region, kubeconfig=args.kubeconfig,
                         cluster_id=w.peer.cluster_id, tenant_namespace=p.tenant_namespace,
                         resource_slice=p.resource_slice_name,
                         opts=pulumi.ResourceOptions(parent=self, depends_on=[p, ollama]))
            for w, p in zip(args.workers, peerings)
        ] if args.teardown else []
        Activator(f"{name}-activator", ActivatorArgs(
            region=args.region, instance_ids=[w.instance_id for w in args.workers],
            cluster_ids=cluster_ids, models=args.models,
            access_key_id=args.activator_access_key_id, secret_access_key=args.activator_secret_access_key,
            backend=ollama.backend_url, after=[ollama, *wakes]), opts=on_homelab)

        self.ollama_url = f"http://{ollama_chart.SERVICE}.{ollama_chart.NAMESPACE}.svc.cluster.local:{OLLAMA_PORT}"
        self.virtual_nodes = cluster_ids
        self.nebula_namespace = nebula.namespace
        self.register_outputs({"nebula_namespace": self.nebula_namespace})

