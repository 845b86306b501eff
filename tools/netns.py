"""A throwaway Nebula lab in network namespaces: each host in its own namespace,
all joined through a bridge in a hub namespace on 172.31.250.0/24. Nothing touches
the root namespace's interfaces, and `close()` removes every namespace and
process it made, so a failed test leaves nothing behind.

Each nebula runs from the files the program rendered, unchanged except for the
lighthouse's address in `static_host_map` (the Elastic IP becomes the lighthouse
namespace's address). The rendered config points at /etc/nebula/, so every nebula
gets a private mount namespace with its own directory bound there.

A "pod" is one more namespace behind a host, joined to it by a veth pair: the
host end holds the first address of the pod's subnet (as a CNI bridge would), the
pod the tenth, with its default route via the host, and the host forwards. That
is all a Kubernetes node does for the packet path of tests/mesh/test_packet_path.py.

A "router" is a home router: a namespace whose WAN end (`wan`) sits on the hub
bridge with an underlay address like a host's, and whose LAN bridge (`lan`) holds
the first address of its LAN. It forwards and MASQUERADEs what leaves by `wan`;
from the WAN it forwards only replies (conntrack) and what a port forward
(`forward_udp`, a DNAT matched on `wan` only, so no hairpin NAT) lets in. A host
added with `behind=` sits on that LAN with the next LAN address and a default
route via the router; hosts on the hub have no default route and no route to any
LAN, as on the internet.

`add_hosts_entry` makes a name resolve inside one namespace: `ip netns exec`
binds every file of /etc/netns/<namespace>/ over /etc/, so a hosts file (and an
nsswitch.conf saying `files` first) there is what nebula's resolver reads. Add
entries before `start`, since the binding happens when a process enters.

Needs root, `ip` (iproute2), `unshare` (util-linux), `nebula` and `ping`
(`LAB_TOOLS`), and with a router `iptables-nft` too (`ROUTER_TOOLS`). Shared by
tests/mesh/test_nebula_mesh.py, tests/mesh/test_packet_path.py,
tests/mesh/test_netns_router.py and bench/mesh_up.py.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional

import yaml

UNDERLAY = ipaddress.IPv4Network("172.31.250.0/24")
PKI_DIR = "/etc/nebula"
NETNS_ETC = Path("/etc/netns")        # what `ip netns exec` binds over /etc/
IPTABLES = "iptables-nft"             # a network namespace has its own nftables tables
WAN, LAN = "wan", "lan"               # a router's interfaces, in its own namespace
_FIRST_HOST = 10


@dataclass
class LabHost:
    name: str
    namespace: str
    address: ipaddress.IPv4Address
    directory: Path
    process: Optional[subprocess.Popen] = None
    log: Optional[Path] = None
    router: Optional[str] = None       # the lab router it sits behind, if any


@dataclass
class LabRouter:
    name: str
    namespace: str
    wan_address: ipaddress.IPv4Address    # on the hub bridge, as a host's
    lan: ipaddress.IPv4Network
    lan_address: ipaddress.IPv4Address    # the LAN's first address: its hosts' gateway
    lan_hosts: int = 0                    # LAN addresses handed out after lan_address


@dataclass
class LabPod:
    name: str
    namespace: str
    host: str                          # the lab host it sits behind
    address: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address     # the host's end of the veth


LAB_TOOLS = ("ip", "unshare", "nebula", "ping")
ROUTER_TOOLS = (IPTABLES,)             # needed too as soon as a lab has a router


def why_no_lab(router: bool = False) -> Optional[str]:
    """Why a NebulaLab (with a router when `router`) cannot run on this machine, or
    None when it can."""
    tools = LAB_TOOLS + (ROUTER_TOOLS if router else ())
    missing = [tool for tool in tools if not shutil.which(tool)]
    if missing or os.geteuid() != 0:
        return f"needs root and {', '.join(missing) or 'nothing else'}"
    return None


def _run(*cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def point_at_lighthouse(config_yaml: str, lighthouse_address: str) -> str:
    """The rendered config with every static_host_map address replaced by
    `lighthouse_address` (ports kept)."""
    static = yaml.safe_load(config_yaml).get("static_host_map") or {}
    hosts = {str(entry).rsplit(":", 1)[0] for entries in static.values() for entry in entries}
    return rewrite_endpoints(config_yaml, dict.fromkeys(hosts, lighthouse_address))


def rewrite_endpoints(config_yaml: str, endpoints: Mapping[str, str]) -> str:
    """The config with every static_host_map entry `HOST:PORT` whose HOST is a key of
    `endpoints` replaced: by `endpoints[HOST]:PORT` when the value is a bare address
    or name, by the value itself when it is `addr:port`. Other entries are kept."""
    config = yaml.safe_load(config_yaml)
    static = config.get("static_host_map") or {}
    for overlay_ip, entries in static.items():
        rewritten = []
        for entry in entries:
            host, port = str(entry).rsplit(":", 1)
            if host in endpoints:
                value = endpoints[host]
                entry = value if ":" in value else f"{value}:{port}"
            rewritten.append(entry)
        static[overlay_ip] = rewritten
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class NebulaLab:
    """Namespaces named `hl-<tag>-…`, unique per lab."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    hosts: dict[str, LabHost] = field(default_factory=dict)
    pods: dict[str, LabPod] = field(default_factory=dict)
    routers: dict[str, LabRouter] = field(default_factory=dict)
    nebula: str = "nebula"             # the binary every host runs
    _namespaces: list[str] = field(default_factory=list)
    _hub_ports: int = 0                # underlay addresses (and hub ports) handed out
    _hosts_entries: dict[str, list[str]] = field(default_factory=dict)   # namespace → lines
    _helpers: list[subprocess.Popen] = field(default_factory=list)
    _workdir: Optional[Path] = None

    @property
    def hub(self) -> str:
        return f"hl-{self.tag}-hub"

    def __enter__(self) -> "NebulaLab":
        self._workdir = Path(tempfile.mkdtemp(prefix=f"nebula-lab-{self.tag}-"))
        os.makedirs(PKI_DIR, exist_ok=True)  # the mount point (Debian's nebula ships it)
        self._add_namespace(self.hub)
        _run("ip", "-n", self.hub, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.hub, "link", "set", "br0", "up")
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _add_namespace(self, name: str) -> None:
        _run("ip", "netns", "add", name)
        self._namespaces.append(name)
        _run("ip", "-n", name, "link", "set", "lo", "up")

    def _plug_into_hub(self, namespace: str, device: str) -> ipaddress.IPv4Address:
        """A veth from `namespace` (named `device` there) to the hub bridge, with the
        next underlay address."""
        index = self._hub_ports
        self._hub_ports += 1
        address = UNDERLAY.network_address + _FIRST_HOST + index
        if address not in UNDERLAY or address == UNDERLAY.broadcast_address:
            raise RuntimeError(f"no underlay address left in {UNDERLAY}")
        _run("ip", "-n", namespace, "link", "add", device, "type", "veth", "peer", "name", f"p{index}",
             "netns", self.hub)
        _run("ip", "-n", self.hub, "link", "set", f"p{index}", "master", "br0", "up")
        _run("ip", "-n", namespace, "addr", "add", f"{address}/{UNDERLAY.prefixlen}", "dev", device)
        _run("ip", "-n", namespace, "link", "set", device, "up")
        return address

    def add_router(self, name: str = "router",
                   lan: ipaddress.IPv4Network = ipaddress.IPv4Network("192.168.50.0/24")) -> LabRouter:
        """A home router: `wan` on the hub bridge, a `lan` bridge holding the LAN's
        first address; it forwards, MASQUERADEs what leaves by `wan`, and lets in
        from `wan` only replies and what `forward_udp` forwards."""
        if name in self.routers or name in self.hosts or name in self.pods:
            raise ValueError(f"{name} is already in the lab")
        namespace = f"hl-{self.tag}-r{len(self.routers)}"
        self._add_namespace(namespace)
        wan_address = self._plug_into_hub(namespace, WAN)
        lan_address = lan.network_address + 1
        _run("ip", "-n", namespace, "link", "add", LAN, "type", "bridge")
        _run("ip", "-n", namespace, "addr", "add", f"{lan_address}/{lan.prefixlen}", "dev", LAN)
        _run("ip", "-n", namespace, "link", "set", LAN, "up")
        router = LabRouter(name, namespace, wan_address, lan, lan_address)
        self.routers[name] = router
        self.set_forwarding(name, True)
        for rule in (("-t", "nat", "-A", "POSTROUTING", "-o", WAN, "-j", "MASQUERADE"),
                     # A route to the LAN on some hub host must not open it either.
                     ("-A", "FORWARD", "-i", WAN, "-m", "conntrack", "--ctstate", "ESTABLISHED,RELATED,DNAT",
                      "-j", "ACCEPT"),
                     ("-A", "FORWARD", "-i", WAN, "-j", "DROP")):
            _run("ip", "netns", "exec", namespace, IPTABLES, *rule)
        return router

    def forward_udp(self, router: str, public_port: int, host: str, host_port: int) -> None:
        """A port forward: UDP arriving on the router's `wan` for `public_port` goes to
        the LAN host's `host_port`. Matched on `wan` only (no hairpin NAT)."""
        lab_router, lab_host = self.routers[router], self.hosts[host]
        if lab_host.router != router:
            raise ValueError(f"{host} is not behind {router}")
        _run("ip", "netns", "exec", lab_router.namespace, IPTABLES, "-t", "nat", "-A", "PREROUTING",
             "-i", WAN, "-p", "udp", "--dport", str(public_port),
             "-j", "DNAT", "--to-destination", f"{lab_host.address}:{host_port}")

    def add_host(self, name: str, files: Mapping[str, str], lighthouse_address: Optional[str] = None, *,
                 behind: Optional[str] = None, endpoints: Optional[Mapping[str, str]] = None) -> LabHost:
        """A namespace holding this host's files (ca.crt, host.crt, host.key,
        config.yml): on the hub bridge, or with `behind` on that router's LAN with
        the next LAN address and a default route via the router.
        `lighthouse_address` rewrites every static_host_map entry's address;
        `endpoints` (see `rewrite_endpoints`) only those it names."""
        if lighthouse_address and endpoints:
            raise ValueError("give lighthouse_address or endpoints, not both")
        if name in self.hosts or name in self.routers or name in self.pods:
            raise ValueError(f"{name} is already in the lab")
        index = len(self.hosts)
        namespace = f"hl-{self.tag}-{index}"
        self._add_namespace(namespace)
        if behind is None:
            address = self._plug_into_hub(namespace, "eth0")
        else:
            router = self.routers[behind]
            router.lan_hosts += 1
            address = router.lan_address + router.lan_hosts
            if address not in router.lan or address == router.lan.broadcast_address:
                raise RuntimeError(f"no address left in {behind}'s LAN {router.lan}")
            _run("ip", "-n", namespace, "link", "add", "eth0", "type", "veth", "peer", "name", f"h{index}",
                 "netns", router.namespace)
            _run("ip", "-n", router.namespace, "link", "set", f"h{index}", "master", LAN, "up")
            _run("ip", "-n", namespace, "addr", "add", f"{address}/{router.lan.prefixlen}", "dev", "eth0")
            _run("ip", "-n", namespace, "link", "set", "eth0", "up")
            _run("ip", "-n", namespace, "route", "add", "default", "via", str(router.lan_address))

        directory = self._workdir / name
        directory.mkdir(mode=0o700)
        for file_name, content in files.items():
            if file_name == "config.yml" and lighthouse_address:
                content = point_at_lighthouse(content, lighthouse_address)
            if file_name == "config.yml" and endpoints:
                content = rewrite_endpoints(content, endpoints)
            path = directory / file_name
            path.write_text(content)
            path.chmod(0o600 if file_name.endswith(".key") else 0o644)
        host = LabHost(name, namespace, address, directory, router=behind)
        self.hosts[name] = host
        return host

    def add_hosts_entry(self, host: str, name: str, address: str) -> None:
        """Make `name` resolve to `address` inside the host's namespace, for every
        process entering it from now on (`ip netns exec` binds
        /etc/netns/<namespace>/hosts over /etc/hosts): call before `start`."""
        namespace = self._namespace(host)
        lines = self._hosts_entries.setdefault(namespace, [])
        lines.append(f"{address} {name}")
        directory = NETNS_ETC / namespace
        for attempt in range(3):       # another lab's close() may rmdir /etc/netns meanwhile
            try:
                directory.mkdir(parents=True, exist_ok=True)
                (directory / "hosts").write_text(
                    "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" + "\n".join(lines) + "\n")
                # Files first whatever the machine's nsswitch.conf says (Go reads it to
                # pick its order); only bound when /etc/nsswitch.conf exists to bind over.
                if Path("/etc/nsswitch.conf").exists():
                    (directory / "nsswitch.conf").write_text("hosts: files dns\n")
                break
            except FileNotFoundError:
                if attempt == 2:
                    raise

    def add_pod(self, name: str, host: str, subnet: ipaddress.IPv4Network) -> LabPod:
        """A namespace behind `host` with an address of `subnet`, routed via the host,
        which forwards. Nebula on the host is not involved until a packet leaves by
        its tun."""
        index = len(self.pods)
        namespace = f"hl-{self.tag}-pod{index}"
        gateway, address = subnet.network_address + 1, subnet.network_address + 10
        host_ns = self.hosts[host].namespace
        self._add_namespace(namespace)
        _run("ip", "-n", namespace, "link", "add", "eth0", "type", "veth", "peer", "name", f"pod{index}",
             "netns", host_ns)
        _run("ip", "-n", host_ns, "addr", "add", f"{gateway}/{subnet.prefixlen}", "dev", f"pod{index}")
        _run("ip", "-n", host_ns, "link", "set", f"pod{index}", "up")
        _run("ip", "-n", namespace, "addr", "add", f"{address}/{subnet.prefixlen}", "dev", "eth0")
        _run("ip", "-n", namespace, "link", "set", "eth0", "up")
        _run("ip", "-n", namespace, "route", "add", "default", "via", str(gateway))
        self.set_forwarding(host, True)
        pod = LabPod(name, namespace, host, address, gateway)
        self.pods[name] = pod
        return pod

    def set_forwarding(self, name: str, on: bool) -> None:
        """IPv4 forwarding in one namespace (/proc/sys/net is per network namespace)."""
        _run("ip", "netns", "exec", self._namespace(name), "sh", "-c",
             f"echo {int(on)} > /proc/sys/net/ipv4/ip_forward")

    def _namespace(self, name: str) -> str:
        for group in (self.hosts, self.pods, self.routers):
            if name in group:
                return group[name].namespace
        raise KeyError(name)

    def start(self, name: str) -> None:
        """Run nebula in the host's namespace with its directory bound on /etc/nebula."""
        host = self.hosts[name]
        host.log = self._workdir / f"{name}.log"
        script = f'mount --bind "$1" {PKI_DIR} && exec "$2" -config {PKI_DIR}/config.yml'
        with open(host.log, "wb") as log:
            host.process = subprocess.Popen(
                ["ip", "netns", "exec", host.namespace, "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", script, "sh", str(host.directory), self.nebula],
                stdout=log, stderr=subprocess.STDOUT,
            )

    def exec(self, name: str, *cmd: str, timeout: float = 20) -> subprocess.CompletedProcess:
        """Run a command in a host's, a pod's or a router's namespace."""
        return _run("ip", "netns", "exec", self._namespace(name), *cmd, check=False, timeout=timeout)

    def ping(self, name: str, target: str, count: int = 1, wait: float = 1) -> bool:
        result = self.exec(name, "ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(wait), target,
                           timeout=count * (wait + 1) + 5)
        return result.returncode == 0

    def wait_for_ping(self, name: str, target: str, timeout: float = 15) -> float:
        """Seconds until `name` gets an answer from `target`; raises on timeout."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if self.ping(name, target, wait=0.5):
                return time.monotonic() - start
        raise TimeoutError(f"{name} got no answer from {target} within {timeout}s\n{self.logs()}")

    def listen_tcp(self, name: str, port: int, padding: int = 0) -> None:
        """A TCP listener in a host's or pod's namespace that answers each client
        `ok <the client's address as seen here>\n`, then `padding` more bytes."""
        code = ("import socket\n"
                "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
                f"s.bind(('0.0.0.0', {port})); s.listen(8); print('ready', flush=True)\n"
                "while True:\n    c,peer=s.accept()\n"
                "    try:\n"
                f"        c.sendall(b'ok '+peer[0].encode()+b'\\n'+b'.'*{padding})\n"
                "    except OSError:\n        pass\n"
                "    c.close()\n")
        proc = subprocess.Popen(["ip", "netns", "exec", self._namespace(name), sys.executable, "-c", code],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self._helpers.append(proc)
        if proc.stdout.readline().strip() != "ready":
            raise RuntimeError(f"listener on {name}:{port} did not start")

    def tcp_connects(self, name: str, target: str, port: int, timeout: float = 3) -> bool:
        """True when a TCP connection from `name` to target:port is answered `ok`."""
        code = ("import socket,sys\n"
                "try:\n"
                f"    c=socket.create_connection(('{target}', {port}), timeout={timeout})\n"
                "    sys.exit(0 if c.recv(2)==b'ok' else 1)\n"
                "except OSError:\n    sys.exit(1)\n")
        return self.exec(name, sys.executable, "-c", code, timeout=timeout + 10).returncode == 0

    def tcp_fetch(self, name: str, target: str, port: int, timeout: float = 5) -> Optional[bytes]:
        """Everything a `listen_tcp` listener at target:port sends to `name`, or None
        when no connection is made or it does not finish within `timeout`."""
        code = ("import socket,sys\n"
                "try:\n"
                f"    c=socket.create_connection(('{target}', {port}), timeout={timeout})\n"
                "    data=b''\n"
                "    while True:\n"
                "        chunk=c.recv(65536)\n"
                "        if not chunk: break\n"
                "        data+=chunk\n"
                "    sys.stdout.buffer.write(data)\n"
                "except OSError:\n    sys.exit(1)\n")
        result = subprocess.run(["ip", "netns", "exec", self._namespace(name), sys.executable, "-c", code],
                                capture_output=True, timeout=timeout + 10)
        return result.stdout if result.returncode == 0 else None

    def wait_for_interface(self, name: str, overlay_ip: str, device: str = "nebula1", timeout: float = 10) -> None:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            out = self.exec(name, "ip", "-4", "-o", "addr", "show", "dev", device).stdout
            if f" {overlay_ip}/" in out:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{name}: {device} has no {overlay_ip} after {timeout}s\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for host in self.hosts.values():
            if host.log and host.log.exists():
                parts.append(f"--- {host.name} ---\n" + host.log.read_text()[-3000:])
        return "\n".join(parts)

    def close(self) -> None:
        """Stop every process, delete every namespace and the work directory."""
        procs = [h.process for h in self.hosts.values() if h.process] + self._helpers
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            if proc.stdout:
                proc.stdout.close()
        for namespace in reversed(self._namespaces):
            _run("ip", "netns", "del", namespace, check=False)
        self._namespaces.clear()
        for namespace in self._hosts_entries:
            shutil.rmtree(NETNS_ETC / namespace, ignore_errors=True)
        self._hosts_entries.clear()
        try:
            NETNS_ETC.rmdir()          # only when no other lab (or anyone) uses it
        except OSError:
            pass
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def lab_files(plan, host: str) -> dict[str, str]:
    """The four rendered Nebula files of one host from a `harness.Plan`."""
    prefix = f"nebula/{host}/"
    return {f.path[len(prefix):]: f.content for f in plan.files if f.path.startswith(prefix)}

