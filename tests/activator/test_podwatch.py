"""The pending-pod watch: the pure predicate on kubernetes client objects, the
wake-loop guards, and the list/watch loop against a fake API whose watch
stream is read by kubernetes_asyncio's real `Watch`."""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from datetime import datetime, timezone
from typing import Any, Optional

import pytest
from kubernetes_asyncio.client import (ApiClient, V1Affinity, V1Container, V1ListMeta, V1NodeAffinity,
                                       V1NodeSelector, V1NodeSelectorRequirement, V1NodeSelectorTerm,
                                       V1ObjectMeta, V1Pod, V1PodCondition, V1PodList, V1PodSpec,
                                       V1PodStatus, V1ResourceRequirements)

from activator.podwatch import PENDING, PodWatch, is_pending_gpu_work, pending_gpu_worker
from activator.waker import Wakers

from .fakes import fast_settings, launch, run, state_of

A, B = "i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"
IDS, CLUSTERS, NODES = (A, B), ("gpu-a", "gpu-b"), ("liqo-gpu-a", "liqo-gpu-b")


def term(key: str, operator: str, values: list[str], field: bool = False) -> V1NodeSelectorTerm:
    requirement = V1NodeSelectorRequirement(key=key, operator=operator, values=values)
    return V1NodeSelectorTerm(match_fields=[requirement]) if field else \
        V1NodeSelectorTerm(match_expressions=[requirement])


def make_pod(name: str = "ollama-0", *, uid: Optional[str] = None, phase: str = "Pending",
             scheduled: tuple[str, Optional[str]] = ("False", "Unschedulable"), gpu: Optional[str] = "1",
             gpu_in: str = "limits", init_gpu: bool = False, node_name: Optional[str] = None,
             node_selector: Optional[dict[str, str]] = None, terms: Optional[list[V1NodeSelectorTerm]] = None,
             deleting: bool = False, version: str = "1") -> V1Pod:
    amounts = {"nvidia.com/gpu": gpu} if gpu is not None else None
    resources = V1ResourceRequirements(**{gpu_in: amounts}) if amounts else None
    main = V1Container(name="main", resources=None if init_gpu else resources)
    init = [V1Container(name="init", resources=resources)] if init_gpu else None
    affinity = V1Affinity(node_affinity=V1NodeAffinity(
        required_during_scheduling_ignored_during_execution=V1NodeSelector(node_selector_terms=terms))) \
        if terms else None
    return V1Pod(
        metadata=V1ObjectMeta(name=name, namespace="llm", uid=uid or f"uid-{name}", resource_version=version,
                              deletion_timestamp=datetime.now(timezone.utc) if deleting else None),
        spec=V1PodSpec(containers=[main], init_containers=init, node_name=node_name,
                       node_selector=node_selector, affinity=affinity),
        status=V1PodStatus(phase=phase, conditions=[V1PodCondition(type="PodScheduled", status=scheduled[0],
                                                                   reason=scheduled[1])]))


@pytest.mark.parametrize("pod, worker", [
    (make_pod(), A),
    (make_pod(gpu_in="requests"), A),
    (make_pod(init_gpu=True), A),
    (make_pod(gpu=None, node_selector={"liqo.io/remote-cluster-id": "gpu-b"}), B),
    (make_pod(node_selector={"liqo.io/remote-cluster-id": "gpu-b", "liqo.io/type": "virtual-node"}), B),
    (make_pod(gpu=None, terms=[term("liqo.io/remote-cluster-id", "In", ["elsewhere", "gpu-b"])]), B),
    (make_pod(gpu=None, terms=[term("kubernetes.io/hostname", "In", ["liqo-gpu-b"])]), B),
    (make_pod(gpu=None, terms=[term("metadata.name", "In", ["liqo-gpu-a"], field=True)]), A),
    (make_pod(gpu=None, node_selector={"kubernetes.io/hostname": "liqo-gpu-b"}), B),
    # Not pending GPU work for us:
    (make_pod(gpu=None), None),
    (make_pod(gpu="0"), None),
    (make_pod(gpu=None, terms=[term("liqo.io/remote-cluster-id", "NotIn", ["gpu-a"])]), None),
    (make_pod(node_selector={"liqo.io/remote-cluster-id": "someone-else"}), None),
    (make_pod(node_name="liqo-gpu-a", scheduled=("True", None)), None),
    (make_pod(node_name="liqo-gpu-a", scheduled=("False", "Unschedulable")), None),
    (make_pod(scheduled=("False", "SchedulingGated")), None),
    (make_pod(scheduled=("True", None)), None),
    (make_pod(phase="Running", scheduled=("True", None)), None),
    (make_pod(deleting=True), None),
])
def test_pending_gpu_work(pod: V1Pod, worker: Optional[str]) -> None:
    assert pending_gpu_worker(pod, IDS, CLUSTERS, NODES) == worker
    assert is_pending_gpu_work(pod, IDS, CLUSTERS, NODES) is (worker is not None)


def test_node_names_default_to_the_cluster_ids() -> None:
    pod = make_pod(gpu=None, node_selector={"kubernetes.io/hostname": "gpu-b"})
    assert pending_gpu_worker(pod, IDS, CLUSTERS) == B
    assert pending_gpu_worker(pod, IDS) is None


class FakeWaker:
    def __init__(self) -> None:
        self.reasons: list[str] = []

    def wake(self, why: str) -> None:
        self.reasons.append(why)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def guarded_watch(cooldown: float = 600.0) -> tuple[PodWatch, dict[str, FakeWaker], Clock]:
    wakers = {A: FakeWaker(), B: FakeWaker()}
    clock = Clock()
    settings = fast_settings("http://127.0.0.1:9", IDS, cluster_ids=CLUSTERS, pod_cooldown_seconds=cooldown)
    return PodWatch(None, wakers, settings, clock=clock), wakers, clock  # type: ignore[arg-type]


def test_the_same_pod_never_wakes_twice(caplog: pytest.LogCaptureFixture) -> None:
    watch, wakers, clock = guarded_watch()
    pod = make_pod()
    caplog.set_level(logging.INFO, logger="activator.podwatch")
    assert watch.consider("ADDED", pod) == A
    for _ in range(3):
        clock.now += 3600  # long past the cooldown: the worker was stopped and the pod is still there
        assert watch.consider("MODIFIED", pod) is None
    assert len(wakers[A].reasons) == 1 and wakers[B].reasons == []
    stays = [r for r in caplog.records if "stays Unschedulable" in r.getMessage()]
    assert len(stays) == 1


def test_other_pods_do_not_wake_a_worker_during_its_cooldown() -> None:
    watch, wakers, clock = guarded_watch(cooldown=600.0)
    assert watch.consider("ADDED", make_pod("first")) == A
    assert watch.consider("ADDED", make_pod("second")) is None
    assert watch.consider("ADDED", make_pod("for-b", node_selector={"liqo.io/remote-cluster-id": "gpu-b"})) == B
    clock.now += 601
    assert watch.consider("MODIFIED", make_pod("second")) is None  # covered by the first wake
    assert watch.consider("ADDED", make_pod("third")) == A
    assert (len(wakers[A].reasons), len(wakers[B].reasons)) == (2, 1)


def test_bound_deleted_and_cpu_pods_wake_nothing() -> None:
    watch, wakers, _ = guarded_watch()
    assert watch.consider("ADDED", make_pod(node_name="liqo-gpu-a", scheduled=("True", None))) is None
    assert watch.consider("ADDED", make_pod("cpu", gpu=None)) is None
    assert watch.consider("DELETED", make_pod("gone")) is None
    assert wakers[A].reasons == [] and wakers[B].reasons == []


def test_a_pending_pod_starts_its_own_worker(moto_clients: tuple[Any, Any]) -> None:
    ec2 = moto_clients[0]
    first, second = launch(ec2), launch(ec2)
    settings = fast_settings("http://127.0.0.1:9", (first, second), cluster_ids=CLUSTERS)

    async def scenario() -> Optional[str]:
        wakers = Wakers(ec2, settings)
        watch = PodWatch(None, wakers, settings)
        woke = watch.consider("ADDED", make_pod(node_selector={"liqo.io/remote-cluster-id": "gpu-b"}))
        await _settled(wakers, settings.instance_ids)
        return woke

    assert run(scenario()) == second
    assert (state_of(ec2, first), state_of(ec2, second)) == ("stopped", "running")


def test_a_pending_pod_with_its_worker_running_starts_nothing(moto_clients: tuple[Any, Any]) -> None:
    from .fakes import RecordingClient

    ec2 = RecordingClient(moto_clients[0])
    running = launch(moto_clients[0], state="running")
    settings = fast_settings("http://127.0.0.1:9", (running,))

    async def scenario() -> None:
        wakers = Wakers(ec2, settings)
        PodWatch(None, wakers, settings).consider("ADDED", make_pod())
        await _settled(wakers, settings.instance_ids)

    run(scenario())
    assert ec2.calls == ["describe_instances"]


async def _settled(wakers: Wakers, ids: tuple[str, ...]) -> None:
    for _ in range(500):
        if not any(wakers[i].busy for i in ids):
            return
        await asyncio.sleep(0.01)


# --- the list/watch loop -------------------------------------------------------------------

class FakeContent:
    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines

    async def readline(self) -> bytes:
        await asyncio.sleep(0)
        return self.lines.pop(0) if self.lines else b""


class FakeResponse:
    def __init__(self, lines: list[bytes]) -> None:
        self.content = FakeContent(lines)

    def close(self) -> None:
        pass

    def release(self) -> None:
        pass


class FakeCoreApi:
    """Answers list and watch calls from a script; blocks once it runs out."""

    def __init__(self, script: list[Any]) -> None:
        self.script = script
        self.calls: list[dict[str, Any]] = []
        self.exhausted = asyncio.Event()

    async def list_pod_for_all_namespaces(self, **kwargs: Any) -> Any:
        """:rtype: V1PodList"""
        self.calls.append(kwargs)
        if not self.script:
            self.exhausted.set()
            await asyncio.Event().wait()
        item = self.script.pop(0)
        if kwargs.get("watch"):
            return FakeResponse(list(item))
        return item


def event(kind: str, obj: Any) -> bytes:
    raw = obj if isinstance(obj, dict) else ApiClient().sanitize_for_serialization(obj)
    return (json.dumps({"type": kind, "object": raw}) + "\n").encode()


GONE = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired",
        "message": "too old resource version: 11 (15)", "code": 410}


def test_the_loop_relists_after_410_gone_and_resumes_a_finished_watch() -> None:
    settings = replace(fast_settings("http://127.0.0.1:9", IDS, cluster_ids=CLUSTERS), pod_cooldown_seconds=0.0)
    pod_a = make_pod("a", version="11")
    pod_b = make_pod("b", node_selector={"liqo.io/remote-cluster-id": "gpu-b"}, version="20")
    pod_c = make_pod("c", version="21")
    bound = make_pod("bound", node_name="liqo-gpu-a", scheduled=("True", None), version="22")

    async def scenario() -> tuple[PodWatch, FakeCoreApi, dict[str, FakeWaker]]:
        api = FakeCoreApi([
            V1PodList(items=[], metadata=V1ListMeta(resource_version="10")),
            [event("ADDED", pod_a), event("ERROR", GONE)],
            V1PodList(items=[pod_b], metadata=V1ListMeta(resource_version="20")),
            [],
            [event("BOOKMARK", {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": "21"}}),
             event("MODIFIED", pod_c), event("MODIFIED", bound)],
        ])
        wakers = {A: FakeWaker(), B: FakeWaker()}
        watch = PodWatch(api, wakers, settings)  # type: ignore[arg-type]
        task = asyncio.get_running_loop().create_task(watch.run())
        await asyncio.wait_for(api.exhausted.wait(), 10)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return watch, api, wakers

    watch, api, wakers = run(scenario())
    assert watch.lists == 2
    assert [("watch" if c.get("watch") else "list", c.get("resource_version")) for c in api.calls] == [
        ("list", None), ("watch", "10"), ("list", None), ("watch", "20"), ("watch", "20"), ("watch", "22")]
    assert all(c["field_selector"] == PENDING for c in api.calls)
    assert wakers[A].reasons == ["pending pod llm/a", "pending pod llm/c"]
    assert wakers[B].reasons == ["pending pod llm/b"]
