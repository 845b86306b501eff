"""`pulumi destroy` replayed: the engine's delete waves over the program's real
dependency graph (tools/destroy_order.py, from the harness's record of every
resource's dependencies, parent and provider), checked against what each delete
needs still standing (liqotech/liqo v1.2.0's finalizers, the mesh to the worker)
and what must run before it (the teardown wake). Two resources in one wave are
deleted at the same moment, so "after" means a strictly later wave.
"""

from __future__ import annotations

import pytest

from tools import destroy_order, harness
from tools.harness import PLACEMENTS
from tests.homelab.conftest import RANGES, kubeconfig

WORKERS = ("gpu-0", "gpu-1")
PROVIDER_K8S = "pulumi:providers:kubernetes"
WAKE = "pulumi-python:dynamic:Resource"


@pytest.fixture(scope="module", params=list(PLACEMENTS))
def plan(request, api_port):
    return harness.run_stack("dev", {**PLACEMENTS[request.param], "hybrid-llm:gpuWorkers": str(len(WORKERS)),
                                     "hybrid-llm:homelabKubeconfig": kubeconfig(api_port), **RANGES})


def named(plan, suffix: str) -> list:
    return [r for r in plan.resources if r.name.endswith(suffix)]


def one(plan, suffix: str):
    (resource,) = named(plan, suffix)
    return resource


def cluster_id(worker: str) -> str:
    return f"hybrid-llm-dev-{worker}"


def needs_worker(plan, worker: str) -> list:
    """The homelab objects whose delete waits on `worker`'s API server: its
    peering (tenant namespace, Identity, ResourceSlice: the crd-replicator's
    finalizers), Ollama's namespace and NamespaceOffloading (offloaded to every
    worker), and the Liqo release (its pre-delete hook wants the peerings gone)."""
    peer = f"-peer-{cluster_id(worker)}"
    return [one(plan, f"{peer}-tenant"), one(plan, f"{peer}-identity"), one(plan, f"{peer}-resource-slice"),
            one(plan, "-homelab-ollama-namespace"), one(plan, "-homelab-ollama-offloading"),
            one(plan, "-homelab-liqo-release")]


def mesh_to(plan, worker: str) -> list:
    """What the homelab's path to `worker` runs on: every homelab Nebula DaemonSet,
    the worker, and where it is dialled (its Elastic IP association, or the EC2
    lighthouse and its association)."""
    path = [r for r in plan.of_type("kubernetes:apps/v1:DaemonSet") if "-homelab-nebula-" in r.name]
    path.append(one(plan, f"-{worker}-instance"))
    path += named(plan, f"-{worker}-eip-association")
    path += [r for r in plan.resources if r.name in ("hybrid-llm-dev-lighthouse-instance", "hybrid-llm-dev-lighthouse-eip")
             and r.type != "aws:ec2/eip:Eip"]
    return path


def test_the_mesh_and_the_worker_outlive_every_liqo_object_that_needs_them(plan):
    wave = destroy_order.wave_of(destroy_order.waves(plan.resources))
    for worker in WORKERS:
        path = mesh_to(plan, worker)
        assert len(path) >= 3
        for liqo_object in needs_worker(plan, worker):
            for needed in path:
                assert wave[needed.urn] > wave[liqo_object.urn], \
                    f"{needed.name} is deleted with or before {liqo_object.name}"


def test_each_worker_is_woken_before_its_liqo_objects_are_deleted(plan):
    order = destroy_order.waves(plan.resources)
    wave = destroy_order.wave_of(order)
    for worker in WORKERS:
        wake = one(plan, f"-teardown-wake-{cluster_id(worker)}")
        assert wake.type == WAKE
        assert wake.plain()["instance_id"] == one(plan, f"-{worker}-instance").id
        for liqo_object in needs_worker(plan, worker):
            assert wave[wake.urn] < wave[liqo_object.urn], f"{liqo_object.name} goes before the wake of {worker}"
        # Nothing may start or stop it meanwhile: the activator is gone first.
        for activator in named(plan, "-homelab-activator-deployment"):
            assert wave[activator.urn] < wave[wake.urn]


def test_ollama_leaves_before_the_virtual_nodes_and_liqo_after_the_peerings(plan):
    """Liqo's order (research of v1.2.0): the release, the NamespaceOffloading, the
    namespace, then each ResourceSlice (its virtual node drains the namespace's
    pods), Identity and tenant namespace, then the Liqo release, whose pre-delete
    hook fails while a NamespaceOffloading or ResourceSlice is left."""
    wave = destroy_order.wave_of(destroy_order.waves(plan.resources))
    chain = ["-homelab-ollama-release", "-homelab-ollama-offloading", "-homelab-ollama-namespace"]
    for earlier, later in zip(chain, chain[1:]):
        assert wave[one(plan, earlier).urn] < wave[one(plan, later).urn], (earlier, later)
    for worker in WORKERS:
        peer = f"-peer-{cluster_id(worker)}"
        for earlier, later in (("-homelab-ollama-namespace", f"{peer}-resource-slice"),
                               (f"{peer}-resource-slice", f"{peer}-identity"),
                               (f"{peer}-identity", f"{peer}-tenant"),
                               (f"{peer}-tenant", "-homelab-liqo-release")):
            assert wave[one(plan, earlier).urn] < wave[one(plan, later).urn], (earlier, later)


def test_the_homelab_provider_goes_last_of_the_homelab(plan):
    wave = destroy_order.wave_of(destroy_order.waves(plan.resources))
    (provider,) = plan.of_type(PROVIDER_K8S)
    for resource in plan.resources:
        if resource.type.startswith("kubernetes:"):
            assert wave[resource.urn] < wave[provider.urn], resource.name


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_without_the_homelab_nothing_waits_on_a_worker(placement):
    """A stack whose homelab side was never installed: no Kubernetes object, no
    wake; the worker's own order still holds (attachment, guard, instance)."""
    plan = harness.run_stack("dev", PLACEMENTS[placement])
    assert not [r for r in plan.resources if r.type.startswith("kubernetes:") or r.type == PROVIDER_K8S]
    assert not named(plan, "-teardown-wake-hybrid-llm-dev-gpu-0")
    wave = destroy_order.wave_of(destroy_order.waves(plan.resources))
    chain = ["-gpu-0-models-attachment", "-gpu-0-spot-guard", "-gpu-0-instance"]
    for earlier, later in zip(chain, chain[1:]):
        assert wave[one(plan, earlier).urn] < wave[one(plan, later).urn], (earlier, later)


def test_waves_follow_the_engine_rule_on_a_small_graph():
    """ScheduleDeletes: take every resource with no condemned dependency, repeat,
    then reverse. Parents and providers count as dependencies."""
    from types import SimpleNamespace as R

    graph = [R(urn="p", parent=None, dependencies=(), provider=None),
             R(urn="a", parent=None, dependencies=(), provider="p::id"),
             R(urn="b", parent="a", dependencies=(), provider=None),
             R(urn="c", parent=None, dependencies=("b",), provider=None),
             R(urn="d", parent=None, dependencies=(), provider=None)]
    assert destroy_order.waves(graph) == [["c"], ["b"], ["a"], ["d", "p"]]
