"""The packet path between the clusters (DESIGN decision 8), for real: Debian's
nebula in network namespaces, run from the certificates and configs the program
renders, once for each lighthouse placement (lighthousePlacement). tools/netns.py
rewrites only the addresses the lab cannot have: an Elastic IP becomes its host's
lab address, the homelab lighthouse's LAN address its lab LAN address; a DNS
endpoint stays a name, resolved through the namespace's hosts file.

Topology: the homelab nodes sit behind a home router that NATs (MASQUERADE, no
port forward but the homelab lighthouse's, no hairpin); the GPU workers, and the
EC2 lighthouse where there is one, sit on the "internet" bridge. One homelab node
that is not a lighthouse has a "pod" behind it (10.244.1.0/24, as a Talos node's
pod range) and the SNAT script of components/mesh/snat.py applied in its
namespace; two GPU workers each have a "pod" in its own pod range (cut from
gpuClusterPodCidr) and forwarding on, as k3s/flannel would set up. The homelab
pod reaches Ollama's port on both worker pods through the mesh; the worker pods
open nothing towards the homelab; other ports stay closed. With the lighthouse in
the homelab, the pod's node has no address of the workers at all: it asks the
lighthouse node on the LAN, and the workers reach that node only through the
router's forward.

Debian ships Nebula 1.6, which ignores `local_cidr`: the worker's ICMP and k3s
API rules reach its pod range too there (1.10 keeps them on the overlay address).
What is checked here is meant to hold on 1.6 and 1.10 alike; HYBRID_LLM_NEBULA
names another nebula binary to run it with (only Debian's 1.6.1 has run it here).
"""

from __future__ import annotations

import ipaddress
import os

import pytest

from components import addressing
from components.mesh import nebula_cert, snat
from tests.conftest import PLACEMENTS, require_root, require_tool
from tools import placement_lab
from tools.placement_lab import HOMELAB
from tools.netns import IPTABLES, NebulaLab

WORKERS = ("gpu-0", "gpu-1")
HOMELAB_POD_SUBNET = ipaddress.IPv4Network("10.244.1.0/24")
OLLAMA = 11434
CLOSED = 8080
# More than a few MTUs, so the answer must find the path MTU (tun 1300, veth 1500).
PADDING = 64 * 1024


@pytest.fixture(scope="module", params=list(PLACEMENTS))
def path(request):
    for tool in ("ip", "unshare", "nebula", "ping", snat.IPTABLES, IPTABLES):
        require_tool(tool)
    require_root("network namespaces, tun devices and iptables for a real Nebula packet path")
    lab = NebulaLab(nebula=os.environ.get("HYBRID_LLM_NEBULA", "nebula"))
    try:
        lab.__enter__()
        mesh = placement_lab.build(lab, request.param, start=False)
        plan, ips = mesh.plan, mesh.ips
        script = lab.hosts[HOMELAB].directory / "snat.sh"
        script.write_text(snat.snat_script(ipaddress.IPv4Network(plan.config["hybrid-llm:nebulaCidr"])))
        applied = lab.exec(HOMELAB, "sh", str(script))
        assert applied.returncode == 0, applied.stderr
        lab.add_pod("homelab-pod", HOMELAB, HOMELAB_POD_SUBNET)
        for name in WORKERS:
            lab.add_pod(f"{name}-pod", name, _pod_range(plan, name))
        for name in lab.hosts:
            lab.start(name)
        for name in lab.hosts:
            lab.wait_for_interface(name, ips[name])
        for name in WORKERS:
            lab.listen_tcp(f"{name}-pod", OLLAMA, padding=PADDING)
            lab.listen_tcp(f"{name}-pod", CLOSED)
            lab.wait_for_ping(HOMELAB, ips[name], timeout=30)
        yield lab, ips, plan, script
    finally:
        lab.close()


def _pod_range(plan, worker: str) -> ipaddress.IPv4Network:
    """The range the worker's rendered certificate carries."""
    (subnet,) = nebula_cert.Certificate.from_pem(plan.file(f"nebula/{worker}/host.crt").content).details.subnets
    return subnet


def _pod(lab, worker: str) -> str:
    return str(lab.pods[f"{worker}-pod"].address)


def test_each_pod_sits_in_its_workers_range_from_gpu_cluster_pod_cidr(path):
    lab, _, plan, _ = path
    cidr = ipaddress.IPv4Network(plan.config["hybrid-llm:gpuClusterPodCidr"])
    for index, worker in enumerate(WORKERS):
        assert _pod_range(plan, worker) == addressing.worker_pod_range(cidr, index)
        assert lab.pods[f"{worker}-pod"].address in _pod_range(plan, worker)


def test_homelab_pod_reaches_ollama_on_both_worker_pods_as_its_node(path):
    """The answer is whole (path MTU found) and names the homelab node's overlay
    address as the client: the SNAT rule rewrote the pod's address."""
    lab, ips, _, _ = path
    for worker in WORKERS:
        answer = lab.tcp_fetch("homelab-pod", _pod(lab, worker), OLLAMA, timeout=10)
        assert answer is not None, f"no answer from {worker}'s pod\n{lab.logs()}"
        first_line, _, rest = answer.partition(b"\n")
        assert first_line == f"ok {ips[HOMELAB]}".encode()
        assert len(rest) == PADDING


def test_homelab_pod_gets_no_other_port_of_a_worker_pod(path):
    lab, _, _, _ = path
    for worker in WORKERS:
        assert lab.tcp_connects(worker, _pod(lab, worker), CLOSED), "the listener itself answers"
        assert lab.tcp_connects("homelab-pod", _pod(lab, worker), OLLAMA), "the path is up"
        assert not lab.tcp_connects("homelab-pod", _pod(lab, worker), CLOSED, timeout=2)


def test_worker_pods_open_no_connection_to_the_homelab_node_or_its_pod(path):
    """Even with a route into the mesh for the homelab's pod range on the worker,
    which a real worker does not have."""
    lab, ips, _, _ = path
    lab.listen_tcp(HOMELAB, CLOSED)
    lab.listen_tcp("homelab-pod", OLLAMA)
    assert lab.tcp_connects(HOMELAB, str(lab.pods["homelab-pod"].address), OLLAMA), "the pod's listener answers"
    assert lab.tcp_connects(HOMELAB, ips[HOMELAB], CLOSED), "the node's listener answers"
    for worker in WORKERS:
        lab.wait_for_ping(worker, ips[HOMELAB])          # the tunnel is up; ICMP is allowed
        lab.exec(worker, "ip", "route", "replace", str(HOMELAB_POD_SUBNET), "dev", "nebula1")
        assert not lab.tcp_connects(f"{worker}-pod", ips[HOMELAB], CLOSED, timeout=2)
        assert not lab.tcp_connects(f"{worker}-pod", str(lab.pods["homelab-pod"].address), OLLAMA, timeout=2)
        assert not lab.tcp_connects(worker, ips[HOMELAB], CLOSED, timeout=2)


def test_without_the_snat_rule_the_homelab_pod_gets_nothing(path):
    """Nebula refuses a source its certificate does not carry: the rule is what
    makes the path work. Applying the script again restores it, once."""
    lab, _, plan, script = path
    mesh = plan.config["hybrid-llm:nebulaCidr"]
    (rule,) = snat.snat_rules(ipaddress.IPv4Network(mesh))
    deleted = lab.exec(HOMELAB, snat.IPTABLES, "-w", *["-D" if a == "-A" else a for a in rule])
    assert deleted.returncode == 0, deleted.stderr
    try:
        assert lab.tcp_fetch("homelab-pod", _pod(lab, WORKERS[0]), OLLAMA, timeout=2) is None
    finally:
        for _ in range(2):
            assert lab.exec(HOMELAB, "sh", str(script)).returncode == 0
    listed = lab.exec(HOMELAB, snat.IPTABLES, "-w", "-t", "nat", "-S", "POSTROUTING").stdout
    assert listed.count("MASQUERADE") == 1, listed
    assert lab.tcp_fetch("homelab-pod", _pod(lab, WORKERS[0]), OLLAMA, timeout=10) is not None
