"""A homelab API server that answers: a TCP listener on loopback, and a
kubeconfig pointing at it (the program's reachability probe connects for real)."""

from __future__ import annotations

import socket

import pytest

from tools import harness

RANGES = {"hybrid-llm:homelabPodCidr": "10.244.0.0/16", "hybrid-llm:homelabServiceCidr": "10.96.0.0/12"}


def kubeconfig(port: int, host: str = "127.0.0.1") -> str:
    return f"""apiVersion: v1
kind: Config
clusters: [{{name: talos, cluster: {{server: "https://{host}:{port}", certificate-authority-data: "Zm9v"}}}}]
users: [{{name: admin@talos, user: {{client-certificate-data: "Zm9v", client-key-data: "Zm9v"}}}}]
contexts: [{{name: admin@talos, context: {{cluster: talos, user: admin@talos}}}}]
current-context: admin@talos
"""


@pytest.fixture(scope="session")
def api_port():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield listener.getsockname()[1]
    listener.close()


@pytest.fixture(scope="session")
def homelab_overrides(api_port) -> dict:
    return {"hybrid-llm:homelabKubeconfig": kubeconfig(api_port), **RANGES}


@pytest.fixture(scope="session")
def homelab_plan(homelab_overrides) -> harness.Plan:
    return harness.run_stack("dev", homelab_overrides)
