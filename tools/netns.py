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

Needs root, `ip` (iproute2), `unshare` (util-linux), `nebula` and `ping`. Shared by
tests/mesh/test_nebula_mesh.py, tests/mesh/test_packet_path.py and bench/mesh_up.py.
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
_FIRST_HOST = 10


@dataclass
class LabHost:
    name: str
    namespace: str
    address: ipaddress.IPv4Address
    directory: Path
    process: Optional[subprocess.Popen] = None
    log: Optional[Path] = None


@dataclass
class LabPod:
    name: str
    namespace: str
    host: str                          # the lab host it sits behind
    address: ipaddress.IPv4Address
    gateway: ipaddress.IPv4Address     # the host's end of the veth


LAB_TOOLS = ("ip", "unshare", "nebula", "ping")


def why_no_lab() -> Optional[str]:
    """Why a NebulaLab cannot run on this machine, or None when it can."""
    missing = [tool for tool in LAB_TOOLS if not shutil.which(tool)]
    if missing or os.geteuid() != 0:
        return f"needs root and {', '.join(missing) or 'nothing else'}"
    return None


def _run(*cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, capture_output=True, text=True, timeout=timeout)


def point_at_lighthouse(config_yaml: str, lighthouse_address: str) -> str:
    """The rendered config with only the lighthouse's public address replaced."""
    config = yaml.safe_load(config_yaml)
    for overlay_ip, endpoints in config.get("static_host_map", {}).items():
        config["static_host_map"][overlay_ip] = [
            f"{lighthouse_address}:{endpoint.rsplit(':', 1)[1]}" for endpoint in endpoints
        ]
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class NebulaLab:
    """Namespaces named `hl-<tag>-…`, unique per lab."""

    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    hosts: dict[str, LabHost] = field(default_factory=dict)
    pods: dict[str, LabPod] = field(default_factory=dict)
    nebula: str = "nebula"             # the binary every host runs
    _namespaces: list[str] = field(default_factory=list)
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

    def add_host(self, name: str, files: Mapping[str, str], lighthouse_address: Optional[str] = None) -> LabHost:
        """A namespace on the bridge holding this host's files (ca.crt, host.crt,
        host.key, config.yml). `lighthouse_address` rewrites static_host_map."""
        index = len(self.hosts)
        namespace = f"hl-{self.tag}-{index}"
        address = UNDERLAY.network_address + _FIRST_HOST + index
        self._add_namespace(namespace)
        _run("ip", "-n", namespace, "link", "add", "eth0", "type", "veth", "peer", "name", f"p{index}",
             "netns", self.hub)
        _run("ip", "-n", self.hub, "link", "set", f"p{index}", "master", "br0", "up")
        _run("ip", "-n", namespace, "addr", "add", f"{address}/{UNDERLAY.prefixlen}", "dev", "eth0")
        _run("ip", "-n", namespace, "link", "set", "eth0", "up")

        directory = self._workdir / name
        directory.mkdir(mode=0o700)
        for file_name, content in files.items():
            if file_name == "config.yml" and lighthouse_address:
                content = point_at_lighthouse(content, lighthouse_address)
            path = directory / file_name
            path.write_text(content)
            path.chmod(0o600 if file_name.endswith(".key") else 0o644)
        host = LabHost(name, namespace, address, directory)
        self.hosts[name] = host
        return host

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
        return self.hosts[name].namespace if name in self.hosts else self.pods[name].namespace

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
        """Run a command in a host's or a pod's namespace."""
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
        if self._workdir:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None


def lab_files(plan, host: str) -> dict[str, str]:
    """The four rendered Nebula files of one host from a `harness.Plan`."""
    prefix = f"nebula/{host}/"
    return {f.path[len(prefix):]: f.content for f in plan.files if f.path.startswith(prefix)}

