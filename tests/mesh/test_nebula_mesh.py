"""A real Nebula mesh from the rendered files, once for each lighthouse placement:
homelab nodes behind a NAT'd home router, GPU workers (and an EC2 lighthouse where
there is one) on the "internet" side, each host in its own network namespace
(tests/mesh/placement_lab.py, tools/netns.py).
"""

from __future__ import annotations

import ipaddress
import time

import pytest
import yaml

from components.mesh import nebula_cert
from components.inventory import GROUPS
from tests.conftest import PLACEMENTS, require_root, require_tool
from tools import placement_lab
from tools.placement_lab import HOMELAB, LIGHTHOUSE_NODE
from tools.netns import IPTABLES, NebulaLab, lab_files, rewrite_endpoints

WORKERS = ("gpu-0", "gpu-1")


def _need_lab():
    for tool in ("ip", "unshare", "nebula", "ping", IPTABLES):
        require_tool(tool)
    require_root("network namespaces and tun devices for a real Nebula mesh")


@pytest.fixture(scope="module", params=list(PLACEMENTS))
def mesh(request):
    _need_lab()
    lab = NebulaLab()
    try:
        lab.__enter__()
        yield placement_lab.build(lab, request.param)
    finally:
        lab.close()


def test_rendered_files_are_used_unchanged_but_for_addresses_the_lab_cannot_have(mesh):
    """Only Elastic IPs and the LAN address are rewritten; a DNS endpoint is kept."""
    elastic = set(mesh.plan.outputs["elasticIps"].value.values())
    lan_ip = mesh.plan.config.get("hybrid-llm:homelabLighthouseLanIp")
    for name, host in mesh.lab.hosts.items():
        rendered = yaml.safe_load(mesh.plan.file(f"nebula/{name}/config.yml").content)
        used = yaml.safe_load((host.directory / "config.yml").read_text())
        rendered_map, used_map = rendered.pop("static_host_map"), used.pop("static_host_map")
        assert used == rendered
        assert rendered_map.keys() == used_map.keys()
        for overlay, entries in rendered_map.items():
            for entry, lab_entry in zip(entries, used_map[overlay], strict=True):
                address = entry.rpartition(":")[0]
                assert (entry == lab_entry) == (address not in elastic and address != lan_ip), (name, entry)
        for file_name in ("ca.crt", "host.crt", "host.key"):
            assert (host.directory / file_name).read_text() == mesh.plan.file(f"nebula/{name}/{file_name}").content


def test_every_homelab_node_pings_every_worker_over_the_overlay(mesh):
    for node in (LIGHTHOUSE_NODE, HOMELAB):
        for worker in WORKERS:
            mesh.lab.wait_for_ping(node, mesh.ips[worker], timeout=30)


def test_homelab_reaches_the_workers_k3s_api_and_no_other_host_does(mesh):
    """Ollama is reached on the worker's pod range (tests/mesh/test_packet_path.py);
    the overlay address serves the k3s API to the Liqo consumer, group homelab."""
    lab, ips = mesh.lab, mesh.ips
    lab.listen_tcp("gpu-0", 6443)
    lab.wait_for_ping(HOMELAB, ips["gpu-0"], timeout=30)
    assert lab.tcp_connects(HOMELAB, ips["gpu-0"], 6443)
    # A tunnel without the group gets nothing: the EC2 lighthouse, and the other
    # worker where it can find gpu-0 (through a lighthouse that is not a worker).
    # Workers that are each their own lighthouse never learn of each other at all.
    others = ["gpu-1"] + (["lighthouse"] if "lighthouse" in ips else [])
    for other in others:
        if mesh.placement == "workers":
            assert not lab.ping(other, ips["gpu-0"], count=2, wait=1), "workers have no path to each other"
        else:
            lab.wait_for_ping(other, ips["gpu-0"], timeout=30)
        assert not lab.tcp_connects(other, ips["gpu-0"], 6443, timeout=2), other


def test_worker_gets_no_connection_to_a_homelab_port_the_firewall_does_not_open(mesh):
    lab, ips = mesh.lab, mesh.ips
    for node in (LIGHTHOUSE_NODE, HOMELAB):
        lab.listen_tcp(node, 8080)
        assert lab.tcp_connects(node, "127.0.0.1", 8080), "the listener itself answers"
        lab.wait_for_ping(node, ips["gpu-0"], timeout=30)      # the homelab opens the tunnel
        lab.wait_for_ping("gpu-0", ips[node])                  # ICMP comes back through it
        assert not lab.tcp_connects("gpu-0", ips[node], 8080, timeout=2), node


def test_the_lighthouses_are_the_placements_hosts(mesh):
    """Who runs `am_lighthouse`, as the processes that started show it."""
    expected = {"workers": set(WORKERS), "ec2": {"lighthouse"}, "homelab": {LIGHTHOUSE_NODE}}[mesh.placement]
    running = {name for name, host in mesh.lab.hosts.items()
               if yaml.safe_load((host.directory / "config.yml").read_text())["lighthouse"]["am_lighthouse"]}
    assert running == expected
    assert all(mesh.lab.hosts[name].process.poll() is None for name in mesh.lab.hosts), mesh.lab.logs()


def test_with_the_lighthouse_in_the_homelab_workers_are_found_through_it(mesh):
    """The plain homelab node's map names the lighthouse node only (its LAN address
    first), yet it reaches both workers: it learnt their addresses from the
    lighthouse, which learnt them from the workers' reports through the router's
    forward. Elsewhere, the homelab's map names where every lighthouse is."""
    config = yaml.safe_load((mesh.lab.hosts[HOMELAB].directory / "config.yml").read_text())
    if mesh.placement == "homelab":
        assert list(config["static_host_map"]) == [mesh.ips[LIGHTHOUSE_NODE]]
        lan, public = config["static_host_map"][mesh.ips[LIGHTHOUSE_NODE]]
        assert lan.startswith(str(mesh.lab.routers[placement_lab.ROUTER].lan.network_address)[:-1])
        assert public == mesh.plan.outputs["lighthouseEndpoints"].value[LIGHTHOUSE_NODE]
    else:
        lighthouses = WORKERS if mesh.placement == "workers" else ("lighthouse",)
        assert set(config["static_host_map"]) == {mesh.ips[name] for name in lighthouses}
    for worker in WORKERS:
        mesh.lab.wait_for_ping(HOMELAB, mesh.ips[worker], timeout=30)


def test_a_stopped_worker_leaves_the_rest_of_the_mesh_working(mesh):
    """gpu-1 stops (its Nebula ends, as at an instance stop); gpu-0 stays reachable,
    and gpu-1 is reachable again once it starts (the same files, as after a start)."""
    lab, ips = mesh.lab, mesh.ips
    worker = lab.hosts["gpu-1"]
    worker.process.terminate()
    worker.process.wait(timeout=10)
    try:
        assert not lab.ping(HOMELAB, ips["gpu-1"], count=2, wait=1)
        lab.wait_for_ping(HOMELAB, ips["gpu-0"], timeout=30)
    finally:
        lab.start("gpu-1")
    lab.wait_for_interface("gpu-1", ips["gpu-1"])
    lab.wait_for_ping(HOMELAB, ips["gpu-1"], timeout=45)


@pytest.fixture(scope="module")
def ec2_mesh():
    _need_lab()
    lab = NebulaLab()
    try:
        lab.__enter__()
        yield placement_lab.build(lab, "ec2", workers=1)
    finally:
        lab.close()


def test_a_host_with_a_certificate_from_another_ca_reaches_no_one(ec2_mesh):
    lab, ips, plan = ec2_mesh.lab, ec2_mesh.ips, ec2_mesh.plan
    now = int(time.time())
    rogue_ca, rogue_ca_key = nebula_cert.new_ca("not-our-ca", now - 60, now + 3600)
    key_pem, _ = nebula_cert.new_host_key()
    rogue_ip = str(ipaddress.IPv4Address(ips["gpu-0"]) + 1)          # where gpu-1 would be
    cert = nebula_cert.issue(
        rogue_ca, rogue_ca_key, name="gpu-1", ip=ipaddress.IPv4Interface(f"{rogue_ip}/16"),
        groups=GROUPS["homelab"], public_key=nebula_cert.host_public_key(key_pem),
        not_before=now - 60, not_after=now + 3600,
    )
    lighthouse = lab.hosts["lighthouse"]
    eip = plan.outputs["elasticIps"].value["lighthouse"]
    config = rewrite_endpoints(lab_files(plan, "gpu-0")["config.yml"], {eip: str(lighthouse.address)})
    files = {"ca.crt": rogue_ca.to_pem(), "host.crt": cert.to_pem(), "host.key": key_pem, "config.yml": config}
    rogue = lab.add_host("rogue", files)
    lab.start("rogue")
    lab.wait_for_interface("rogue", rogue_ip)
    assert lab.ping("rogue", str(lighthouse.address)), "the underlay reaches the lighthouse"
    lab.wait_for_ping(HOMELAB, ips["gpu-0"], timeout=30)             # the real mesh works meanwhile
    for target in ("lighthouse", HOMELAB, "gpu-0"):
        assert not lab.ping("rogue", ips[target], count=3, wait=1), f"rogue reached {target}"
    assert not lab.ping(HOMELAB, rogue_ip, count=2, wait=1)
    assert rogue.process.poll() is None, "the rogue nebula kept running (refused by peers, not crashed)"
