"""Who is in the mesh: every host with its role, overlay address and groups,
whether it is a Nebula lighthouse, and where its per-host settings live in SSM
Parameter Store.

Nebula (certificates, configs), compute (instances, IAM) and the clusters all read
this one list, so a host's name and address are decided in one place. A GPU
worker's pod range is decided here too: its k3s uses it, its certificate carries
it, and the homelab routes it via the worker's overlay address.

Being a lighthouse is a property of a host apart from its role
(`lighthousePlacement`): every GPU worker (`workers`), one homelab node
(`homelab`), or a host of its own, role `lighthouse` (`ec2`). Nothing a
certificate carries (name, address, groups, pod range) depends on it, so moving
the lighthouse re-issues no certificate but the EC2 lighthouse's own.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal, Optional

from components import addressing
from components.config import NAMESPACE, ConfigError, StackConfig

Role = Literal["lighthouse", "homelab", "gpu"]

GROUPS: dict[str, tuple[str, ...]] = {
    "lighthouse": ("lighthouse",),
    "homelab": ("homelab", "kubernetes"),
    "gpu": ("aws", "gpu", "kubernetes"),
}


@dataclass(frozen=True)
class Host:
    name: str
    role: Role
    overlay_ip: ipaddress.IPv4Address
    groups: tuple[str, ...]
    index: int = 0            # position among hosts of its role
    # GPU workers: the k3s pod range behind this host (addressing.worker_pod_range),
    # carried in its certificate; None for hosts with nothing routed behind them.
    pod_cidr: Optional[ipaddress.IPv4Network] = None
    # Runs Nebula with `am_lighthouse`: the others find it at a fixed endpoint.
    lighthouse: bool = False

    @property
    def on_aws(self) -> bool:
        return self.role != "homelab"


def gpu_worker_name(index: int) -> str:
    return f"gpu-{index}"


def hosts(cfg: StackConfig) -> list[Host]:
    """The EC2 lighthouse first (placement `ec2` only), then homelab nodes, then GPU
    workers; the overlay addresses do not depend on the placement."""
    # Config validation reports this first; checked again so no certificate or k3s
    # flag is ever made from a range that cannot hold every worker.
    problem = addressing.pod_range_problem(cfg.gpu_cluster_pod_cidr, cfg.gpu_workers)
    if problem:
        raise ConfigError(f"{NAMESPACE}:{problem[0]}: {problem[1]}")
    plan = cfg.mesh
    placement = cfg.lighthouse_placement
    out = []
    if placement == "ec2":
        out.append(Host("lighthouse", "lighthouse", plan.lighthouse, GROUPS["lighthouse"], lighthouse=True))
    out += [Host(name, "homelab", plan.homelab(i), GROUPS["homelab"], i, lighthouse=name == cfg.lighthouse_node)
            for i, name in enumerate(cfg.homelab_nodes)]
    out += [Host(gpu_worker_name(i), "gpu", plan.gpu_worker(i), GROUPS["gpu"], i,
                 addressing.worker_pod_range(cfg.gpu_cluster_pod_cidr, i), lighthouse=placement == "workers")
            for i in range(cfg.gpu_workers)]
    return out


def ssm_prefix(cfg: StackConfig, host: Host | str) -> str:
    """`/hybrid-llm/<stack>/hosts/<host>`: every parameter of one host lives below
    it, so an instance role can be allowed exactly its own subtree."""
    name = host if isinstance(host, str) else host.name
    return f"/{cfg.project}/{cfg.stack}/hosts/{name}"
