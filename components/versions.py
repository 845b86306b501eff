"""The one place that pins what the instances download at boot: version and the
sha256 of each release archive/binary per architecture. Boot scripts refuse a file
whose checksum differs. Re-check the facts in ../shared/DESIGN.md when bumping.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PinnedDownload:
    """A file fetched by a boot script: URL per architecture and its sha256."""

    version: str
    urls: dict[str, str]      # "amd64" / "arm64" -> URL
    sha256: dict[str, str]    # same keys -> lowercase hex digest

    def url(self, arch: str) -> str:
        return self.urls[arch]

    def digest(self, arch: str) -> str:
        return self.sha256[arch]


# k3s, the GPU workers' single-node cluster. Digests of the `k3s` binaries from the
# release's sha256sum-{amd64,arm64}.txt, as an independent public project pins them
# (no network here to download the release); check them against those files when
# bumping.
K3S = PinnedDownload(
    version="v1.34.2+k3s1",
    urls={
        "amd64": "https://github.com/k3s-io/k3s/releases/download/v1.34.2%2Bk3s1/k3s",
        "arm64": "https://github.com/k3s-io/k3s/releases/download/v1.34.2%2Bk3s1/k3s-arm64",
    },
    sha256={
        "amd64": "15811d34187e03fe29d0e46108c42cc33e62cec1b3d9d80f50944536ebcad40a",
        "arm64": "2e1db0e54a8b0d0ab8a264a119c9c617561f9290e7bb2722d795f8bc91b24cf8",
    },
)

# Nebula, on the lighthouse and the workers (the archive holds `nebula` and
# `nebula-cert`). 1.10 reads the v1 certificates components/mesh/nebula_cert.py makes.
# Digests of the release archives as pinned by independent public projects (amd64
# in several, arm64 in one); check them against the release's SHASUM256.txt when
# bumping.
NEBULA = PinnedDownload(
    version="v1.10.3",
    urls={
        "amd64": "https://github.com/slackhq/nebula/releases/download/v1.10.3/nebula-linux-amd64.tar.gz",
        "arm64": "https://github.com/slackhq/nebula/releases/download/v1.10.3/nebula-linux-arm64.tar.gz",
    },
    sha256={
        "amd64": "99ac335caeb69d02a6b6b00a3d4b5d0a36ec3971df480a1cc50e6db378342955",
        "arm64": "69b2764b0c27b04e4f3fb47764cf330555beb5a49e62e045ed5f208a14341343",
    },
)


@dataclass(frozen=True)
class ChartPin:
    """A Helm chart: repository URL, chart name and exact version."""

    repo: str
    name: str
    version: str


# Liqo, the same version on the homelab and on every worker (the version carries
# its "v"). Its CRDs and values are checked against ../shared/upstream/liqo-v1.2.0.
LIQO_CHART = ChartPin("https://helm.liqo.io/", "liqo", "v1.2.0")
# Ollama, otwld's chart; values checked against ../shared/upstream/ollama-helm-1.77.0.
OLLAMA_CHART = ChartPin("https://helm.otwld.com/", "ollama", "1.77.0")
# The Ollama release that chart runs (its appVersion): what the activator answers
# for /api/version while the worker sleeps, before it has seen Ollama's own answer.
OLLAMA_APP_VERSION = "0.32.15"
# NVIDIA's device plugin on the workers (k3s HelmChart).
DEVICE_PLUGIN_CHART = ChartPin("https://nvidia.github.io/k8s-device-plugin", "nvidia-device-plugin", "0.17.0")

# Images on the homelab. Nebula's official image is tagged without the "v" and is
# the same release the AWS hosts install: bump NEBULA and this together.
NEBULA_IMAGE = f"docker.io/nebulaoss/nebula:{NEBULA.version.removeprefix('v')}"
# The homelab's source-NAT init container: Kubernetes' own iptables image, the base
# of kube-proxy. debian-iptables left kubernetes/release in July 2023 (commit
# 0b1dcaf0, last tag bookworm-v1.0.0); its successor distroless-iptables is built
# there (images/build/distroless-iptables: Debian bookworm's iptables package, so
# /usr/sbin/iptables-nft and iptables-legacy, and /bin/sh -> dash). v0.8.6 is the
# tag kubernetes/kubernetes v1.35.0 builds kube-proxy on (build/common.sh
# __default_distroless_iptables_version, PR #135609). Its plain `iptables` is a
# first-use wrapper; components/mesh/snat.py calls iptables-nft by name.
IPTABLES_IMAGE = "registry.k8s.io/build-image/distroless-iptables:v0.8.6"
# The activator's Python: the CPython activator/requirements.lock was frozen with.
ACTIVATOR_PYTHON_IMAGE = "docker.io/library/python:3.11.13-slim-bookworm"
