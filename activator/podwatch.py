"""Waking a worker for GPU pods that cannot be scheduled.

`pending_gpu_worker` is a pure function of a `V1Pod`: the worker a pod is waiting
for, or None. A pod is waiting for a worker only when the scheduler has said so:
phase Pending, no `spec.nodeName`, condition PodScheduled=False with reason
Unschedulable, and either it requests `nvidia.com/gpu` or its nodeSelector /
required node affinity names one of our workers (label
`liqo.io/remote-cluster-id`, or the virtual node by `kubernetes.io/hostname` or
field `metadata.name`). Named workers win; a GPU pod that names none goes to the
first worker; a pod that names only clusters that are not ours is not ours.

Wake-loop guards (decision 10): a pod bound to a stopped worker's virtual node
is not pending work (it has a node). Each pod UID wakes a worker at most once;
if it is seen pending again, that is logged once and nothing is started (the
worker is up and the pod still does not fit: capacity, quota or a taint, which
no restart fixes). After a pod woke a worker, other pods do not wake that worker
again for `pod_cooldown_seconds` (their demand is already being served); they
count as having woken it. A pending pod whose worker is already running costs
one DescribeInstances and no start. The UID memory is per process, so a
restarted activator may wake a worker once more for a pod that stayed pending.

The loop lists pending pods (field selector `status.phase=Pending`), then
watches from the list's resourceVersion with kubernetes_asyncio's `Watch`
(async, so it shares the proxy's event loop and stops cleanly on SIGTERM; no
thread). A watch that ends is resumed from its last resourceVersion; 410 Gone
(expired) lists again; other errors back off and list again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable, Optional

import aiohttp
from kubernetes_asyncio.client import ApiException, V1Pod
from kubernetes_asyncio.watch import Watch

from activator.settings import Settings
from activator.waker import Wakers

log = logging.getLogger("activator.podwatch")

GPU_RESOURCE = "nvidia.com/gpu"
CLUSTER_LABEL = "liqo.io/remote-cluster-id"
HOSTNAME_LABEL = "kubernetes.io/hostname"
PENDING = "status.phase=Pending"
REMEMBERED_PODS = 10_000
WATCH_SECONDS = 300


def _positive(quantity: Any) -> bool:
    try:
        return Decimal(str(quantity).strip()) > 0
    except InvalidOperation:
        return str(quantity).strip() not in ("", "0")


def requests_gpu(pod: V1Pod) -> bool:
    spec = pod.spec
    for container in (spec.containers or []) + (spec.init_containers or []):
        resources = container.resources
        if resources is None:
            continue
        for amounts in (resources.requests or {}, resources.limits or {}):
            if GPU_RESOURCE in amounts and _positive(amounts[GPU_RESOURCE]):
                return True
    return False


def unschedulable(pod: V1Pod) -> bool:
    """Pending, on no node, and the scheduler found no node for it."""
    status = pod.status
    if status is None or status.phase != "Pending" or pod.spec.node_name:
        return False
    if pod.metadata is not None and pod.metadata.deletion_timestamp is not None:
        return False
    return any(c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
               for c in status.conditions or [])


def selected_names(pod: V1Pod) -> tuple[set[str], set[str]]:
    """(cluster ids, node names) the pod's nodeSelector or required node affinity asks for."""
    clusters: set[str] = set()
    nodes: set[str] = set()
    selector = pod.spec.node_selector or {}
    if CLUSTER_LABEL in selector:
        clusters.add(selector[CLUSTER_LABEL])
    if HOSTNAME_LABEL in selector:
        nodes.add(selector[HOSTNAME_LABEL])
    affinity = pod.spec.affinity.node_affinity if pod.spec.affinity else None
    required = affinity.required_during_scheduling_ignored_during_execution if affinity else None
    for term in (required.node_selector_terms or []) if required else []:
        for expression in term.match_expressions or []:
            if expression.operator != "In":
                continue
            if expression.key == CLUSTER_LABEL:
                clusters.update(expression.values or [])
            elif expression.key == HOSTNAME_LABEL:
                nodes.update(expression.values or [])
        for field in term.match_fields or []:
            if field.key == "metadata.name" and field.operator == "In":
                nodes.update(field.values or [])
    return clusters, nodes


def pending_gpu_worker(pod: V1Pod, instance_ids: tuple[str, ...], cluster_ids: tuple[str, ...] = (),
                       virtual_nodes: tuple[str, ...] = ()) -> Optional[str]:
    """The instance id of the worker this pod waits for, or None."""
    if not unschedulable(pod):
        return None
    clusters, nodes = selected_names(pod)
    node_names = virtual_nodes or cluster_ids
    for index, instance_id in enumerate(instance_ids):
        if index < len(cluster_ids) and cluster_ids[index] in clusters:
            return instance_id
        if index < len(node_names) and node_names[index] in nodes:
            return instance_id
    if clusters or nodes:
        return None
    return instance_ids[0] if requests_gpu(pod) else None


def is_pending_gpu_work(pod: V1Pod, instance_ids: tuple[str, ...], cluster_ids: tuple[str, ...] = (),
                        virtual_nodes: tuple[str, ...] = ()) -> bool:
    return pending_gpu_worker(pod, instance_ids, cluster_ids, virtual_nodes) is not None


def _name(pod: V1Pod) -> str:
    return f"{pod.metadata.namespace}/{pod.metadata.name}"


class PodWatch:
    def __init__(self, core_api: Any, wakers: Wakers, settings: Settings, *,
                 clock: Callable[[], float] = time.monotonic,
                 watch_factory: Callable[[], Watch] = Watch) -> None:
        self._api = core_api
        self._wakers = wakers
        self._settings = settings
        self._clock = clock
        self._watch_factory = watch_factory
        self._woke: OrderedDict[str, str] = OrderedDict()
        """Pod UID -> the worker it woke (or was covered by), oldest first."""
        self._told: set[str] = set()
        self._cooldown_until: dict[str, float] = {}
        self.lists = 0
        """How many times the pods were listed (1 + one per expiry or error)."""

    def consider(self, kind: str, pod: V1Pod) -> Optional[str]:
        """Handle one watch event; the worker woken, if any."""
        uid = pod.metadata.uid if pod.metadata else None
        if not uid:
            return None
        if kind == "DELETED":
            self._woke.pop(uid, None)
            self._told.discard(uid)
            return None
        s = self._settings
        instance_id = pending_gpu_worker(pod, s.instance_ids, s.cluster_ids, s.virtual_nodes)
        if instance_id is None:
            return None
        if uid in self._woke:
            if uid not in self._told:
                self._told.add(uid)
                log.warning("pod %s stays Unschedulable after worker %s was woken for it; not waking "
                            "again (check its GPU request, quota and taints)", _name(pod), self._woke[uid])
            return None
        self._remember(uid, instance_id)
        if self._clock() < self._cooldown_until.get(instance_id, 0.0):
            log.info("pod %s waits for worker %s, woken by another pod moments ago; not waking again",
                     _name(pod), instance_id)
            return None
        self._cooldown_until[instance_id] = self._clock() + s.pod_cooldown_seconds
        log.info("pod %s is pending GPU work: waking worker %s", _name(pod), instance_id)
        self._wakers[instance_id].wake(f"pending pod {_name(pod)}")
        return instance_id

    def _remember(self, uid: str, instance_id: str) -> None:
        self._woke[uid] = instance_id
        while len(self._woke) > REMEMBERED_PODS:
            old, _ = self._woke.popitem(last=False)
            self._told.discard(old)

    def _consider_all(self, pods: Iterable[V1Pod]) -> None:
        for pod in pods:
            self.consider("ADDED", pod)

    async def run(self) -> None:
        pause = 1.0
        while True:
            try:
                listing = await self._api.list_pod_for_all_namespaces(field_selector=PENDING)
                self.lists += 1
                self._consider_all(listing.items or [])
                pause = 1.0
                await self._watch(listing.metadata.resource_version)
            except ApiException as err:
                if err.status == 410:
                    log.info("pod watch expired (410 Gone); listing again")
                    continue
                log.warning("pod watch failed: HTTP %s %s; listing again in %.0fs", err.status,
                            err.reason, pause)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
                log.warning("pod watch failed: %s; listing again in %.0fs", type(err).__name__, pause)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 60.0)

    async def _watch(self, version: Optional[str]) -> None:
        """Follow changes from `version` until an error ends the watch."""
        while True:
            async with self._watch_factory() as watch:
                stream = watch.stream(
                    self._api.list_pod_for_all_namespaces, field_selector=PENDING,
                    resource_version=version, timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                    _request_timeout=aiohttp.ClientTimeout(total=None, sock_connect=10,
                                                           sock_read=WATCH_SECONDS + 60))
                async for event in stream:
                    if event["type"] in ("ADDED", "MODIFIED", "DELETED"):
                        self.consider(event["type"], event["object"])
                version = watch.resource_version or version
