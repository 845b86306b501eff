"""What NebulaMesh hands the homelab side: one config for every node that is not a
lighthouse (a ConfigMap key), a homelab lighthouse's own config, the SNAT script,
the pod ranges, and the per-node files (a Secret per node). The component alone
under mocks, with the stack's own config and inventory, for each lighthouse
placement; the AWS lighthouses get fixed addresses instead of Elastic IPs."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest
import yaml

from components.mesh import snat
from tests.conftest import PLACEMENTS
from tools import harness

# The AWS lighthouses' addresses: 198.51.100.7, .8, ... in inventory order.
PROGRAM = textwrap.dedent("""
    import pulumi
    from components import inventory
    from components.config import load_config
    from components.mesh import placement
    from components.mesh.nebula import NebulaMesh, NebulaMeshArgs

    cfg = load_config()
    hosts = inventory.hosts(cfg)
    ips = {name: f"198.51.100.{7 + i}" for i, name in enumerate(placement.aws_lighthouses(hosts))}
    mesh = NebulaMesh("mesh", NebulaMeshArgs(
        hosts=hosts, network=cfg.nebula_cidr, port=cfg.nebula_port,
        lighthouse_endpoints=placement.public_endpoints(cfg, hosts, ips),
        lan_endpoints=placement.lan_endpoints(cfg),
        ssm_prefixes={h.name: inventory.ssm_prefix(cfg, h) for h in hosts if h.on_aws},
        ca_validity_hours=100, cert_validity_hours=10, early_renewal_hours=1))
    pulumi.export("homelabConfig", mesh.homelab_config_yaml)
    pulumi.export("snatScript", mesh.homelab_snat_script)
    pulumi.export("podRanges", mesh.pod_ranges)
    pulumi.export("overlayIps", mesh.overlay_ips)
    pulumi.export("lighthouseEndpoints", mesh.lighthouse_endpoints)
    pulumi.export("configs", {name: f.config_yaml for name, f in mesh.host_files.items()})
""")

STACK = {"hybrid-llm:gpuWorkers": "2", "hybrid-llm:nebulaCidr": "10.77.0.0/16",
         "hybrid-llm:gpuClusterPodCidr": "10.80.0.0/16"}
# Per placement: the lighthouses, and the static_host_map of a homelab node that is
# not one (overlay address -> endpoints, LAN first).
LIGHTHOUSES = {"workers": ["gpu-0", "gpu-1"], "ec2": ["lighthouse"], "homelab": ["talos-cp-1"]}
HOMELAB_MAP = {
    "workers": {"10.77.2.1": ["198.51.100.7:4242"], "10.77.2.2": ["198.51.100.8:4242"]},
    "ec2": {"10.77.0.1": ["198.51.100.7:4242"]},
    "homelab": {"10.77.1.1": ["192.168.1.20:4242", "home.example.net:4242"]},
}
ENDPOINTS = {
    "workers": {"gpu-0": "198.51.100.7:4242", "gpu-1": "198.51.100.8:4242"},
    "ec2": {"lighthouse": "198.51.100.7:4242"},
    "homelab": {"talos-cp-1": "home.example.net:4242"},
}


def run(tmp_path_factory, overrides: dict) -> harness.Plan:
    program = tmp_path_factory.mktemp("mesh") / "program.py"
    program.write_text(PROGRAM)
    return harness.run(harness.stack_config("dev", {**STACK, **overrides}), program=program)


@pytest.fixture(scope="module", params=list(PLACEMENTS))
def placed(request, tmp_path_factory):
    return request.param, run(tmp_path_factory, PLACEMENTS[request.param])


def test_every_homelab_node_but_a_lighthouse_runs_the_one_homelab_config(placed):
    placement, plan = placed
    configs = plan.outputs["configs"].value
    text = plan.outputs["homelabConfig"].value
    for node in ("talos-cp-1", "talos-worker-1"):
        if node in LIGHTHOUSES[placement]:
            assert configs[node] != text, f"{node} is the lighthouse: a config of its own"
            assert yaml.safe_load(configs[node])["lighthouse"]["am_lighthouse"] is True
        else:
            assert configs[node] == text
    for host in LIGHTHOUSES[placement] + ["gpu-0", "gpu-1"]:
        assert configs[host] != text


def test_homelab_config_routes_both_pod_ranges_and_finds_every_lighthouse(placed):
    placement, plan = placed
    ips = plan.outputs["overlayIps"].value
    config = yaml.safe_load(plan.outputs["homelabConfig"].value)
    assert config["tun"]["unsafe_routes"] == [{"route": "10.80.0.0/24", "via": ips["gpu-0"]},
                                              {"route": "10.80.1.0/24", "via": ips["gpu-1"]}]
    assert config["static_host_map"] == HOMELAB_MAP[placement]
    assert {ips[h] for h in LIGHTHOUSES[placement]} == set(HOMELAB_MAP[placement])
    assert config["lighthouse"]["am_lighthouse"] is False
    assert config["lighthouse"]["hosts"] == list(HOMELAB_MAP[placement])
    assert config["listen"]["port"] == 0
    assert config["firewall"]["inbound"] == [{"port": "any", "proto": "icmp", "host": "any"}]


def test_lighthouse_endpoints_are_what_the_others_dial(placed):
    placement, plan = placed
    assert plan.outputs["lighthouseEndpoints"].value == ENDPOINTS[placement]
    assert not plan.outputs["lighthouseEndpoints"].secret


def test_pod_ranges_and_snat_script_for_the_stack(placed):
    _, plan = placed
    assert plan.outputs["podRanges"].value == {"gpu-0": "10.80.0.0/24", "gpu-1": "10.80.1.0/24"}
    assert plan.outputs["snatScript"].value == snat.snat_script(ipaddress.IPv4Network("10.77.0.0/16"))
    assert not plan.outputs["homelabConfig"].secret and not plan.outputs["snatScript"].secret


def test_no_shared_homelab_config_when_the_only_homelab_node_is_the_lighthouse(tmp_path_factory):
    """One homelab node, and it is the lighthouse: nothing shares a config (no LAN
    address is needed either: no other homelab node dials it). The endpoint is a
    global address: config refuses the documentation ranges."""
    plan = run(tmp_path_factory, {"hybrid-llm:lighthousePlacement": "homelab",
                                  "hybrid-llm:homelabNodes": '["talos-cp-1"]',
                                  "hybrid-llm:homelabLighthouseEndpoint": "93.184.216.34:4242"})
    assert plan.outputs["homelabConfig"].value is None
    own = yaml.safe_load(plan.outputs["configs"].value["talos-cp-1"])
    assert own["lighthouse"]["am_lighthouse"] is True and own["listen"]["port"] == 4242
    assert yaml.safe_load(plan.outputs["configs"].value["gpu-0"])["static_host_map"] == {
        "10.77.1.1": ["93.184.216.34:4242"]}
