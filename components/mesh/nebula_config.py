"""One Nebula config model, rendered per host as the YAML `nebula -config` reads.

Every host gets the same shape; its role decides what it routes and what its
firewall lets in, and whether it is a lighthouse (`Host.lighthouse`, apart from
the role) decides its listen port and its `static_host_map`. Keys are the
ones Nebula 1.6 (Debian's, which the tests run) and 1.10 (what the instances
install) both read.

Listen ports: every lighthouse and the AWS hosts listen on `nebulaPort`, the one
UDP port their security groups (or, for a homelab lighthouse, the router's
forward) open. Other homelab nodes listen on port 0 (a random port): they sit
behind the home router's NAT with no port forward, so a fixed port would buy
nothing, and a random one never clashes with anything else on a node (the
homelab runs Nebula with host networking). They reach the others by punching out
through the NAT, which `punchy` keeps open.

The packet path (DESIGN decision 8): Liqo's own network is off and Nebula alone
carries pod traffic, so nothing tunnels inside the mesh and the tun MTU is all
there is to size. Each GPU worker's certificate carries its k3s pod range as an
unsafe network; every homelab node routes each worker's range via that worker's
overlay address (`tun.unsafe_routes`) and source-NATs what its pods send into the
mesh (components/mesh/snat.py), because a receiving Nebula drops any source its
peer's certificate does not carry. The homelab config therefore names no node:
all homelab nodes share one config and differ only in certificate and key.

Rules for traffic to a pod range, by Nebula version (read in its source):
* 1.6 has no `local_cidr` (the key is ignored): a rule matches every address the
  host's certificate carries, the pod range as well as the overlay address.
* 1.7 and 1.8 OR `local_cidr` with host/group/cidr (slackhq/nebula#1071); not a
  target here.
* 1.9 ANDs `local_cidr`; a rule without one matches any local address unless
  `firewall.default_local_cidr_any` is false (its default is true).
* 1.10 defaults that setting to false: a rule without `local_cidr` matches only
  the host's overlay network.
So the config sets `default_local_cidr_any: false` and every worker rule names
its `local_cidr`: on 1.9+ the pod range is open to the homelab on Ollama's port
only, and the overlay address on ICMP and the k3s API only. On 1.6 all three rules
reach both addresses; the real-mesh tests (Debian's 1.6) check what holds on both.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any, Sequence

import yaml

from components.inventory import Host

PKI_DIR = "/etc/nebula"
TUN_DEVICE = "nebula1"
# Leaves room for Nebula's own headers inside a 1500-byte (or PPPoE) underlay.
# Unsafe routes take this MTU too (they name none); pods behind a node learn it by
# path MTU discovery from their own node.
TUN_MTU = 1300
# How often a host reports its addresses to its lighthouses (Nebula sends the
# first report at start, then one each interval: lighthouse.go, both 1.6 and
# 1.10). An AWS host reports every 10 s (Nebula's own default): a lighthouse that
# restarted (a homelab node, say) knows a running worker again within 10 s. A
# homelab node reports every 60 s: nobody dials it, and a stopped worker that is
# its lighthouse costs one timed-out handshake per report.
REPORT_INTERVAL_SECONDS = {"aws": 10, "homelab": 60}

K3S_API_PORT = 6443
OLLAMA_PORT = 11434


@dataclass(frozen=True)
class Rule:
    """An inbound firewall rule: `group` None means any host of the mesh;
    `local_cidr` the local addresses it opens (None: Nebula's default, above)."""

    proto: str
    port: str | int = "any"
    group: str | None = None
    local_cidr: str | None = None

    def render(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"port": self.port, "proto": self.proto}
        if self.group:
            rule["group"] = self.group
        else:
            rule["host"] = "any"
        if self.local_cidr:
            rule["local_cidr"] = self.local_cidr
        return rule


_ICMP = Rule("icmp")


def inbound_rules(host: Host) -> tuple[Rule, ...]:
    """What a host lets in. Outbound is open (see `_config`); replies to outbound
    traffic come back through Nebula's connection tracking.

    Lighthouse and homelab nodes: ICMP only. Nothing from the workers' side may
    open a connection to the homelab (its pods are NATed behind the node's
    address, and the node's own firewall takes nothing but ICMP). A GPU worker:
    ICMP from anyone and the k3s API from the homelab (the Liqo consumer) on its
    overlay address, Ollama from the homelab on its pod range.
    """
    if host.role != "gpu":
        return (_ICMP,)
    overlay = f"{host.overlay_ip}/32"
    rules = [Rule("icmp", local_cidr=overlay), Rule("tcp", K3S_API_PORT, "homelab", overlay)]
    if host.pod_cidr is not None:
        rules.append(Rule("tcp", OLLAMA_PORT, "homelab", str(host.pod_cidr)))
    return tuple(rules)


def unsafe_routes(workers: Sequence[Host]) -> list[dict[str, str]]:
    """`tun.unsafe_routes`: each worker's pod range via its overlay address. Only
    `route` and `via` (a single address), the keys 1.6 and 1.10 both read; the
    MTU defaults to the tun's."""
    return [{"route": str(w.pod_cidr), "via": str(w.overlay_ip)} for w in workers if w.pod_cidr is not None]


@dataclass(frozen=True)
class LighthouseAddress:
    """Where the others find one lighthouse: `public` (`addr:port`, an address or a
    DNS name) for hosts outside the home network, `lan` for homelab nodes when the
    lighthouse is itself a homelab node (they dial it on the LAN: no hairpin NAT)."""

    overlay_ip: ipaddress.IPv4Address
    public: str
    lan: str | None = None


def listen_port(host: Host, nebula_port: int) -> int:
    """`nebulaPort` for a lighthouse and every AWS host (the port their security
    group or the home router's forward opens); 0 (random) for other homelab nodes."""
    return nebula_port if host.lighthouse or host.on_aws else 0


def node_config(host: Host, lighthouses: Sequence[LighthouseAddress], nebula_port: int,
                workers: Sequence[Host] = ()) -> dict[str, Any]:
    """The config of one host as data. `workers` are the GPU workers whose pod
    ranges homelab nodes route."""
    routes = unsafe_routes(workers) if host.role == "homelab" else []
    config = _config(host, inbound_rules(host), routes, lighthouses, nebula_port)
    if host.pod_cidr is not None:
        # Nebula tells the lighthouse every local address, the pod bridge's too; a
        # peer would then try to reach this host through the very range it routes
        # via this host. Keep the pod range out of what is advertised.
        config["lighthouse"]["local_allow_list"] = {str(host.pod_cidr): False}
    return config


def homelab_config(lighthouses: Sequence[LighthouseAddress], nebula_port: int,
                   workers: Sequence[Host], network_host: Host) -> dict[str, Any]:
    """The one config every homelab node but a lighthouse runs: nothing in it names
    a node (`network_host` is any such node)."""
    if network_host.role != "homelab" or network_host.lighthouse:
        raise ValueError(f"{network_host.name} is not a plain homelab node")
    return node_config(network_host, lighthouses, nebula_port, workers)


def static_host_map(host: Host, lighthouses: Sequence[LighthouseAddress]) -> dict[str, list[str]]:
    """Every other lighthouse at the endpoints this host can reach: a homelab node
    tries the LAN address first; a lighthouse needs no map (the others report in)."""
    if host.lighthouse:
        return {}
    out = {}
    for lighthouse in lighthouses:
        if host.role == "homelab" and lighthouse.lan:
            out[str(lighthouse.overlay_ip)] = [lighthouse.lan, lighthouse.public]
        else:
            out[str(lighthouse.overlay_ip)] = [lighthouse.public]
    return out


def _config(host: Host, inbound: Sequence[Rule], routes: list[dict[str, str]],
            lighthouses: Sequence[LighthouseAddress], nebula_port: int) -> dict[str, Any]:
    static = static_host_map(host, lighthouses)
    return {
        "pki": {"ca": f"{PKI_DIR}/ca.crt", "cert": f"{PKI_DIR}/host.crt", "key": f"{PKI_DIR}/host.key"},
        "static_host_map": static,
        "lighthouse": {
            "am_lighthouse": host.lighthouse,
            "interval": REPORT_INTERVAL_SECONDS["aws" if host.on_aws else "homelab"],
            "hosts": list(static),
        },
        "listen": {"host": "0.0.0.0", "port": listen_port(host, nebula_port)},
        "punchy": {"punch": True, "respond": True},
        "tun": {"disabled": False, "dev": TUN_DEVICE, "mtu": TUN_MTU,
                "drop_local_broadcast": False, "drop_multicast": False, "unsafe_routes": routes},
        "logging": {"level": "info", "format": "text"},
        "firewall": {
            "outbound_action": "drop",
            "inbound_action": "drop",
            # Explicit for 1.9 (default true there); 1.10's default; 1.6 ignores it.
            "default_local_cidr_any": False,
            "conntrack": {"tcp_timeout": "12m", "udp_timeout": "3m", "default_timeout": "10m"},
            # On a worker under 1.9+ this opens its overlay address only: its pods
            # answer through conntrack but open nothing into the mesh.
            "outbound": [{"port": "any", "proto": "any", "host": "any"}],
            "inbound": [rule.render() for rule in inbound],
        },
    }


def render(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def endpoint(address: str, port: int) -> str:
    """`addr:port` for an Elastic IP or a LAN address, refusing anything that is not
    an IPv4 address (a user's DNS endpoint comes whole from config)."""
    return f"{ipaddress.IPv4Address(address)}:{port}"
