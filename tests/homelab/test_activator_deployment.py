"""The activator as the program deploys it: its AWS identity may start only the
stack's workers, its key reaches only a Kubernetes Secret, the Deployment runs
the repository's code on the pinned image with pinned dependencies, RBAC is pod
list/watch and nothing more, and `ollama.llm-inference` names it."""

from __future__ import annotations

import json

import pytest
import yaml

from activator import settings as activator_settings
from components import versions
from components.homelab import activator, ollama
from policy import rules
from tests import iam_sim
from tests.conftest import PLACEMENTS
from tests.upstream import OLLAMA

DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def one(plan, type_token):
    found = plan.of_type(type_token)
    assert len(found) == 1, (type_token, [r.name for r in found])
    return found[0]


def pod_spec(plan):
    return one(plan, DEPLOYMENT).plain()["spec"]["template"]["spec"]


def env_of(plan) -> dict[str, str]:
    return {e["name"]: e["value"] for e in pod_spec(plan)["containers"][0]["env"]}


def test_no_activator_identity_without_the_homelab(dev_plan):
    assert not dev_plan.of_type("aws:iam/user:User")
    assert not dev_plan.of_type("aws:iam/accessKey:AccessKey")


@pytest.mark.parametrize("placement", sorted(PLACEMENTS))
def test_the_identity_may_start_only_the_workers(homelab_overrides, placement):
    from tools import harness

    plan = harness.run_stack("dev", {**homelab_overrides, **PLACEMENTS[placement], "hybrid-llm:gpuWorkers": "2"})
    documents = [json.loads(one(plan, "aws:iam/userPolicy:UserPolicy").plain()["policy"])]
    workers = [r.state["arn"] for r in plan.of_type("aws:ec2/instance:Instance") if r.plain().get("launchTemplate")]
    others = [r.state["arn"] for r in plan.of_type("aws:ec2/instance:Instance") if not r.plain().get("launchTemplate")]
    assert len(workers) == 2
    # Only an EC2 lighthouse is an instance of the stack that is not a worker.
    assert len(others) == (1 if placement == "ec2" else 0)
    for arn in workers:
        assert iam_sim.allowed(documents, "ec2:StartInstances", arn)
        assert not iam_sim.allowed(documents, "ec2:StopInstances", arn)
        assert not iam_sim.allowed(documents, "ec2:TerminateInstances", arn)
    for arn in others:
        assert not iam_sim.allowed(documents, "ec2:StartInstances", arn)
    assert iam_sim.allowed(documents, "ec2:DescribeInstances", "*")
    assert iam_sim.allowed(documents, "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "HybridLLM"})
    assert not iam_sim.allowed(documents, "cloudwatch:PutMetricData", "*", {"cloudwatch:namespace": "Other"})
    for r in plan.resources:
        assert rules.violations(r.type, r.plain(), r.name) == {}, r.name


def test_policy_pack_catches_a_start_on_any_instance():
    broken = {"policy": json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["ec2:StartInstances"], "Resource": "*"}]})}
    found = rules.violations(rules.USER_POLICY, broken, "u")
    assert "stop-scoped-to-instances" in found and "iam-least-privilege" in found


def test_the_access_key_stays_secret_and_reaches_only_a_kubernetes_secret(homelab_plan):
    key = one(homelab_plan, "aws:iam/accessKey:AccessKey")
    secret_value = key.state["secret"]
    secret = next(r for r in homelab_plan.of_type("kubernetes:core/v1:Secret")
                  if r.plain()["metadata"]["name"] == "activator-aws")
    assert secret.plain()["stringData"]["AWS_SECRET_ACCESS_KEY"] == secret_value
    from tools import harness
    assert harness.rpc.is_rpc_secret(secret.inputs["stringData"]) or \
        harness.rpc.is_rpc_secret(secret.inputs["stringData"]["AWS_SECRET_ACCESS_KEY"])
    for r in homelab_plan.resources:
        if r is secret or r is key:
            continue
        assert secret_value not in json.dumps(r.plain(), default=str), f"{r.name} carries the secret key"
    for name, output in homelab_plan.outputs.items():
        assert secret_value not in json.dumps(output.value, default=str), name


def test_the_deployment_runs_this_repositorys_code_on_the_pinned_image(homelab_plan):
    spec = pod_spec(homelab_plan)
    assert [c["image"] for c in spec["initContainers"] + spec["containers"]] == [versions.ACTIVATOR_PYTHON_IMAGE] * 2
    assert spec["containers"][0]["command"] == ["python", "-m", "activator"]
    code = next(r for r in homelab_plan.of_type("kubernetes:core/v1:ConfigMap")
                if r.plain()["metadata"]["name"] == "activator-code").plain()["data"]
    assert code == activator.code_files()
    assert set(code) >= {"__init__.py", "__main__.py", "proxy.py", "waker.py", "requirements.lock"}
    install = spec["initContainers"][0]["command"]
    assert install[-1] == "/app/activator/requirements.lock" and "--target" in install
    # Exactly the locked files, nothing resolved at pod start, no build from source.
    assert {"--require-hashes", "--no-deps", "--only-binary=:all:"} <= set(install)


def _lock() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, sha256 hashes) of activator/requirements.lock."""
    lock: dict[str, tuple[str, list[str]]] = {}
    name = ""
    for line in (activator.CODE_DIR / "requirements.lock").read_text().splitlines():
        text = line.split("#", 1)[0].strip().rstrip("\\").strip()
        if not text:
            continue
        if text.startswith("--hash=sha256:"):
            lock[name][1].append(text.removeprefix("--hash=sha256:"))
            continue
        name, sep, version = text.partition("==")
        assert sep and version, line
        name = name.lower().replace("_", "-")
        lock[name] = (version, [])
    return lock


def test_the_lock_pins_every_requirement_exactly_with_hashes():
    lock = _lock()
    for name, (version, hashes) in lock.items():
        assert hashes and all(len(h) == 64 for h in hashes), name
    for line in (activator.CODE_DIR / "requirements.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            assert lock[name.lower().replace("_", "-")][0] == version, name
    assert "python:3.11" in versions.ACTIVATOR_PYTHON_IMAGE, "the lock was frozen on CPython 3.11"


def test_the_environment_is_what_the_activator_reads(homelab_plan):
    env = env_of(homelab_plan)
    worker = next(r for r in homelab_plan.of_type("aws:ec2/instance:Instance") if r.plain().get("launchTemplate"))
    assert env["ACTIVATOR_INSTANCE_IDS"] == worker.id
    assert env["ACTIVATOR_BACKEND"] == f"http://{ollama.RELEASE}.{ollama.NAMESPACE}.svc.cluster.local:11434"
    assert env["ACTIVATOR_CLUSTER_IDS"] == "hybrid-llm-dev-gpu-0"
    assert env["AWS_REGION"] == "us-east-1"
    parsed = activator_settings.from_env(env)
    assert parsed.hold_seconds == activator.HOLD_SECONDS and parsed.port == 11434
    # While the worker sleeps, the model lists answer with the stack's models.
    assert parsed.models == ("llama3.2:3b",)


def test_the_sleeping_version_is_the_charts_own_ollama(homelab_plan):
    chart = yaml.safe_load((OLLAMA / "Chart.yaml").read_text())
    assert env_of(homelab_plan)["ACTIVATOR_OLLAMA_VERSION"] == chart["appVersion"]


def test_two_replicas_a_disruption_budget_and_a_graceful_shutdown(homelab_plan):
    deployment = one(homelab_plan, DEPLOYMENT).plain()
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    budget = one(homelab_plan, "kubernetes:policy/v1:PodDisruptionBudget").plain()
    assert budget["spec"]["minAvailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    assert budget["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    pod = spec["template"]["spec"]
    assert pod["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"
    env = env_of(homelab_plan)
    shutdown = activator_settings.from_env(env).shutdown_seconds
    pause = int(pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][-1])
    # Streams get more than 10 s, and the kubelet waits for the pause and the streams.
    assert shutdown > 10 and pod["terminationGracePeriodSeconds"] > pause + shutdown


def test_probes_requests_and_no_privilege(homelab_plan):
    deployment = one(homelab_plan, DEPLOYMENT).plain()["spec"]
    assert deployment["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spec = deployment["template"]["spec"]
    container = spec["containers"][0]
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": 11434}
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]
    for c in spec["containers"] + spec["initContainers"]:
        context = c["securityContext"]
        assert context["runAsNonRoot"] and context["readOnlyRootFilesystem"]
        assert context["capabilities"] == {"drop": ["ALL"]} and context["allowPrivilegeEscalation"] is False
    assert container["envFrom"] == [{"secretRef": {"name": "activator-aws"}}]


def test_rbac_is_list_and_watch_pods_only(homelab_plan):
    role = one(homelab_plan, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole").plain()
    assert role["rules"] == [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]
    binding = one(homelab_plan, "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding").plain()
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "activator", "namespace": activator.NAMESPACE}]
    assert pod_spec(homelab_plan)["serviceAccountName"] == "activator"


def test_the_activator_runs_outside_the_offloaded_namespace(homelab_plan):
    """Every pod in llm-inference is offloaded to the GPU; the activator must stay home."""
    assert one(homelab_plan, DEPLOYMENT).plain()["metadata"]["namespace"] == activator.NAMESPACE != ollama.NAMESPACE


@pytest.mark.parametrize("key", ["ACTIVATOR_BACKEND", "ACTIVATOR_INSTANCE_IDS"])
def test_the_deployment_sets_every_required_variable(homelab_plan, key):
    assert env_of(homelab_plan)[key]
