"""One Nebula config model, rendered per host as the YAML `nebula -config` reads.

Every host gets the same shape; only its role decides the listen port, whether
it is the lighthouse, and what its firewall lets in. Keys are the ones Nebula 1.6
(Debian's, which the tests run) and 1.10 (what the instances install) both read.

Listen ports: the lighthouse and the AWS workers listen on `nebulaPort`, the one
UDP port their security groups open. Homelab nodes listen on port 0 (a random
port): they sit behind the home router's NAT with no port forward, so a fixed
port would buy nothing, and a random one never clashes with anything else on a
node (the homelab runs Nebula with host networking). They reach the others by
punching out through the NAT, which `punchy` keeps open.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

import yaml

from components.inventory import Host

PKI_DIR = "/etc/nebula"
TUN_DEVICE = "nebula1"
# Leaves room for Nebula's own headers inside a 1500-byte (or PPPoE) underlay.
# Whatever tunnels over the mesh (Liqo's WireGuard gateway) must fit inside it:
# WireGuard adds 60 bytes, so its MTU must be at most 1240, not Liqo's default 1340.
TUN_MTU = 1300
LIGHTHOUSE_INTERVAL_SECONDS = 60

K3S_API_PORT = 6443
LIQO_GATEWAY_PORT = 51840
OLLAMA_PORT = 11434


@dataclass(frozen=True)
class Rule:
    """An inbound firewall rule: `group` None means any host of the mesh."""

    proto: str
    port: str | int = "any"
    group: str | None = None

    def render(self) -> dict[str, Any]:
        rule: dict[str, Any] = {"port": self.port, "proto": self.proto}
        if self.group:
            rule["group"] = self.group
        else:
            rule["host"] = "any"
        return rule


_ICMP = Rule("icmp")
# What each role lets in. Outbound is open for all; replies to outbound traffic
# come back through Nebula's connection tracking.
INBOUND: dict[str, tuple[Rule, ...]] = {
    "lighthouse": (_ICMP,),
    "homelab": (_ICMP,),
    "gpu": (
        _ICMP,
        Rule("tcp", K3S_API_PORT, "homelab"),
        Rule("udp", LIQO_GATEWAY_PORT, "homelab"),
        Rule("tcp", OLLAMA_PORT, "homelab"),
    ),
}


def listen_port(host: Host, nebula_port: int) -> int:
    return 0 if host.role == "homelab" else nebula_port


def node_config(host: Host, lighthouse: Host, lighthouse_endpoint: str, nebula_port: int) -> dict[str, Any]:
    """The config of one host as data. `lighthouse_endpoint` is `EIP:port`."""
    am_lighthouse = host.role == "lighthouse"
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
        "listen": {"host": "0.0.0.0", "port": listen_port(host, nebula_port)},
        "punchy": {"punch": True, "respond": True},
        "tun": {"disabled": False, "dev": TUN_DEVICE, "mtu": TUN_MTU,
                "drop_local_broadcast": False, "drop_multicast": False},
        "logging": {"level": "info", "format": "text"},
        "firewall": {
            "outbound_action": "drop",
            "inbound_action": "drop",
            "conntrack": {"tcp_timeout": "12m", "udp_timeout": "3m", "default_timeout": "10m"},
            "outbound": [{"port": "any", "proto": "any", "host": "any"}],
            "inbound": [rule.render() for rule in INBOUND[host.role]],
        },
    }


def render(config: dict[str, Any]) -> str:
    return yaml.safe_dump(config, sort_keys=False, default_flow_style=False)


def endpoint(public_ip: str, port: int) -> str:
    """`EIP:port`, refusing anything that is not an IPv4 address."""
    return f"{ipaddress.IPv4Address(public_ip)}:{port}"
