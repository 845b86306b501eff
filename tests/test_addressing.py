"""Pod ranges of the GPU workers, cut from gpuClusterPodCidr (components/addressing.py),
and how the inventory hands them out."""

from __future__ import annotations

import ipaddress

import pytest

from components import addressing, inventory
from components.addressing import pod_range_problem, worker_pod_range
from components.config import ConfigError, parse
from tests.conftest import PLACEMENTS
from tools import harness

net = ipaddress.IPv4Network


@pytest.mark.parametrize("pod_cidr", ["10.52.0.0/16", "10.60.0.0/20", "172.20.4.0/22", "192.168.7.0/24"])
def test_ranges_are_24s_inside_the_cidr_and_disjoint(pod_cidr):
    cidr = net(pod_cidr)
    room = 2 ** (24 - cidr.prefixlen)
    ranges = [worker_pod_range(cidr, i) for i in range(min(room, 64))]
    assert all(r.prefixlen == 24 and r.subnet_of(cidr) for r in ranges)
    assert all(not a.overlaps(b) for i, a in enumerate(ranges) for b in ranges[i + 1:])
    assert worker_pod_range(cidr, room - 1) == list(cidr.subnets(new_prefix=24))[-1]


def test_worker_i_gets_the_i_th_24_whatever_the_number_of_workers():
    """Adding a worker never moves an existing one's range (k3s keeps a node's
    pod range once assigned, and the certificate carries it)."""
    assert worker_pod_range(net("10.52.0.0/16"), 0) == net("10.52.0.0/24")
    assert worker_pod_range(net("10.52.0.0/16"), 1) == net("10.52.1.0/24")
    assert worker_pod_range(net("10.52.0.0/16"), 255) == net("10.52.255.0/24")
    assert worker_pod_range(net("10.60.0.0/23"), 1) == net("10.60.1.0/24")


def test_a_24_holds_exactly_one_worker():
    assert worker_pod_range(net("10.52.7.0/24"), 0) == net("10.52.7.0/24")
    assert pod_range_problem(net("10.52.7.0/24"), 1) is None


@pytest.mark.parametrize("pod_cidr, index, error", [
    ("10.52.0.0/25", 0, ValueError),
    ("10.52.0.0/24", 1, IndexError),
    ("10.52.0.0/16", 256, IndexError),
    ("10.52.0.0/16", -1, IndexError),
])
def test_no_range_outside_the_cidr(pod_cidr, index, error):
    with pytest.raises(error):
        worker_pod_range(net(pod_cidr), index)


@pytest.mark.parametrize("pod_cidr, workers, key, words", [
    ("10.52.0.0/25", 1, "gpuClusterPodCidr", "/25 is too small"),
    ("10.52.0.0/28", 1, "gpuClusterPodCidr", "use /24 or larger"),
    ("10.52.0.0/24", 2, "gpuWorkers", "widen hybrid-llm:gpuClusterPodCidr"),
    ("10.52.0.0/22", 5, "gpuWorkers", "holds 4"),
])
def test_capacity_problems_name_the_key_to_change(pod_cidr, workers, key, words):
    problem = pod_range_problem(net(pod_cidr), workers)
    assert problem is not None
    assert problem[0] == key and words in problem[1]


@pytest.mark.parametrize("pod_cidr, workers", [("10.52.0.0/16", 256), ("10.52.0.0/22", 4), ("10.52.0.0/24", 1)])
def test_full_but_fitting_is_no_problem(pod_cidr, workers):
    assert pod_range_problem(net(pod_cidr), workers) is None
    assert len({worker_pod_range(net(pod_cidr), i) for i in range(workers)}) == workers


def test_the_prefix_is_what_k3s_gives_a_node():
    assert addressing.WORKER_POD_PREFIX == 24


def _hosts(overrides: dict) -> list[inventory.Host]:
    return inventory.hosts(parse(harness.stack_config("dev", overrides), project="hybrid-llm", stack="dev"))


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_inventory_gives_gpu_hosts_their_range_and_others_none(placement):
    hosts = _hosts({**PLACEMENTS[placement], "hybrid-llm:gpuWorkers": "3"})
    others = ["lighthouse"] if placement == "ec2" else []
    others += ["talos-cp-1", "talos-worker-1"]
    assert [h.name for h in hosts if h.role != "gpu"] == others
    assert [h.pod_cidr for h in hosts if h.role != "gpu"] == [None] * len(others)
    assert [h.pod_cidr for h in hosts if h.role == "gpu"] == [net(f"10.52.{i}.0/24") for i in range(3)]


LIGHTHOUSES = {"workers": ["gpu-0", "gpu-1"], "ec2": ["lighthouse"], "homelab": ["talos-cp-1"]}


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_the_placement_decides_who_is_a_lighthouse_and_nothing_else(placement):
    """Name, role, address, groups and pod range (what a certificate carries) are
    the same in every placement; only `lighthouse` moves, and only the EC2
    placement adds a host (the `lighthouse`, role lighthouse, at the mesh's .0.1)."""
    hosts = _hosts({**PLACEMENTS[placement], "hybrid-llm:gpuWorkers": "2"})
    assert [h.name for h in hosts if h.lighthouse] == LIGHTHOUSES[placement]
    baseline = {h.name: h for h in _hosts({**PLACEMENTS["workers"], "hybrid-llm:gpuWorkers": "2"})}
    for h in hosts:
        if h.name == "lighthouse":
            assert placement == "ec2"
            assert (h.role, h.overlay_ip, h.groups, h.pod_cidr) == (
                "lighthouse", ipaddress.IPv4Address("10.42.0.1"), ("lighthouse",), None)
            continue
        same = baseline[h.name]
        assert (h.role, h.overlay_ip, h.groups, h.index, h.pod_cidr) == (
            same.role, same.overlay_ip, same.groups, same.index, same.pod_cidr), h.name
    assert {h.name for h in hosts} - {"lighthouse"} == set(baseline)


def test_the_homelab_lighthouse_is_the_node_named():
    hosts = _hosts({**PLACEMENTS["homelab"], "hybrid-llm:homelabLighthouseNode": "talos-worker-1"})
    assert [h.name for h in hosts if h.lighthouse] == ["talos-worker-1"]
    assert [h.name for h in hosts if h.role == "homelab"] == ["talos-cp-1", "talos-worker-1"], "order kept"


def test_inventory_follows_gpu_cluster_pod_cidr():
    hosts = _hosts({"hybrid-llm:gpuWorkers": "2", "hybrid-llm:gpuClusterPodCidr": "10.60.8.0/21"})
    assert [h.pod_cidr for h in hosts if h.role == "gpu"] == [net("10.60.8.0/24"), net("10.60.9.0/24")]


def test_a_host_built_without_a_range_has_none():
    host = inventory.Host("gpu-0", "gpu", ipaddress.IPv4Address("10.42.2.1"), ("gpu",), 0)
    assert host.pod_cidr is None


@pytest.mark.parametrize("overrides, key", [
    ({"hybrid-llm:gpuWorkers": "3", "hybrid-llm:gpuClusterPodCidr": "10.52.0.0/23"}, "gpuWorkers"),
    ({"hybrid-llm:gpuClusterPodCidr": "10.52.0.0/25"}, "gpuClusterPodCidr"),
])
def test_no_host_list_from_a_range_that_cannot_hold_every_worker(overrides, key):
    """Config validation is the first to say so; the inventory refuses too."""
    with pytest.raises(ConfigError, match=f"^hybrid-llm:{key}: "):
        _hosts(overrides)
