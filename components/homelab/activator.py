"""The activator on the homelab (activator/, `python -m activator`): it holds
requests to Ollama while a stopped worker starts, wakes a worker for GPU pods
that cannot be scheduled, and reports activity to the scaler.

- Reads of state (model lists, version, health checks) are answered without
  waking the worker and do not count as work; `POST /hybrid-llm/wake` wakes it on
  purpose; `GET /metrics` is for Prometheus (activator/ and the README).
- Image: the official Python image, pinned, with the package's source in a
  ConfigMap and its pinned dependencies (activator/requirements.lock) installed
  by an init container at pod start. A homelab with internet access and no
  registry of its own runs it as is, every line that runs is in this repository,
  and there is no image build to trust or keep up to date. The price is a pip
  install (seconds) at each pod start, which needs PyPI reachable then.
- Where it runs: its own namespace. `llm-inference` offloads every pod to the GPU
  (NamespaceOffloading `Remote`), so the activator cannot live there; Service
  `ollama` in `llm-inference` is an ExternalName for the activator's Service, so
  clients keep `ollama.llm-inference.svc.cluster.local:11434`.
- Two replicas, spread over nodes when it can, with a PodDisruptionBudget of one
  available, so a node drain never takes Ollama's only door away. Two activators
  starting one worker is safe: each reads the state before it calls
  StartInstances, and StartInstances on a pending or running instance changes
  nothing; at worst a pod wakes a worker twice. Each keeps its own read cache and
  held cap (256 each: together Ollama's own queue of 512). Rolling updates keep
  both up (maxUnavailable 0). At SIGTERM a replica leaves the Service's endpoints
  (a 5 s preStop pause lets kube-proxy catch up), answers its held requests 503
  with Retry-After (the client's retry lands on the other replica), and gives
  answers in flight SHUTDOWN_SECONDS; the pod's grace period covers both.
- Least privilege: a ServiceAccount that may list and watch pods and nothing
  else; AWS credentials of an IAM user that may start only these workers
  (components/aws/activator_identity.py), from a Secret; a non-root, read-only
  container with no capabilities.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import pulumi
import pulumi_kubernetes as k8s

from components import versions
from components.homelab import cold_start, ollama
from components.homelab.cluster import resources as _resources
from components.mesh.nebula_config import OLLAMA_PORT

CODE_DIR = Path(__file__).resolve().parents[2] / "activator"
NAMESPACE = "hybrid-llm"
NAME = "activator"
LABELS = {"app.kubernetes.io/name": NAME, "app.kubernetes.io/part-of": "hybrid-llm"}
# Every hop in front of the activator (clients, ingress) must wait longer than this.
HOLD_SECONDS = cold_start.hold_seconds(1)
"""The hold of a stack with one model; the component derives it from its models."""
REPLICAS = 2
SHUTDOWN_SECONDS = 50
PRE_STOP_SECONDS = 5


def code_files() -> dict[str, str]:
    """The package's modules and the lock file, by ConfigMap key."""
    files = {path.name: path.read_text() for path in sorted(CODE_DIR.glob("*.py"))}
    files["requirements.lock"] = (CODE_DIR / "requirements.lock").read_text()
    return files


@dataclass
class ActivatorArgs:
    region: str
    instance_ids: Sequence[pulumi.Input[str]]
    cluster_ids: Sequence[str]
    access_key_id: pulumi.Input[str]
    secret_access_key: pulumi.Input[str]       # secret
    backend: str
    models: Sequence[str] = ()
    hold_seconds: Optional[int] = None
    """Default: the cold-start budget's for these models (cold_start.py)."""
    after: Sequence[pulumi.Resource] = ()


class Activator(pulumi.ComponentResource):
    """Namespace, RBAC, credentials, code, Deployment, Services."""

    service_host: str

    def __init__(self, name: str, args: ActivatorArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:Activator", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace", metadata=k8s.meta.v1.ObjectMetaArgs(name=NAMESPACE, labels={
                **LABELS, "pod-security.kubernetes.io/enforce": "restricted"}), opts=child)
        in_namespace = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
        account = k8s.core.v1.ServiceAccount(f"{name}-account", metadata=meta(NAME), opts=in_namespace)
        role = k8s.rbac.v1.ClusterRole(
            f"{name}-watch-pods", metadata=k8s.meta.v1.ObjectMetaArgs(name="hybrid-llm-activator", labels=LABELS),
            rules=[k8s.rbac.v1.PolicyRuleArgs(api_groups=[""], resources=["pods"], verbs=["list", "watch"])],
            opts=child)
        k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-watch-pods", metadata=k8s.meta.v1.ObjectMetaArgs(name="hybrid-llm-activator", labels=LABELS),
            role_ref=k8s.rbac.v1.RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="ClusterRole",
                                             name=role.metadata.name),
            subjects=[k8s.rbac.v1.SubjectArgs(kind="ServiceAccount", name=account.metadata.name, namespace=NAMESPACE)],
            opts=child)
        credentials = k8s.core.v1.Secret(
            f"{name}-aws", metadata=meta("activator-aws"), type="Opaque",
            string_data={"AWS_ACCESS_KEY_ID": args.access_key_id,
                         "AWS_SECRET_ACCESS_KEY": pulumi.Output.secret(args.secret_access_key)},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace],
                                        additional_secret_outputs=["stringData", "data"]))
        files = code_files()
        code = k8s.core.v1.ConfigMap(f"{name}-code", metadata=meta("activator-code"), data=files, opts=in_namespace)
        digest = hashlib.sha256("\0".join(f"{k}\0{v}" for k, v in sorted(files.items())).encode()).hexdigest()[:16]
        environment = {
            "ACTIVATOR_PORT": str(OLLAMA_PORT),
            "ACTIVATOR_BACKEND": args.backend,
            "ACTIVATOR_INSTANCE_IDS": pulumi.Output.all(*args.instance_ids).apply(",".join),
            "ACTIVATOR_CLUSTER_IDS": ",".join(args.cluster_ids),
            "ACTIVATOR_HOLD_SECONDS": str(args.hold_seconds or cold_start.hold_seconds(len(args.models))),
            "ACTIVATOR_MODELS": ",".join(args.models),
            "ACTIVATOR_OLLAMA_VERSION": versions.OLLAMA_APP_VERSION,
            "ACTIVATOR_WATCH_PODS": "true",
            "ACTIVATOR_SHUTDOWN_SECONDS": str(SHUTDOWN_SECONDS),
            "AWS_REGION": args.region,
            "AWS_DEFAULT_REGION": args.region,
            "PYTHONPATH": "/deps:/app",
            "HOME": "/tmp",
        }
        deployment = k8s.apps.v1.Deployment(
            f"{name}-deployment", metadata=meta(NAME),
            spec=deployment_spec(account.metadata.name, code.metadata.name, credentials.metadata.name,
                                 environment, digest),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, *args.after]))
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-disruption-budget", metadata=meta(NAME),
            spec=k8s.policy.v1.PodDisruptionBudgetSpecArgs(
                min_available=1, selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app.kubernetes.io/name": NAME})),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[deployment]))
        service = k8s.core.v1.Service(
            f"{name}-service", metadata=meta(NAME),
            spec=k8s.core.v1.ServiceSpecArgs(
                selector={"app.kubernetes.io/name": NAME},
                ports=[k8s.core.v1.ServicePortArgs(name="http", port=OLLAMA_PORT, target_port=OLLAMA_PORT)]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[deployment]))
        self.service_host = f"{NAME}.{NAMESPACE}.svc.cluster.local"
        k8s.core.v1.Service(
            f"{name}-ollama-name",
            metadata=k8s.meta.v1.ObjectMetaArgs(name=ollama.SERVICE, namespace=ollama.NAMESPACE, labels=LABELS),
            spec=k8s.core.v1.ServiceSpecArgs(type="ExternalName", external_name=self.service_host,
                                             ports=[k8s.core.v1.ServicePortArgs(name="http", port=OLLAMA_PORT)]),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[service, *args.after]))
        self.register_outputs({})


def deployment_spec(account: pulumi.Input[str], code: pulumi.Input[str], credentials: pulumi.Input[str],
                    environment: dict, digest: str) -> k8s.apps.v1.DeploymentSpecArgs:
    locked_down = k8s.core.v1.SecurityContextArgs(
        run_as_non_root=True, run_as_user=65534, run_as_group=65534, allow_privilege_escalation=False,
        read_only_root_filesystem=True, capabilities=k8s.core.v1.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault"))
    mounts = [k8s.core.v1.VolumeMountArgs(name="deps", mount_path="/deps"),
              k8s.core.v1.VolumeMountArgs(name="tmp", mount_path="/tmp"),
              k8s.core.v1.VolumeMountArgs(name="code", mount_path="/app/activator", read_only=True)]
    health = k8s.core.v1.HTTPGetActionArgs(path="/healthz", port=OLLAMA_PORT)
    env = [k8s.core.v1.EnvVarArgs(name=k, value=v) for k, v in environment.items()]
    return k8s.apps.v1.DeploymentSpecArgs(
        replicas=REPLICAS,
        selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app.kubernetes.io/name": NAME}),
        strategy=k8s.apps.v1.DeploymentStrategyArgs(
            type="RollingUpdate",
            rolling_update=k8s.apps.v1.RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1)),
        template=k8s.core.v1.PodTemplateSpecArgs(
            metadata=k8s.meta.v1.ObjectMetaArgs(labels=LABELS, annotations={"hybrid-llm/code": digest}),
            spec=k8s.core.v1.PodSpecArgs(
                service_account_name=account,
                security_context=k8s.core.v1.PodSecurityContextArgs(
                    run_as_non_root=True, seccomp_profile=k8s.core.v1.SeccompProfileArgs(type="RuntimeDefault")),
                # preStop pause, then answers in flight get SHUTDOWN_SECONDS, then a margin.
                termination_grace_period_seconds=PRE_STOP_SECONDS + SHUTDOWN_SECONDS + 10,
                topology_spread_constraints=[k8s.core.v1.TopologySpreadConstraintArgs(
                    max_skew=1, topology_key="kubernetes.io/hostname", when_unsatisfiable="ScheduleAnyway",
                    label_selector=k8s.meta.v1.LabelSelectorArgs(match_labels={"app.kubernetes.io/name": NAME}))],
                init_containers=[k8s.core.v1.ContainerArgs(
                    name="dependencies", image=versions.ACTIVATOR_PYTHON_IMAGE,
                    command=["python", "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
                             "--require-hashes", "--no-deps", "--only-binary=:all:",
                             "--target", "/deps", "--requirement", "/app/activator/requirements.lock"],
                    security_context=locked_down, volume_mounts=mounts, env=env,
                    resources=_resources("100m", "128Mi", "256Mi"))],
                containers=[k8s.core.v1.ContainerArgs(
                    name=NAME, image=versions.ACTIVATOR_PYTHON_IMAGE, command=["python", "-m", "activator"],
                    env=env,
                    env_from=[k8s.core.v1.EnvFromSourceArgs(secret_ref=k8s.core.v1.SecretEnvSourceArgs(name=credentials))],
                    ports=[k8s.core.v1.ContainerPortArgs(name="http", container_port=OLLAMA_PORT)],
                    readiness_probe=k8s.core.v1.ProbeArgs(http_get=health, period_seconds=5, failure_threshold=2),
                    lifecycle=k8s.core.v1.LifecycleArgs(pre_stop=k8s.core.v1.LifecycleHandlerArgs(
                        exec_=k8s.core.v1.ExecActionArgs(command=["sleep", str(PRE_STOP_SECONDS)]))),
                    liveness_probe=k8s.core.v1.ProbeArgs(http_get=health, period_seconds=10, failure_threshold=6,
                                                         initial_delay_seconds=5),
                    security_context=locked_down, volume_mounts=mounts,
                    resources=_resources("50m", "96Mi", "384Mi"))],
                volumes=[
                    k8s.core.v1.VolumeArgs(name="deps", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
                    k8s.core.v1.VolumeArgs(name="tmp", empty_dir=k8s.core.v1.EmptyDirVolumeSourceArgs()),
                    k8s.core.v1.VolumeArgs(name="code", config_map=k8s.core.v1.ConfigMapVolumeSourceArgs(name=code)),
                ],
            ),
        ),
    )


def meta(name: str) -> k8s.meta.v1.ObjectMetaArgs:
    return k8s.meta.v1.ObjectMetaArgs(name=name, namespace=NAMESPACE, labels=LABELS)
