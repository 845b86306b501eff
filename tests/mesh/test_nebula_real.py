"""The rendered Nebula files, checked by Debian's real nebula-cert and nebula, for
every lighthouse placement (tests/conftest.py PLACEMENTS).

The files come from `tools/plan.py --render DIR --show-secrets`, as a reviewer
would get them."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml

from tests.conftest import PLACEMENTS, ROOT, require_root, require_tool

EXPECTED_GROUPS = {"lighthouse": ["lighthouse"], "talos-cp-1": ["homelab", "kubernetes"],
                   "talos-worker-1": ["homelab", "kubernetes"], "gpu-0": ["aws", "gpu", "kubernetes"],
                   "gpu-1": ["aws", "gpu", "kubernetes"]}
EXPECTED_SUBNETS = {"gpu-0": ["10.52.0.0/24"], "gpu-1": ["10.52.1.0/24"]}    # gpuClusterPodCidr's /24s
# Only the EC2 placement has a host of its own for the lighthouse.
HOSTS = {placement: sorted(h for h in EXPECTED_GROUPS if h != "lighthouse" or placement == "ec2")
         for placement in PLACEMENTS}
CASES = [(placement, host) for placement in PLACEMENTS for host in HOSTS[placement]]
# The homelab placement's endpoint is a DNS name (home.example.net); `nebula -test`
# resolves it, so it runs with this /etc/hosts in its own mount namespace.
ETC_HOSTS = "127.0.0.1 localhost\n93.184.216.34 home.example.net\n"


@pytest.fixture(scope="module")
def renders(tmp_path_factory):
    """placement -> (render directory's nebula/, plan outputs), each rendered once."""
    done = {}

    def render(placement: str):
        if placement not in done:
            out = tmp_path_factory.mktemp(f"render-{placement}")
            sets = [arg for key, value in PLACEMENTS[placement].items() for arg in ("--set", f"{key}={value}")]
            subprocess.run([sys.executable, str(ROOT / "tools/plan.py"), "--set", "gpuWorkers=2", *sets,
                            "--render", str(out), "--show-secrets", "--json", str(out / "plan.json")],
                           check=True, capture_output=True, cwd=ROOT)
            done[placement] = out / "nebula", json.loads((out / "plan.json").read_text())["outputs"]
        return done[placement]

    return render


@pytest.fixture(scope="module")
def etc_hosts(tmp_path_factory):
    path = tmp_path_factory.mktemp("etc") / "hosts"
    path.write_text(ETC_HOSTS)
    return path


def nebula_cert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("nebula-cert"), *args], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_every_rendered_host_is_there(renders, placement):
    directory, outputs = renders(placement)
    assert sorted(p.name for p in directory.iterdir()) == HOSTS[placement]
    assert sorted(outputs["nebulaIps"]) == HOSTS[placement]


@pytest.mark.parametrize("placement, host", CASES)
def test_nebula_cert_verifies_and_prints_what_we_meant(renders, placement, host):
    directory, outputs = renders(placement)
    d = directory / host
    result = nebula_cert("verify", "-ca", str(d / "ca.crt"), "-crt", str(d / "host.crt"))
    assert result.returncode == 0, result.stdout + result.stderr
    printed = json.loads(nebula_cert("print", "-json", "-path", str(d / "host.crt")).stdout)
    ca = json.loads(nebula_cert("print", "-json", "-path", str(d / "ca.crt")).stdout)
    assert printed["details"]["name"] == host
    assert printed["details"]["ips"] == [f"{outputs['nebulaIps'][host]}/16"]
    assert printed["details"]["groups"] == EXPECTED_GROUPS[host]
    assert printed["details"]["subnets"] == EXPECTED_SUBNETS.get(host, [])
    assert printed["details"]["isCa"] is False
    assert printed["details"]["issuer"] == ca["fingerprint"]
    assert ca["details"]["isCa"] is True


def test_a_certificate_of_another_ca_fails_verify(renders, tmp_path):
    """The foreign CA and cert are made by the real nebula-cert, not by our code."""
    directory, _ = renders("workers")
    assert nebula_cert("ca", "-name", "other", "-out-crt", str(tmp_path / "o.crt"),
                       "-out-key", str(tmp_path / "o.key")).returncode == 0
    assert nebula_cert("sign", "-ca-crt", str(tmp_path / "o.crt"), "-ca-key", str(tmp_path / "o.key"),
                       "-name", "gpu-0", "-ip", "10.42.2.1/16", "-out-crt", str(tmp_path / "h.crt"),
                       "-out-key", str(tmp_path / "h.key")).returncode == 0
    ours = directory / "gpu-0"
    assert nebula_cert("verify", "-ca", str(ours / "ca.crt"), "-crt", str(tmp_path / "h.crt")).returncode != 0
    assert nebula_cert("verify", "-ca", str(tmp_path / "o.crt"), "-crt", str(ours / "host.crt")).returncode != 0


def nebula_test(directory, etc_hosts) -> subprocess.CompletedProcess:
    """`nebula -test` with `directory` bound on /etc/nebula and `etc_hosts` on
    /etc/hosts, in a private mount namespace."""
    require_tool("unshare")
    nebula = require_tool("nebula")
    require_root("a private mount namespace to bind the files on /etc/nebula")
    script = ('mount --bind "$3" /etc/hosts && mount --bind "$1" /etc/nebula && '
              'exec "$2" -test -config /etc/nebula/config.yml')
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                           str(directory), nebula, str(etc_hosts)], capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("placement, host", CASES)
def test_nebula_accepts_each_config_with_its_files_in_etc_nebula(renders, etc_hosts, placement, host):
    """`nebula -test` loads the config, certificate, key (checked against the
    certificate), firewall and lighthouse settings (every lighthouse in
    `static_host_map`, a port on a lighthouse), with the host's files bound on
    /etc/nebula. Nothing logged at error level: every static address resolves."""
    directory, _ = renders(placement)
    result = nebula_test(directory / host, etc_hosts)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log
    assert "Firewall started" in log
    assert "level=error" not in log and "level=fatal" not in log, log


def _broken(renders, tmp_path, placement, host, change):
    directory, _ = renders(placement)
    copy = tmp_path / host
    shutil.copytree(directory / host, copy)
    config = yaml.safe_load((copy / "config.yml").read_text())
    change(config)
    (copy / "config.yml").write_text(yaml.safe_dump(config))
    return copy


def test_nebula_refuses_a_lighthouse_on_port_0(renders, etc_hosts, tmp_path):
    """Why a lighthouse never gets the homelab's random port (test_nebula_placement_config)."""
    copy = _broken(renders, tmp_path, "homelab", "talos-cp-1", lambda c: c["listen"].update(port=0))
    result = nebula_test(copy, etc_hosts)
    assert result.returncode != 0
    assert "am_lighthouse enabled on node but no port number is set" in result.stdout + result.stderr


def test_nebula_refuses_a_lighthouse_it_has_no_static_address_for(renders, etc_hosts, tmp_path):
    """Why every `lighthouse.hosts` entry is in `static_host_map`: Nebula (1.6 here,
    1.10 alike) does not start otherwise."""
    def drop_one(config):
        config["static_host_map"].pop(config["lighthouse"]["hosts"][-1])
    copy = _broken(renders, tmp_path, "workers", "talos-cp-1", drop_one)
    result = nebula_test(copy, etc_hosts)
    assert result.returncode != 0
    assert "does not have a static_host_map entry" in result.stdout + result.stderr
