"""Overlay addresses of the Nebula mesh, derived from `nebulaCidr` alone.

The range is cut into equal blocks: block 0 holds the lighthouse (its first
address), block 1 the homelab nodes, block 2 the GPU workers, block 3 is kept free
for later roles. Blocks are /24s when the range is /22 or larger (10.42.0.1,
10.42.1.x, 10.42.2.x for the default /16), quarters of it otherwise. Every host
carries the mesh's own prefix length in its certificate, so all hosts share one
subnet and `static_host_map` always reaches the lighthouse.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

_LIGHTHOUSE, _HOMELAB, _GPU = 0, 1, 2
_SMALLEST_MESH = 28


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
