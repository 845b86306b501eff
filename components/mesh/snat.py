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
nothing.

The backend is named, never guessed: `iptables-nft` (`IPTABLES` below), the one
Talos itself uses. Talos programs its own firewall and KubeSpan through nftables
(siderolabs/talos internal/app/machined/pkg/controllers/network/nftables_chain.go),
runs kube-proxy in `nftables` mode on Kubernetes >= 1.31 (getProxyArgs in
internal/app/machined/pkg/controllers/k8s/control_plane.go, v1.9.0 onwards), points
the host's own `iptables` links at the nft binaries (siderolabs/pkgs
iptables/pkg.yaml), and since Talos 1.12 builds its kernel without the legacy
xtables backend at all (siderolabs/pkgs kernel/build/config-amd64:
`# CONFIG_NETFILTER_XTABLES_LEGACY is not set`), so `iptables-legacy` has nothing
to talk to there. A plain `iptables` in the Kubernetes iptables images is a wrapper
that picks a backend on first use by rewriting /etc/alternatives or /usr/sbin,
which a read-only root filesystem refuses.

`iptables-nft` changes rules in one netlink transaction, which the kernel applies
atomically or refuses, so it takes no `/run/xtables.lock` (only the legacy backend
does) and needs nothing writable and nothing from the host but the network
namespace. `-w` stays for someone who overrides `IPTABLES` with a legacy binary
(which would then need the host's /run/xtables.lock mounted, and CAP_NET_RAW).
"""

from __future__ import annotations

import ipaddress
import shlex

from components.mesh.nebula_config import TUN_DEVICE

# The backend, named explicitly (see the module docstring). The path is Debian's,
# where both the init container's image (Kubernetes' distroless-iptables, built
# from Debian bookworm's iptables package) and the test hosts keep it.
IPTABLES = "/usr/sbin/iptables-nft"


def snat_rules(mesh_cidr: ipaddress.IPv4Network, tun_device: str = TUN_DEVICE) -> list[list[str]]:
    """The rules as iptables arguments (no command name), each in its `-A` form."""
    return [["-t", "nat", "-A", "POSTROUTING", "-o", tun_device, "!", "-s", str(mesh_cidr), "-j", "MASQUERADE"]]


def as_check(rule: list[str]) -> list[str]:
    """The same rule in its `-C` form: iptables exits 0 when it is already there."""
    return ["-C" if arg == "-A" else arg for arg in rule]


def snat_script(mesh_cidr: ipaddress.IPv4Network, tun_device: str = TUN_DEVICE) -> str:
    """A POSIX sh script that applies `snat_rules` once, however often it runs,
    with `IPTABLES` (iptables-nft) unless the environment names another binary."""
    lines = ["#!/bin/sh",
             "# Source-NAT what this node's pods send into the Nebula mesh to the node's own",
             "# overlay address (hybrid-llm, components/mesh/snat.py). Safe to run again.",
             "# The nft backend by name: no alternatives to switch, no xtables lock to take.",
             "set -eu",
             f'IPTABLES="${{IPTABLES:-{IPTABLES}}}"']
    for rule in snat_rules(mesh_cidr, tun_device):
        lines.append(f'"$IPTABLES" -w {shlex.join(as_check(rule))} 2>/dev/null \\')
        lines.append(f'  || "$IPTABLES" -w {shlex.join(rule)}')
    return "\n".join(lines) + "\n"
