"""The rendered Nebula files, checked by Debian's real nebula-cert and nebula.

The files come from `tools/plan.py --render DIR --show-secrets`, as a reviewer
would get them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import ROOT, require_root, require_tool

EXPECTED_GROUPS = {"lighthouse": ["lighthouse"], "talos-cp-1": ["homelab", "kubernetes"],
                   "talos-worker-1": ["homelab", "kubernetes"], "gpu-0": ["aws", "gpu", "kubernetes"],
                   "gpu-1": ["aws", "gpu", "kubernetes"]}
EXPECTED_SUBNETS = {"gpu-0": ["10.52.0.0/24"], "gpu-1": ["10.52.1.0/24"]}    # gpuClusterPodCidr's /24s


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    out = tmp_path_factory.mktemp("render")
    subprocess.run([sys.executable, str(ROOT / "tools/plan.py"), "--set", "gpuWorkers=2", "--render", str(out),
                    "--show-secrets", "--json", str(out / "plan.json")], check=True, capture_output=True, cwd=ROOT)
    outputs = json.loads((out / "plan.json").read_text())["outputs"]
    return out / "nebula", outputs


def nebula_cert(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([require_tool("nebula-cert"), *args], capture_output=True, text=True, timeout=30)


def test_every_rendered_host_is_there(rendered):
    directory, outputs = rendered
    assert sorted(p.name for p in directory.iterdir()) == sorted(EXPECTED_GROUPS)
    assert sorted(outputs["nebulaIps"]) == sorted(EXPECTED_GROUPS)


@pytest.mark.parametrize("host", sorted(EXPECTED_GROUPS))
def test_nebula_cert_verifies_and_prints_what_we_meant(rendered, host):
    directory, outputs = rendered
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


def test_a_certificate_of_another_ca_fails_verify(rendered, tmp_path):
    """The foreign CA and cert are made by the real nebula-cert, not by our code."""
    directory, _ = rendered
    assert nebula_cert("ca", "-name", "other", "-out-crt", str(tmp_path / "o.crt"),
                       "-out-key", str(tmp_path / "o.key")).returncode == 0
    assert nebula_cert("sign", "-ca-crt", str(tmp_path / "o.crt"), "-ca-key", str(tmp_path / "o.key"),
                       "-name", "gpu-0", "-ip", "10.42.2.1/16", "-out-crt", str(tmp_path / "h.crt"),
                       "-out-key", str(tmp_path / "h.key")).returncode == 0
    ours = directory / "gpu-0"
    assert nebula_cert("verify", "-ca", str(ours / "ca.crt"), "-crt", str(tmp_path / "h.crt")).returncode != 0
    assert nebula_cert("verify", "-ca", str(tmp_path / "o.crt"), "-crt", str(ours / "host.crt")).returncode != 0


@pytest.mark.parametrize("host", sorted(EXPECTED_GROUPS))
def test_nebula_accepts_each_config_with_its_files_in_etc_nebula(rendered, host):
    """`nebula -test` loads the config, certificate, key (checked against the
    certificate) and firewall, with the host's files bound on /etc/nebula."""
    require_tool("unshare")
    nebula = require_tool("nebula")
    require_root("a private mount namespace to bind the files on /etc/nebula")
    directory, _ = rendered
    script = 'mount --bind "$1" /etc/nebula && exec "$2" -test -config /etc/nebula/config.yml'
    result = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh",
                             str(directory / host), nebula], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Firewall started" in result.stdout + result.stderr
