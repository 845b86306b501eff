"""Source NAT on homelab nodes, for what their pods send into the Nebula mesh.

A homelab pod's packet to a worker's pod range leaves the node through the tun
device with the pod's own address as its source. Nebula refuses it twice: the
sending Nebula drops a local address its own certificate does not carry, and a
receiving Nebula drops a source its peer's certificate does not carry. Homelab
certificates carry only the node's overlay address (pod ranges of a Kubernetes
cluster move with its CNI and are not ours to sign), so the node rewrites the
source to that address on the way out:

    iptables -t nat -A POSTROUTING -o nebula1 ! -s <nebulaCidr> -j MASQUERADE

* MASQUERADE, not SNAT --to-source: it takes the address of the interface the
  packet leaves by, which is the node's own overlay address, so one rule (and one
  script in one ConfigMap) serves every node; and it forgets its mappings when
  the tun goes away, so a restarted Nebula starts clean.
* `-o nebula1`: only what enters the mesh; the node's other traffic is untouched.
* `! -s <nebulaCidr>`: the node's own overlay-sourced traffic already carries the
  right address and keeps it; every other source (any CNI's pod range, a host
  address) is rewritten, without knowing the homelab's pod range.

Replies come back to the node's address and conntrack returns them to the pod.
The rule is applied by a tiny POSIX sh script (an init container in the host
network namespace with NET_ADMIN runs it before Nebula starts): check with `-C`,
append with `-A` only when missing, so running it again on every pod start adds
nothing. `-w` waits for the xtables lock that kube-proxy may hold.
"""

from __future__ import annotations

import ipaddress
import shlex

from components.mesh.nebula_config import TUN_DEVICE


def snat_rules(mesh_cidr: ipaddress.IPv4Network, tun_device: str = TUN_DEVICE) -> list[list[str]]:
    """The rules as iptables arguments (no command name), each in its `-A` form."""
    return [["-t", "nat", "-A", "POSTROUTING", "-o", tun_device, "!", "-s", str(mesh_cidr), "-j", "MASQUERADE"]]


def as_check(rule: list[str]) -> list[str]:
    """The same rule in its `-C` form: iptables exits 0 when it is already there."""
    return ["-C" if arg == "-A" else arg for arg in rule]


def snat_script(mesh_cidr: ipaddress.IPv4Network, tun_device: str = TUN_DEVICE) -> str:
    """A POSIX sh script that applies `snat_rules` once, however often it runs.
    `IPTABLES` in the environment picks another binary (e.g. iptables-legacy)."""
    lines = ["#!/bin/sh",
             "# Source-NAT what this node's pods send into the Nebula mesh to the node's own",
             "# overlay address (hybrid-llm, components/mesh/snat.py). Safe to run again.",
             "set -eu",
             'IPTABLES="${IPTABLES:-iptables}"']
    for rule in snat_rules(mesh_cidr, tun_device):
        lines.append(f'"$IPTABLES" -w {shlex.join(as_check(rule))} 2>/dev/null \\')
        lines.append(f'  || "$IPTABLES" -w {shlex.join(rule)}')
    return "\n".join(lines) + "\n"
