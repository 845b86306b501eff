"""Ollama, installed from the homelab and running on a GPU worker through Liqo.

- Namespace `llm-inference` with its `NamespaceOffloading` (named `offloading`,
  created before any pod in it): every pod there runs on a GPU virtual node.
- The otwld chart as release `ollama-backend` (so its Service is
  `ollama-backend`), GPU on, the configured models pulled at start, models on
  the worker's model volume: the chart's claim uses Liqo's virtual storage class,
  Liqo creates the claim on the worker with the real class `ollama-models`, and
  that binds the worker's one `ollama-models` PersistentVolume (a directory on
  the model volume, claimRef'd to this claim).
- Tolerations for `node.kubernetes.io/not-ready` and `unreachable` without
  `tolerationSeconds` (DESIGN decision 10): a stopped worker never gets its pod
  evicted and re-created Pending, which would wake it again.
- The chart's Service is `ollama-backend`; the name homelab clients use,
  `ollama.llm-inference.svc.cluster.local:11434`, belongs to the activator
  (components/homelab/activator.py), which holds requests while the worker starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from components import liqo_manifests, versions
from components.homelab.liqo_peering import TEARDOWN_TIMEOUT
from components.mesh.nebula_config import OLLAMA_PORT

NAMESPACE = liqo_manifests.OFFLOADED_NAMESPACE
RELEASE = liqo_manifests.MODELS_CLAIM
SERVICE = "ollama"


# How long a model stays loaded after its last request: until the worker stops
# (a negative OLLAMA_KEEP_ALIVE is "forever": envconfig/config.go KeepAlive, v0.32.15). A loaded
# model is not work (DESIGN decision 6): the scaler stops the worker idleMinutes
# after the last request whatever this is, and VRAM frees itself with the stop.
# Keeping it loaded until then means no reply on a running worker ever waits for a
# model load (seconds to minutes from the volume); Ollama's scheduler still
# unloads an idle model when another one needs the room (server/sched.go
# findRunnerToUnload takes the first runner with no request, whatever its keep-alive).
KEEP_ALIVE = "-1"
# Ollama answers `/` within seconds of its start, so the chart's 30 s initial delay
# only lengthens every cold start (components/homelab/cold_start.py).
READINESS_PROBE = {"initialDelaySeconds": 2, "periodSeconds": 2}


def values(models: Sequence[str], model_volume_gib: int, worker_cluster_id: str) -> dict[str, Any]:
    """The chart's values (every key exists in the chart's values.yaml; a test checks)."""
    forever = [{"key": key, "operator": "Exists", "effect": "NoExecute"}
               for key in ("node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable")]
    return {
        "fullnameOverride": RELEASE,
        "ollama": {
            "port": OLLAMA_PORT,
            "gpu": {"enabled": True, "type": "nvidia", "number": 1},
            "models": {"pull": list(models)},
        },
        "extraEnv": [{"name": "OLLAMA_KEEP_ALIVE", "value": KEEP_ALIVE}],
        "readinessProbe": dict(READINESS_PROBE),
        "persistentVolume": {"enabled": True, "storageClass": "liqo", "size": f"{model_volume_gib}Gi",
                             "accessModes": ["ReadWriteOnce"]},
        # The first worker's virtual node: its model volume holds the models.
        "nodeSelector": {liqo_manifests.CLUSTER_ID_LABEL: worker_cluster_id},
        "tolerations": forever + [{"key": liqo_manifests.VIRTUAL_NODE_TAINT, "operator": "Exists", "effect": "NoExecute"}],
        # One pod with one GPU and a ReadWriteOnce volume: replace, never surge.
        "updateStrategy": {"type": "Recreate"},
        "service": {"port": OLLAMA_PORT},
        # The chart's test pod would be offloaded to the GPU too.
        "tests": {"enabled": False},
    }


@dataclass
class OllamaArgs:
    models: Sequence[str]
    model_volume_gib: int
    worker_cluster_ids: Sequence[str]
    """Every GPU virtual node the namespace may use; the first runs Ollama."""
    after: Sequence[pulumi.Resource] = ()
    """The consumer's Liqo release (CRDs, webhook) and the peerings."""


class Ollama(pulumi.ComponentResource):
    """Namespace, NamespaceOffloading and the chart's release."""

    namespace: pulumi.Output[str]
    release_name: pulumi.Output[str]
    backend_url: str
    """Ollama's own Service, for the activator."""

    def __init__(self, name: str, args: OllamaArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:Ollama", name, None, opts)
        # After the peerings: on `pulumi destroy` the namespace (its offloaded pod
        # and claim) is gone before the virtual nodes it runs on.
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE, labels={"app.kubernetes.io/part-of": "hybrid-llm"}),
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.after),
                                        custom_timeouts=pulumi.CustomTimeouts(delete=TEARDOWN_TIMEOUT)))
        body = liqo_manifests.namespace_offloading(NAMESPACE, list(args.worker_cluster_ids))
        offloading = k8s.apiextensions.CustomResource(
            f"{name}-offloading", api_version=body["apiVersion"], kind=body["kind"],
            metadata=k8s.meta.v1.ObjectMetaArgs(name=body["metadata"]["name"], namespace=namespace.metadata.name),
            spec=body["spec"],
            opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.after),
                                        custom_timeouts=pulumi.CustomTimeouts(delete=TEARDOWN_TIMEOUT)))
        chart = versions.OLLAMA_CHART
        release = k8s.helm.v3.Release(
            f"{name}-release",
            name=RELEASE, chart=chart.name, version=chart.version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=chart.repo),
            namespace=namespace.metadata.name,
            values=values(args.models, args.model_volume_gib, args.worker_cluster_ids[0]),
            # The worker is usually stopped: do not wait for the pod to be ready.
            skip_await=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[offloading]))
        self.namespace = namespace.metadata.name
        self.release_name = release.name
        self.backend_url = f"http://{RELEASE}.{NAMESPACE}.svc.cluster.local:{OLLAMA_PORT}"
        self.register_outputs({"namespace": self.namespace, "release_name": self.release_name})
