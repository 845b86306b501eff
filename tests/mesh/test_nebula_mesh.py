"""A real Nebula mesh from the rendered files: lighthouse, a homelab node and a GPU
worker, each in its own network namespace (tools/netns.py). Only the lighthouse's
Elastic IP in static_host_map is rewritten to the lighthouse namespace's address.
"""

from __future__ import annotations

import ipaddress
import time

import pytest
import yaml

from components.mesh import nebula_cert
from components.inventory import GROUPS
from tests.conftest import require_root, require_tool
from tools import harness
from tools.netns import NebulaLab, lab_files

HOMELAB = "talos-cp-1"
WORKER = "gpu-0"


@pytest.fixture(scope="module")
def mesh():
    for tool in ("ip", "unshare", "nebula", "ping"):
        require_tool(tool)
    require_root("network namespaces and tun devices for a real Nebula mesh")
    plan = harness.run_stack("dev", {"hybrid-llm:gpuWorkers": "2"})
    ips = plan.outputs["nebulaIps"].value
    lab = NebulaLab()
    try:
        lab.__enter__()
        lighthouse = lab.add_host("lighthouse", lab_files(plan, "lighthouse"))
        for name in (HOMELAB, WORKER):
            lab.add_host(name, lab_files(plan, name), str(lighthouse.address))
        for name in ("lighthouse", HOMELAB, WORKER):
            lab.start(name)
        for name in ("lighthouse", HOMELAB, WORKER):
            lab.wait_for_interface(name, ips[name])
        yield lab, ips, plan
    finally:
        lab.close()


def test_rendered_files_are_used_unchanged_but_for_the_lighthouse_address(mesh):
    lab, ips, plan = mesh
    lighthouse_addr = str(lab.hosts["lighthouse"].address)
    for name in (HOMELAB, WORKER):
        rendered = plan.file(f"nebula/{name}/config.yml").content
        used = (lab.hosts[name].directory / "config.yml").read_text()
        eip = plan.outputs["lighthousePublicIp"].value
        assert eip in rendered and eip not in used
        rendered_config, used_config = yaml.safe_load(rendered), yaml.safe_load(used)
        assert used_config.pop("static_host_map") == {ips["lighthouse"]: [f"{lighthouse_addr}:4242"]}
        assert rendered_config.pop("static_host_map") == {ips["lighthouse"]: [f"{eip}:4242"]}
        assert used_config == rendered_config
        for file_name in ("ca.crt", "host.crt", "host.key"):
            assert (lab.hosts[name].directory / file_name).read_text() == plan.file(f"nebula/{name}/{file_name}").content


def test_homelab_pings_the_worker_over_the_overlay(mesh):
    lab, ips, _ = mesh
    lab.wait_for_ping(HOMELAB, ips[WORKER])
    assert lab.ping(HOMELAB, ips["lighthouse"])


def test_homelab_reaches_the_workers_k3s_api_and_others_do_not(mesh):
    """Ollama is reached on the worker's pod range (tests/mesh/test_packet_path.py);
    the overlay address serves the k3s API to the Liqo consumer."""
    lab, ips, _ = mesh
    lab.listen_tcp(WORKER, 6443)
    lab.wait_for_ping(HOMELAB, ips[WORKER])
    assert lab.tcp_connects(HOMELAB, ips[WORKER], 6443)
    # Only group homelab may: the lighthouse has a tunnel to the worker but no rule.
    lab.wait_for_ping("lighthouse", ips[WORKER])
    assert not lab.tcp_connects("lighthouse", ips[WORKER], 6443, timeout=2)


def test_worker_gets_no_connection_to_a_homelab_port_the_firewall_does_not_open(mesh):
    lab, ips, _ = mesh
    lab.listen_tcp(HOMELAB, 8080)
    assert lab.tcp_connects(HOMELAB, "127.0.0.1", 8080), "the listener itself answers"
    lab.wait_for_ping(WORKER, ips[HOMELAB])          # the tunnel is up; ICMP is allowed
    assert not lab.tcp_connects(WORKER, ips[HOMELAB], 8080, timeout=2)


def test_a_host_with_a_certificate_from_another_ca_reaches_no_one(mesh):
    lab, ips, plan = mesh
    now = int(time.time())
    rogue_ca, rogue_ca_key = nebula_cert.new_ca("not-our-ca", now - 60, now + 3600)
    key_pem, _ = nebula_cert.new_host_key()
    rogue_ip = ips["gpu-1"]
    cert = nebula_cert.issue(
        rogue_ca, rogue_ca_key, name="gpu-1", ip=ipaddress.IPv4Interface(f"{rogue_ip}/16"),
        groups=GROUPS["homelab"], public_key=nebula_cert.host_public_key(key_pem),
        not_before=now - 60, not_after=now + 3600,
    )
    files = {"ca.crt": rogue_ca.to_pem(), "host.crt": cert.to_pem(), "host.key": key_pem,
             "config.yml": plan.file("nebula/gpu-1/config.yml").content}
    rogue = lab.add_host("rogue", files, str(lab.hosts["lighthouse"].address))
    lab.start("rogue")
    lab.wait_for_interface("rogue", rogue_ip)
    assert lab.ping("rogue", str(lab.hosts["lighthouse"].address)), "the underlay reaches the lighthouse"
    lab.wait_for_ping(HOMELAB, ips[WORKER])          # the real mesh works meanwhile
    for target in ("lighthouse", HOMELAB, WORKER):
        assert not lab.ping("rogue", ips[target], count=3, wait=1), f"rogue reached {target}"
    assert not lab.ping(HOMELAB, rogue_ip, count=2, wait=1)
    assert rogue.process.poll() is None, "the rogue nebula kept running (refused by peers, not crashed)"
