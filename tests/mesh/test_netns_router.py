"""The lab itself (tools/netns.py), not the product: a home router that NATs, a port
forward to a lighthouse on its LAN, a DNS name for it resolved through
`add_hosts_entry`, and a real Nebula mesh across it, from certificates made here
and hand-written minimal configs.

Layout: "remote" on the hub ("the internet"); behind "router" (192.168.50.0/24)
the "lighthouse" and "lan-node". The remote reaches the lighthouse as
gateway.lab:14242 (the router's WAN address, a name only its namespace knows),
forwarded to the lighthouse's 4242; lan-node reaches it by its LAN address only.
"unresolved" names gateway.lab without a hosts entry: Nebula 1.6.1 resolves
static_host_map names once, at start, and exits when one does not resolve.

The lighthouse learns lan-node only by its LAN address, so the remote cannot be
the first to send to lan-node (its handshakes go to 192.168.50.3: unreachable);
lan-node's handshake to the remote, through MASQUERADE, makes the tunnel, after
which both directions work (`punchy.respond` would let the remote's attempt
trigger it, after its delay).
"""

from __future__ import annotations

import ipaddress
import subprocess
import sys
import time

import pytest
import yaml

from components.mesh import nebula_cert
from tests.conftest import require_root, require_tool
from tools.netns import LAB_TOOLS, ROUTER_TOOLS, NETNS_ETC, NebulaLab, rewrite_endpoints

OVERLAY = ipaddress.IPv4Network("10.77.0.0/24")
IPS = {"lighthouse": "10.77.0.1", "remote": "10.77.0.2", "lan-node": "10.77.0.3"}
PLACEHOLDER = "lighthouse.example.net"   # what the hand-written configs name
PUBLIC_NAME = "gateway.lab"              # resolves to the router's WAN address in "remote" only
PUBLIC_PORT, NEBULA_PORT, ECHO_PORT, TCP_PORT = 14242, 4242, 5000, 8080


def _config(name: str) -> str:
    lighthouse = name == "lighthouse"
    config = {
        "pki": {"ca": "/etc/nebula/ca.crt", "cert": "/etc/nebula/host.crt", "key": "/etc/nebula/host.key"},
        "static_host_map": {} if lighthouse else {IPS["lighthouse"]: [f"{PLACEHOLDER}:{NEBULA_PORT}"]},
        "lighthouse": {"am_lighthouse": lighthouse, "interval": 1, "hosts": [] if lighthouse else [IPS["lighthouse"]]},
        "listen": {"host": "0.0.0.0", "port": NEBULA_PORT},
        "punchy": {"punch": True},
        "tun": {"dev": "nebula1"},
        "logging": {"level": "debug"},
        "firewall": {"outbound": [{"port": "any", "proto": "any", "host": "any"}],
                     "inbound": [{"port": "any", "proto": "any", "host": "any"}]},
    }
    return yaml.safe_dump(config, sort_keys=False)


def _files() -> dict[str, dict[str, str]]:
    now = int(time.time())
    ca, ca_key = nebula_cert.new_ca("lab-ca", now - 60, now + 3600)
    files = {}
    for name, ip in IPS.items():
        key_pem, _ = nebula_cert.new_host_key()
        cert = nebula_cert.issue(ca, ca_key, name=name, ip=ipaddress.IPv4Interface(f"{ip}/{OVERLAY.prefixlen}"),
                                 public_key=nebula_cert.host_public_key(key_pem),
                                 not_before=now - 60, not_after=now + 3600)
        files[name] = {"ca.crt": ca.to_pem(), "host.crt": cert.to_pem(), "host.key": key_pem,
                       "config.yml": _config(name)}
    return files


@pytest.fixture(scope="module")
def lab():
    for tool in LAB_TOOLS + ROUTER_TOOLS:
        require_tool(tool)
    require_root("network namespaces, tun devices and iptables for a lab home router")
    files = _files()
    lab = NebulaLab()
    try:
        lab.__enter__()
        router = lab.add_router()
        lighthouse = lab.add_host("lighthouse", files["lighthouse"], behind="router")
        lab.add_host("lan-node", files["lan-node"], behind="router",
                     endpoints={PLACEHOLDER: str(lighthouse.address)})
        lab.add_host("remote", files["remote"], endpoints={PLACEHOLDER: f"{PUBLIC_NAME}:{PUBLIC_PORT}"})
        lab.add_hosts_entry("remote", PUBLIC_NAME, str(router.wan_address))
        lab.forward_udp("router", PUBLIC_PORT, "lighthouse", NEBULA_PORT)
        lab.add_host("unresolved", files["remote"], endpoints={PLACEHOLDER: PUBLIC_NAME})
        for name in (*IPS, "unresolved"):
            lab.start(name)
        for name, ip in IPS.items():
            lab.wait_for_interface(name, ip)
        yield lab
    finally:
        lab.close()


def test_addresses_come_from_the_hub_and_the_lan(lab):
    router = lab.routers["router"]
    assert router.lan_address == ipaddress.IPv4Address("192.168.50.1")
    assert [lab.hosts[n].address for n in ("lighthouse", "lan-node")] == [
        ipaddress.IPv4Address("192.168.50.2"), ipaddress.IPv4Address("192.168.50.3")]
    assert router.wan_address != lab.hosts["remote"].address
    assert {router.wan_address, lab.hosts["remote"].address} <= set(ipaddress.IPv4Network("172.31.250.0/24"))
    routes = lab.exec("lan-node", "ip", "-4", "route", "show", "default").stdout
    assert "via 192.168.50.1 dev eth0" in routes


def test_lan_host_reaches_the_internet_as_the_routers_wan_address(lab):
    remote = str(lab.hosts["remote"].address)
    assert lab.ping("lan-node", remote)
    lab.listen_tcp("remote", TCP_PORT)
    assert lab.tcp_fetch("lan-node", remote, TCP_PORT) == f"ok {lab.routers['router'].wan_address}\n".encode()


def test_the_internet_gets_no_connection_into_the_lan(lab):
    router, lan_node = lab.routers["router"], str(lab.hosts["lan-node"].address)
    lab.listen_tcp("lan-node", TCP_PORT)
    assert lab.tcp_connects("lan-node", lan_node, TCP_PORT), "the listener itself answers"
    assert not lab.tcp_connects("remote", lan_node, TCP_PORT, timeout=1)              # no route
    assert not lab.tcp_connects("remote", str(router.wan_address), TCP_PORT, timeout=1)  # no forward
    # Not even with a route to the LAN via the router: it forwards only replies and forwards.
    added = lab.exec("remote", "ip", "route", "add", str(router.lan), "via", str(router.wan_address))
    assert added.returncode == 0, added.stderr
    try:
        assert lab.ping("remote", str(router.lan_address)), "the route is used"
        assert not lab.tcp_connects("remote", lan_node, TCP_PORT, timeout=1)
    finally:
        lab.exec("remote", "ip", "route", "del", str(router.lan))


def _udp_echo_answers(lab, name: str, target: str, port: int) -> bool:
    code = ("import socket,sys\n"
            "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.5)\n"
            "for _ in range(3):\n"
            f"    s.sendto(b'ping', ('{target}', {port}))\n"
            "    try:\n        sys.exit(0 if s.recvfrom(64)[0]==b'echo ping' else 1)\n"
            "    except OSError:\n        pass\n"
            "sys.exit(1)\n")
    return lab.exec(name, sys.executable, "-c", code).returncode == 0


def test_a_udp_port_forward_answers_from_the_wan_only(lab):
    """No hairpin NAT: a LAN host sending to the WAN address is not forwarded back."""
    router, lighthouse = lab.routers["router"], lab.hosts["lighthouse"]
    lab.forward_udp("router", ECHO_PORT, "lighthouse", ECHO_PORT)
    code = ("import socket\n"
            "s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            f"s.bind(('0.0.0.0', {ECHO_PORT})); print('ready', flush=True)\n"
            "while True:\n    data,peer=s.recvfrom(64); s.sendto(b'echo '+data, peer)\n")
    echo = subprocess.Popen(["ip", "netns", "exec", lighthouse.namespace, sys.executable, "-c", code],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout.readline().strip() == "ready"
        assert _udp_echo_answers(lab, "remote", str(router.wan_address), ECHO_PORT)
        assert _udp_echo_answers(lab, "lan-node", str(lighthouse.address), ECHO_PORT)
        assert not _udp_echo_answers(lab, "lan-node", str(router.wan_address), ECHO_PORT)
    finally:
        echo.terminate()
        echo.wait(timeout=5)
        echo.stdout.close()
    rules = lab.exec("router", "iptables-nft", "-t", "nat", "-S", "PREROUTING").stdout
    assert f"-A PREROUTING -i wan -p udp -m udp --dport {PUBLIC_PORT} -j DNAT --to-destination " \
           f"{lighthouse.address}:{NEBULA_PORT}" in rules, rules


def test_remote_host_reaches_the_lighthouse_by_name_through_the_port_forward(lab):
    router = lab.routers["router"]
    used = yaml.safe_load((lab.hosts["remote"].directory / "config.yml").read_text())
    assert used["static_host_map"] == {IPS["lighthouse"]: [f"{PUBLIC_NAME}:{PUBLIC_PORT}"]}
    resolved = lab.exec("remote", "getent", "hosts", PUBLIC_NAME).stdout.split()
    assert resolved[:2] == [str(router.wan_address), PUBLIC_NAME]
    assert lab.exec("lan-node", "getent", "hosts", PUBLIC_NAME).returncode != 0, "other namespaces do not know it"
    lab.wait_for_ping("remote", IPS["lighthouse"])
    # Nebula 1.6.1 resolved the name once at start and sent its handshake there.
    log = lab.hosts["remote"].log.read_text()
    assert f"{router.wan_address}:{PUBLIC_PORT}" in log, log[-3000:]


def test_without_a_hosts_entry_nebula_exits_on_the_name(lab):
    process = lab.hosts["unresolved"].process
    process.wait(timeout=10)
    assert process.returncode != 0
    log = lab.hosts["unresolved"].log.read_text()
    assert "Static host address could not be parsed" in log and f"lookup {PUBLIC_NAME}" in log, log[-2000:]


def test_lan_node_reaches_the_lighthouse_on_the_lan_and_the_remote_through_nat(lab):
    lab.wait_for_ping("lan-node", IPS["lighthouse"])
    lab.wait_for_ping("lan-node", IPS["remote"])
    assert lab.ping("remote", IPS["lan-node"])
    used = yaml.safe_load((lab.hosts["lan-node"].directory / "config.yml").read_text())
    assert used["static_host_map"] == {IPS["lighthouse"]: [f"{lab.hosts['lighthouse'].address}:{NEBULA_PORT}"]}


def test_close_removes_namespaces_and_hosts_files():
    for tool in LAB_TOOLS + ROUTER_TOOLS:
        require_tool(tool)
    require_root("network namespaces for a lab home router")
    lab = NebulaLab()
    lab.__enter__()
    try:
        lab.add_router("home")
        lab.add_host("node", {}, behind="home")
        lab.add_hosts_entry("node", "gateway.lab", str(lab.routers["home"].wan_address))
        namespaces = [lab.hub, lab.routers["home"].namespace, lab.hosts["node"].namespace]
        assert (NETNS_ETC / lab.hosts["node"].namespace / "hosts").exists()
        assert "gateway.lab" in lab.exec("node", "getent", "hosts", "gateway.lab").stdout
    finally:
        lab.close()
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert not [ns for ns in namespaces if ns in listed.split()], listed
    assert not any((NETNS_ETC / ns).exists() for ns in namespaces)


def test_rewrite_endpoints_rewrites_only_named_hosts():
    config = yaml.safe_dump({"static_host_map": {
        "10.0.0.1": ["lh.example.net:4242", "192.168.1.5:4242", "lh.example.net:4243"],
        "10.0.0.2": ["203.0.113.7:4242"]}})
    rewritten = yaml.safe_load(rewrite_endpoints(config, {"lh.example.net": "gw.lab", "203.0.113.7": "1.2.3.4:9"}))
    assert rewritten["static_host_map"] == {
        "10.0.0.1": ["gw.lab:4242", "192.168.1.5:4242", "gw.lab:4243"],
        "10.0.0.2": ["1.2.3.4:9"]}
