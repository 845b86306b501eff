"""Overlay addresses of the Nebula mesh, derived from `nebulaCidr` alone.

The range is cut into equal blocks: block 0 holds the lighthouse (its first
address), block 1 the homelab nodes, block 2 the GPU workers, block 3 is kept free
for later roles. Blocks are /24s when the range is /22 or larger (10.42.0.1,
10.42.1.x, 10.42.2.x for the default /16), quarters of it otherwise. Every host
carries the mesh's own prefix length in its certificate, so all hosts share one
subnet and `static_host_map` always reaches the lighthouse.

Pod ranges of the GPU workers, derived from `gpuClusterPodCidr` alone: worker i
gets the i-th /24 of it as its k3s `--cluster-cidr`, and its Nebula certificate
carries that /24 as an unsafe network (see `worker_pod_range`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

_LIGHTHOUSE, _HOMELAB, _GPU = 0, 1, 2
_SMALLEST_MESH = 28
# k3s's kube-controller-manager gives each node a /24 of --cluster-cidr (IPv4
# --node-cidr-mask-size defaults to 24) and refuses a cluster CIDR smaller than
# that. A GPU worker is a one-node k3s, so a /24 cluster CIDR is exactly its one
# node's range: what the worker's certificate carries is what its pods use.
WORKER_POD_PREFIX = 24


def _block_prefix(mesh: ipaddress.IPv4Network) -> int:
    return 24 if mesh.prefixlen <= 22 else mesh.prefixlen + 2


def _usable_hosts(block: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    """Addresses of a block without its first and last (never handed out)."""
    return list(block.hosts()) if block.prefixlen < 31 else []


def capacity_problem(
    mesh: ipaddress.IPv4Network, *, homelab_nodes: int, gpu_workers: int
) -> Optional[tuple[str, str]]:
    """(key, problem) when the range cannot address the hosts asked for, else None."""
    if mesh.prefixlen > _SMALLEST_MESH:
        return ("nebulaCidr", f"/{mesh.prefixlen} is too small for the mesh; use /{_SMALLEST_MESH} or larger")
    plan = MeshAddressPlan(mesh)
    homelab_room = len(_usable_hosts(plan.block(_HOMELAB)))
    gpu_room = len(_usable_hosts(plan.block(_GPU)))
    if homelab_nodes > homelab_room:
        return ("homelabNodes", f"{homelab_nodes} nodes do not fit in {plan.block(_HOMELAB)} "
                                f"(room for {homelab_room}); widen hybrid-llm:nebulaCidr")
    if gpu_workers > gpu_room:
        return ("gpuWorkers", f"{gpu_workers} workers do not fit in {plan.block(_GPU)} "
                              f"(room for {gpu_room}); widen hybrid-llm:nebulaCidr")
    return None


@dataclass(frozen=True)
class MeshAddressPlan:
    """Who gets which overlay address."""

    network: ipaddress.IPv4Network

    def block(self, index: int) -> ipaddress.IPv4Network:
        blocks = self.network.subnets(new_prefix=_block_prefix(self.network))
        for i, block in enumerate(blocks):
            if i == index:
                return block
        raise IndexError(index)

    @property
    def prefixlen(self) -> int:
        return self.network.prefixlen

    @property
    def lighthouse(self) -> ipaddress.IPv4Address:
        return _usable_hosts(self.block(_LIGHTHOUSE))[0]

    def homelab(self, index: int) -> ipaddress.IPv4Address:
        return _usable_hosts(self.block(_HOMELAB))[index]

    def gpu_worker(self, index: int) -> ipaddress.IPv4Address:
        return _usable_hosts(self.block(_GPU))[index]

    def with_prefix(self, address: ipaddress.IPv4Address) -> str:
        """`10.42.2.1/16`: the form a Nebula certificate carries."""
        return f"{address}/{self.prefixlen}"


def _pod_range_room(pod_cidr: ipaddress.IPv4Network) -> int:
    return 2 ** (WORKER_POD_PREFIX - pod_cidr.prefixlen) if pod_cidr.prefixlen <= WORKER_POD_PREFIX else 0


def worker_pod_range(pod_cidr: ipaddress.IPv4Network, index: int) -> ipaddress.IPv4Network:
    """The pod range of GPU worker `index`: the index-th /24 of `gpuClusterPodCidr`.

    By index, not by share of the range: adding a worker never moves an existing
    worker's range, so its certificate, its k3s (which keeps a node's pod range
    once assigned) and the homelab's routes to it stay as they are. A /24 is what
    k3s gives a node anyway (room for its default 110 pods), and a /16 holds 256
    workers. Raises ValueError/IndexError where `pod_range_problem` reports one.
    """
    if pod_cidr.prefixlen > WORKER_POD_PREFIX:
        raise ValueError(f"{pod_cidr} is smaller than a /{WORKER_POD_PREFIX}")
    if not 0 <= index < _pod_range_room(pod_cidr):
        raise IndexError(f"no /{WORKER_POD_PREFIX} number {index} in {pod_cidr}")
    start = int(pod_cidr.network_address) + index * 2 ** (32 - WORKER_POD_PREFIX)
    return ipaddress.IPv4Network((start, WORKER_POD_PREFIX))


def pod_range_problem(pod_cidr: ipaddress.IPv4Network, gpu_workers: int) -> Optional[tuple[str, str]]:
    """(key, problem) when `gpuClusterPodCidr` cannot give every worker its /24, else None."""
    if pod_cidr.prefixlen > WORKER_POD_PREFIX:
        return ("gpuClusterPodCidr", f"/{pod_cidr.prefixlen} is too small: each GPU worker's k3s takes a "
                                     f"/{WORKER_POD_PREFIX} (what k3s gives its node); use /{WORKER_POD_PREFIX} "
                                     "or larger")
    room = _pod_range_room(pod_cidr)
    if gpu_workers > room:
        return ("gpuWorkers", f"{gpu_workers} workers need a /{WORKER_POD_PREFIX} each but {pod_cidr} holds "
                              f"{room}; widen hybrid-llm:gpuClusterPodCidr")
    return None
