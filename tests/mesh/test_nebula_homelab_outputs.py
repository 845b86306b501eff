"""What NebulaMesh hands the homelab side: one config for every node (a ConfigMap),
the SNAT script, the pod ranges, and the per-node files (a Secret per node). The
component alone under mocks, with the stack's own config and inventory."""

from __future__ import annotations

import ipaddress
import textwrap

import pytest
import yaml

from components.mesh import snat
from tools import harness

PROGRAM = textwrap.dedent("""
    import pulumi
    from components import inventory
    from components.config import load_config
    from components.mesh.nebula import NebulaMesh, NebulaMeshArgs

    cfg = load_config()
    hosts = inventory.hosts(cfg)
    mesh = NebulaMesh("mesh", NebulaMeshArgs(
        hosts=hosts, network=cfg.nebula_cidr, port=cfg.nebula_port, lighthouse_public_ip="198.51.100.7",
        ssm_prefixes={h.name: inventory.ssm_prefix(cfg, h) for h in hosts if h.on_aws},
        ca_validity_hours=100, cert_validity_hours=10, early_renewal_hours=1))
    pulumi.export("homelabConfig", mesh.homelab_config_yaml)
    pulumi.export("snatScript", mesh.homelab_snat_script)
    pulumi.export("podRanges", mesh.pod_ranges)
    pulumi.export("overlayIps", mesh.overlay_ips)
    pulumi.export("configs", {name: f.config_yaml for name, f in mesh.host_files.items()})
""")


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    program = tmp_path_factory.mktemp("mesh") / "program.py"
    program.write_text(PROGRAM)
    config = harness.stack_config("dev", {"hybrid-llm:gpuWorkers": "2", "hybrid-llm:nebulaCidr": "10.77.0.0/16",
                                          "hybrid-llm:gpuClusterPodCidr": "10.80.0.0/16"})
    return harness.run(config, program=program)


def test_every_homelab_node_runs_the_one_homelab_config(plan):
    configs = plan.outputs["configs"].value
    text = plan.outputs["homelabConfig"].value
    assert configs["talos-cp-1"] == configs["talos-worker-1"] == text
    assert configs["gpu-0"] != text and configs["lighthouse"] != text


def test_homelab_config_routes_both_pod_ranges_via_their_workers(plan):
    ips = plan.outputs["overlayIps"].value
    config = yaml.safe_load(plan.outputs["homelabConfig"].value)
    assert config["tun"]["unsafe_routes"] == [{"route": "10.80.0.0/24", "via": ips["gpu-0"]},
                                              {"route": "10.80.1.0/24", "via": ips["gpu-1"]}]
    assert config["static_host_map"] == {ips["lighthouse"]: ["198.51.100.7:4242"]}
    assert config["listen"]["port"] == 0
    assert config["firewall"]["inbound"] == [{"port": "any", "proto": "icmp", "host": "any"}]


def test_pod_ranges_and_snat_script_for_the_stack(plan):
    assert plan.outputs["podRanges"].value == {"gpu-0": "10.80.0.0/24", "gpu-1": "10.80.1.0/24"}
    assert plan.outputs["snatScript"].value == snat.snat_script(ipaddress.IPv4Network("10.77.0.0/16"))
    assert not plan.outputs["homelabConfig"].secret and not plan.outputs["snatScript"].secret
