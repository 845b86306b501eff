"""One Nebula config model, rendered per host as the YAML `nebula -config` reads.

Every host gets the same shape; only its role decides the listen port, whether
it is the lighthouse, what it routes and what its firewall lets in. Keys are the
ones Nebula 1.6 (Debian's, which the tests run) and 1.10 (what the instances
install) both read.

Listen ports: the lighthouse and the AWS workers listen on `nebulaPort`, the one
UDP port their security groups open. Homelab nodes listen on port 0 (a random
port): they sit behind the home router's NAT with no port forward, so a fixed
port would buy nothing, and a random one never clashes with anything else on a
node (the homelab runs Nebula with host networking). They reach the others by
punching out through the NAT, which `punchy` keeps open.

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
LIGHTHOUSE_INTERVAL_SECONDS = 60

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


def listen_port(host: Host, nebula_port: int) -> int:
    return _listen_port(host.role, nebula_port)


def _listen_port(role: str, nebula_port: int) -> int:
    return 0 if role == "homelab" else nebula_port


def node_config(host: Host, lighthouse: Host, lighthouse_endpoint: str, nebula_port: int,
                workers: Sequence[Host] = ()) -> dict[str, Any]:
    """The config of one host as data. `lighthouse_endpoint` is `EIP:port`;
    `workers` are the GPU workers whose pod ranges homelab nodes route."""
    if host.role == "homelab":
        return homelab_config(lighthouse, lighthouse_endpoint, nebula_port, workers)
    config = _config(host.role, inbound_rules(host), [], lighthouse, lighthouse_endpoint, nebula_port)
    if host.pod_cidr is not None:
        # Nebula tells the lighthouse every local address, the pod bridge's too; a
        # peer would then try to reach this host through the very range it routes
        # via this host. Keep the pod range out of what is advertised.
        config["lighthouse"]["local_allow_list"] = {str(host.pod_cidr): False}
    return config


def homelab_config(lighthouse: Host, lighthouse_endpoint: str, nebula_port: int,
                   workers: Sequence[Host]) -> dict[str, Any]:
    """The one config every homelab node runs: nothing in it names a node."""
    return _config("homelab", (_ICMP,), unsafe_routes(workers), lighthouse, lighthouse_endpoint, nebula_port)


def _config(role: str, inbound: Sequence[Rule], routes: list[dict[str, str]], lighthouse: Host,
            lighthouse_endpoint: str, nebula_port: int) -> dict[str, Any]:
    am_lighthouse = role == "lighthouse"
    lighthouse_ip = str(lighthouse.overlay_ip)
    return {
        "pki": {"ca": f"{PKI_DIR}/ca.crt", "cert": f"{PKI_DIR}/host.crt", "key": f"{PKI_DIR}/host.key"},
        # The lighthouse needs no map to itself; everyone else finds it at its EIP.
        "static_host_map": {} if am_lighthouse else {lighthouse_ip: [lighthouse_endpoint]},
        "lighthouse": {
            "am_lighthouse": am_lighthouse,
            "interval": LIGHTHOUSE_INTERVAL_SECONDS,
            "hosts": [] if am_lighthouse else [lighthouse_ip],
        },
        "listen": {"host": "0.0.0.0", "port": _listen_port(role, nebula_port)},
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


def endpoint(public_ip: str, port: int) -> str:
    """`EIP:port`, refusing anything that is not an IPv4 address."""
    return f"{ipaddress.IPv4Address(public_ip)}:{port}"
