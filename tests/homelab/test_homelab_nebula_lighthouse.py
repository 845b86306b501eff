"""The homelab's Nebula in each lighthouse placement, under Pulumi mocks with a
homelab API server on loopback (tests/homelab/conftest.py): the ConfigMap holds a
homelab lighthouse's own config under `config-<node>.yml`, that node's DaemonSet
projects it as config.yml and declares its UDP port; every other node keeps the
shared `config.yml`."""

from __future__ import annotations

import pytest

from components.homelab.nebula import _digest
from tests.conftest import PLACEMENTS
from tools import harness

CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
DAEMON_SET = "kubernetes:apps/v1:DaemonSet"
NODES = ["talos-cp-1", "talos-worker-1"]             # Pulumi.dev.yaml


def nebula_config_map(plan) -> dict:
    (found,) = [r.plain() for r in plan.of_type(CONFIG_MAP) if r.plain()["metadata"]["name"] == "nebula-config"]
    return found["data"]


def daemon_sets(plan) -> dict[str, dict]:
    """Node -> its Nebula pod spec."""
    sets = {r.plain()["metadata"]["name"]: r.plain()["spec"]["template"]["spec"] for r in plan.of_type(DAEMON_SET)}
    assert all(name.startswith("nebula-") for name in sets)
    return {name.removeprefix("nebula-"): spec for name, spec in sets.items()}


def projected_config(pod: dict) -> tuple[str, str]:
    """(ConfigMap name, key) that the pod mounts as /etc/nebula/config.yml."""
    sources = next(v for v in pod["volumes"] if v["name"] == "pki")["projected"]["sources"]
    (config_map,) = [s["configMap"] for s in sources if "configMap" in s]
    (key,) = [item["key"] for item in config_map["items"] if item["path"] == "config.yml"]
    return config_map["name"], key


def nebula_container(pod: dict) -> dict:
    (container,) = [c for c in pod["containers"] if c["name"] == "nebula"]
    return container


@pytest.fixture(scope="module")
def plans(homelab_overrides):
    """placement -> plan, with a homelab kubeconfig; nebulaPort 4343 so the
    container port is seen to follow it (not the router's public 4242)."""
    return {p: harness.run_stack("dev", {**homelab_overrides, **PLACEMENTS[p], "hybrid-llm:nebulaPort": "4343"})
            for p in PLACEMENTS}


def test_a_homelab_lighthouse_has_its_own_config_map_key(plans):
    plan = plans["homelab"]
    data = nebula_config_map(plan)
    assert set(data) == {"config.yml", "config-talos-cp-1.yml", "ca.crt", "snat.sh"}
    assert data["config-talos-cp-1.yml"] == plan.file("nebula/talos-cp-1/config.yml").content
    assert data["config.yml"] == plan.file("nebula/talos-worker-1/config.yml").content
    assert data["config-talos-cp-1.yml"] != data["config.yml"]


def test_its_daemon_set_projects_that_key(plans):
    pods = daemon_sets(plans["homelab"])
    assert set(pods) == set(NODES)
    assert projected_config(pods["talos-cp-1"]) == ("nebula-config", "config-talos-cp-1.yml")
    assert projected_config(pods["talos-worker-1"]) == ("nebula-config", "config.yml")


def test_its_daemon_set_declares_the_udp_port(plans):
    """A homelab lighthouse listens on `nebulaPort` on the node (host networking):
    its pod says so, UDP, so the port is visible to `kubectl` and to a
    scheduler's host-port conflict check."""
    pods = daemon_sets(plans["homelab"])
    assert pods["talos-cp-1"]["hostNetwork"] is True, "the port is the node's own"
    ports = nebula_container(pods["talos-cp-1"]).get("ports") or []
    assert [(p["containerPort"], p.get("protocol")) for p in ports] == [(4343, "UDP")]
    assert not nebula_container(pods["talos-worker-1"]).get("ports"), "a random port: nothing to declare"


@pytest.mark.parametrize("placement", ["workers", "ec2"])
def test_without_a_homelab_lighthouse_every_node_runs_the_shared_config(plans, placement):
    plan = plans[placement]
    data = nebula_config_map(plan)
    assert set(data) == {"config.yml", "ca.crt", "snat.sh"}
    for node, pod in daemon_sets(plan).items():
        assert data["config.yml"] == plan.file(f"nebula/{node}/config.yml").content
        assert projected_config(pod) == ("nebula-config", "config.yml")
        assert not nebula_container(pod).get("ports"), node


def test_a_single_homelab_node_that_is_the_lighthouse_needs_no_shared_config(homelab_overrides):
    plan = harness.run_stack("dev", {**homelab_overrides, **PLACEMENTS["homelab"],
                                     "hybrid-llm:homelabNodes": '["talos-cp-1"]'})
    data = nebula_config_map(plan)
    assert set(data) == {"config-talos-cp-1.yml", "ca.crt", "snat.sh"}
    (pod,) = daemon_sets(plan).values()
    assert projected_config(pod) == ("nebula-config", "config-talos-cp-1.yml")


def test_each_pod_digests_the_config_it_runs(plans):
    """The pod annotation that restarts a pod when its files change digests the
    lighthouse's own config for the lighthouse pod, the shared one for the others:
    a change to the shared config (a new public endpoint) leaves the lighthouse
    running, and a change to its own restarts it."""
    plan = plans["homelab"]
    data = nebula_config_map(plan)
    for r in plan.of_type(DAEMON_SET):
        node = r.plain()["metadata"]["name"].removeprefix("nebula-")
        key = projected_config(daemon_sets(plan)[node])[1]
        expected = _digest(data[key], data["ca.crt"], plan.file(f"nebula/{node}/host.crt").content, data["snat.sh"])
        assert r.plain()["spec"]["template"]["metadata"]["annotations"]["hybrid-llm/files"] == expected, node
