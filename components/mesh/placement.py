"""Where the Nebula lighthouse lives (`lighthousePlacement`), and so where every
other host finds it.

- `workers` (the default): each GPU worker is a lighthouse on an Elastic IP of its
  own. The only path in this topology is a homelab node dialling a worker, so the
  homelab lists every worker (address in `static_host_map`) and nothing runs for
  the mesh alone.
- `ec2`: one small always-on instance on an Elastic IP, one address for the mesh.
- `homelab`: one homelab node, at the `host:port` the home router forwards; the
  workers need no Elastic IP and are found through it (they report at start).

The Elastic IPs belong to the network component (components/aws/network.py); the
endpoints here are what the configs carry (components/mesh/nebula_config.py).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import pulumi

from components.config import StackConfig
from components.inventory import Host
from components.mesh import nebula_config


def zone_instance_types(cfg: StackConfig) -> dict[str, str]:
    """Config key -> instance type the subnet's AZ must offer: the GPU type, and
    the lighthouse's only where an EC2 lighthouse runs."""
    types = {"gpuInstanceType": cfg.gpu_instance_type}
    if cfg.lighthouse_placement == "ec2":
        types["lighthouseInstanceType"] = cfg.lighthouse_instance_type
    return types


def aws_lighthouses(hosts: Sequence[Host]) -> list[str]:
    """AWS hosts that are lighthouses: each needs a stack-owned Elastic IP."""
    return [h.name for h in hosts if h.lighthouse and h.on_aws]


def public_endpoints(cfg: StackConfig, hosts: Sequence[Host],
                     public_ips: Mapping[str, pulumi.Input[str]]) -> dict[str, pulumi.Input[str]]:
    """Lighthouse name -> the `addr:port` hosts outside the home network dial."""
    out: dict[str, pulumi.Input[str]] = {}
    for host in hosts:
        if not host.lighthouse:
            continue
        if host.on_aws:
            out[host.name] = pulumi.Output.from_input(public_ips[host.name]).apply(
                lambda ip: nebula_config.endpoint(ip, cfg.nebula_port))
        else:
            out[host.name] = cfg.homelab_lighthouse_endpoint
    return out


def lan_endpoints(cfg: StackConfig) -> dict[str, str]:
    """The homelab lighthouse's LAN `addr:port`, for the other homelab nodes."""
    if cfg.lighthouse_node is None or cfg.homelab_lighthouse_lan_ip is None:
        return {}
    return {cfg.lighthouse_node: nebula_config.endpoint(str(cfg.homelab_lighthouse_lan_ip), cfg.nebula_port)}


def home_udp_ports(cfg: StackConfig) -> list[int]:
    """The UDP port the workers dial a homelab lighthouse on, if there is one."""
    if cfg.homelab_lighthouse_endpoint is None:
        return []
    return [int(cfg.homelab_lighthouse_endpoint.rpartition(":")[2])]
