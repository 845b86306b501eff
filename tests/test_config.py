"""Typed configuration: defaults, parsing, and one test per validation rule.

Every rule is exercised through the whole program (`run_program`), so the test
also proves the error comes before any resource is declared."""

from __future__ import annotations

import ipaddress
import json

import pytest
import yaml

from components import config as config_module
from components.config import ConfigError, parse
from tests.conftest import ROOT
from tools import harness


def _error(run_program, overrides: dict) -> str:
    with pytest.raises(ConfigError) as info:
        run_program(overrides)
    message = str(info.value)
    assert "\n" not in message, "a config error is one line"
    return message


def _parse(overrides: dict):
    return parse(harness.stack_config("dev", overrides), project="hybrid-llm", stack="dev")


# --- the schema: Pulumi.yaml and the typed object agree ------------------------


def test_every_pulumi_yaml_key_is_typed_and_described():
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert set(declared) == set(config_module.KEYS)
    for key, spec in declared.items():
        assert spec.get("type") in {"string", "integer", "boolean", "array"}, key
        assert spec.get("description"), key
        assert "default" in spec or key in config_module.OPTIONAL_KEYS, key


def test_pulumi_yaml_runtime_uses_pip_and_venv():
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    assert project["name"] == "hybrid-llm"
    assert project["runtime"] == {"name": "python", "options": {"toolchain": "pip", "virtualenv": "venv"}}


def test_defaults_give_the_documented_values():
    cfg = parse(harness.project_defaults() | {"aws:region": "eu-west-1"}, project="hybrid-llm", stack="prod")
    assert cfg.vpc_cidr == ipaddress.ip_network("10.0.0.0/16")
    assert cfg.nebula_cidr == ipaddress.ip_network("10.42.0.0/16")
    assert cfg.nebula_port == 4242
    assert cfg.availability_zone is None
    assert (cfg.lighthouse_instance_type, cfg.gpu_instance_type) == ("t4g.nano", "g4dn.xlarge")
    assert cfg.gpu_spot is True and cfg.gpu_workers == 1
    assert cfg.model_volume_gib == 100 and cfg.idle_minutes == 15
    assert len(cfg.models) == 1
    assert cfg.homelab_kubeconfig is None
    assert cfg.homelab_pod_cidr is None and cfg.homelab_service_cidr is None
    assert cfg.gpu_cluster_pod_cidr == ipaddress.ip_network("10.52.0.0/16")
    assert cfg.gpu_cluster_service_cidr == ipaddress.ip_network("10.53.0.0/16")
    assert cfg.region == "eu-west-1"


def test_gpu_cluster_ranges_never_default_to_k3s_own():
    """k3s's defaults collide with the usual Nebula range; the program always sets them."""
    cfg = _parse({})
    k3s_pods, k3s_services = ipaddress.ip_network("10.42.0.0/16"), ipaddress.ip_network("10.43.0.0/16")
    assert cfg.gpu_cluster_pod_cidr not in (k3s_pods, k3s_services)
    assert cfg.gpu_cluster_service_cidr not in (k3s_pods, k3s_services)
    assert not cfg.gpu_cluster_pod_cidr.overlaps(cfg.nebula_cidr)


def test_dev_stack_values_are_read():
    cfg = _parse({})
    assert cfg.availability_zone == "us-east-1b"
    assert cfg.idle_minutes == 10
    assert cfg.homelab_nodes == ("talos-cp-1", "talos-worker-1")


def test_config_object_is_frozen():
    cfg = _parse({})
    with pytest.raises(AttributeError):
        cfg.gpu_workers = 5  # type: ignore[misc]


def test_arrays_are_json_like_pulumi_config_set():
    cfg = _parse({"hybrid-llm:models": json.dumps(["qwen2.5:7b", "llama3.1:8b"])})
    assert cfg.models == ("qwen2.5:7b", "llama3.1:8b")


def test_homelab_kubeconfig_is_a_secret(run_program):
    cfg = _parse({"hybrid-llm:homelabKubeconfig": "apiVersion: v1\nkind: Config\n"})
    from pulumi.runtime.sync_await import _sync_await
    assert _sync_await(cfg.homelab_kubeconfig.is_secret()) is True


# --- one test per validation rule -----------------------------------------------


@pytest.mark.parametrize("key", ["vpcCidr", "nebulaCidr", "gpuClusterPodCidr", "gpuClusterServiceCidr",
                                 "homelabPodCidr", "homelabServiceCidr"])
def test_malformed_cidr_names_the_key(run_program, key):
    message = _error(run_program, {f"hybrid-llm:{key}": "10.300.0.0/16"})
    assert message.startswith(f"hybrid-llm:{key}:")
    assert "CIDR" in message


def test_cidr_with_host_bits_is_rejected(run_program):
    message = _error(run_program, {"hybrid-llm:nebulaCidr": "10.42.0.1/16"})
    assert message.startswith("hybrid-llm:nebulaCidr:")


@pytest.mark.parametrize("key,value,other", [
    ("nebulaCidr", "10.0.0.0/16", "vpcCidr"),
    ("gpuClusterPodCidr", "10.42.128.0/17", "nebulaCidr"),
    ("gpuClusterServiceCidr", "10.52.0.0/24", "gpuClusterPodCidr"),
    ("homelabPodCidr", "10.0.4.0/22", "vpcCidr"),
    ("homelabServiceCidr", "10.53.1.0/24", "gpuClusterServiceCidr"),
])
def test_overlapping_ranges_name_both_keys(run_program, key, value, other):
    message = _error(run_program, {f"hybrid-llm:{key}": value})
    assert f"hybrid-llm:{key}" in message and f"hybrid-llm:{other}" in message
    assert "overlaps" in message


def test_k3s_default_pod_range_with_default_nebula_is_an_overlap(run_program):
    message = _error(run_program, {"hybrid-llm:gpuClusterPodCidr": "10.42.0.0/16"})
    assert "hybrid-llm:gpuClusterPodCidr" in message and "hybrid-llm:nebulaCidr" in message


def test_homelab_ranges_that_do_not_overlap_are_accepted():
    cfg = _parse({"hybrid-llm:homelabPodCidr": "10.244.0.0/16", "hybrid-llm:homelabServiceCidr": "10.96.0.0/12"})
    assert cfg.homelab_pod_cidr == ipaddress.ip_network("10.244.0.0/16")


def test_worker_type_without_nvidia_gpu(run_program):
    message = _error(run_program, {"hybrid-llm:gpuInstanceType": "t3.micro"})
    assert message.startswith("hybrid-llm:gpuInstanceType:") and "NVIDIA" in message


def test_worker_type_with_amd_gpu(run_program):
    message = _error(run_program, {"hybrid-llm:gpuInstanceType": "g4ad.xlarge"})
    assert message.startswith("hybrid-llm:gpuInstanceType:") and "NVIDIA" in message


def test_worker_type_arm64_nvidia_has_no_deep_learning_ami(run_program):
    message = _error(run_program, {"hybrid-llm:gpuInstanceType": "g5g.xlarge"})
    assert message.startswith("hybrid-llm:gpuInstanceType:") and "arm64" in message


@pytest.mark.parametrize("key", ["gpuInstanceType", "lighthouseInstanceType"])
def test_unknown_instance_family(run_program, key):
    message = _error(run_program, {f"hybrid-llm:{key}": "zz9.large"})
    assert message.startswith(f"hybrid-llm:{key}:") and "unknown instance family 'zz9'" in message


def test_malformed_instance_type(run_program):
    message = _error(run_program, {"hybrid-llm:lighthouseInstanceType": "nano"})
    assert message.startswith("hybrid-llm:lighthouseInstanceType:")


@pytest.mark.parametrize("key", ["gpuWorkers", "modelVolumeGiB", "idleMinutes", "gpuRootVolumeGiB",
                                 "nebulaPort", "nebulaCertValidityHours"])
@pytest.mark.parametrize("value", ["0", "-3"])
def test_non_positive_sizes_counts_and_timeouts(run_program, key, value):
    message = _error(run_program, {f"hybrid-llm:{key}": value})
    assert message.startswith(f"hybrid-llm:{key}:") and "greater than 0" in message


def test_non_numeric_integer(run_program):
    message = _error(run_program, {"hybrid-llm:idleMinutes": "ten"})
    assert message.startswith("hybrid-llm:idleMinutes:") and "'ten'" in message


def test_port_out_of_range(run_program):
    message = _error(run_program, {"hybrid-llm:nebulaPort": "70000"})
    assert message.startswith("hybrid-llm:nebulaPort:")


def test_more_workers_than_the_mesh_can_address(run_program):
    message = _error(run_program, {"hybrid-llm:nebulaCidr": "10.42.0.0/24", "hybrid-llm:gpuWorkers": "70"})
    assert message.startswith("hybrid-llm:gpuWorkers:") and "10.42.0.128/26" in message


def test_workers_up_to_the_mesh_capacity_fit():
    cfg = _parse({"hybrid-llm:nebulaCidr": "10.42.0.0/24", "hybrid-llm:gpuWorkers": "62"})
    assert cfg.mesh.gpu_worker(61) == ipaddress.ip_address("10.42.0.190")


def test_more_homelab_nodes_than_the_mesh_can_address(run_program):
    nodes = json.dumps([f"node-{i}" for i in range(3)])
    message = _error(run_program, {"hybrid-llm:nebulaCidr": "10.42.0.0/28", "hybrid-llm:homelabNodes": nodes})
    assert message.startswith("hybrid-llm:homelabNodes:")


def test_unknown_key_is_not_ignored(run_program):
    message = _error(run_program, {"hybrid-llm:idleMinute": "5"})
    assert message.startswith("hybrid-llm:idleMinute: unknown key")
    assert "hybrid-llm:idleMinutes" in message


def test_region_is_required():
    raw = harness.stack_config("dev")
    raw.pop("aws:region")
    with pytest.raises(ConfigError, match=r"^aws:region: not set"):
        parse(raw, project="hybrid-llm", stack="dev")


def test_bad_boolean(run_program):
    message = _error(run_program, {"hybrid-llm:gpuSpot": "yes"})
    assert message.startswith("hybrid-llm:gpuSpot:")


def test_bad_availability_zone(run_program):
    message = _error(run_program, {"hybrid-llm:availabilityZone": "us-east-1"})
    assert message.startswith("hybrid-llm:availabilityZone:")


def test_homelab_node_names_are_unique_dns_labels(run_program):
    assert _error(run_program, {"hybrid-llm:homelabNodes": '["a", "a"]'}).startswith("hybrid-llm:homelabNodes:")
    assert "DNS label" in _error(run_program, {"hybrid-llm:homelabNodes": '["Talos_1"]'})
    assert "reserved" in _error(run_program, {"hybrid-llm:homelabNodes": '["gpu-0"]'})


def test_certificate_lifetimes_are_ordered(run_program):
    message = _error(run_program, {"hybrid-llm:nebulaCertValidityHours": "20000"})
    assert message.startswith("hybrid-llm:nebulaCertValidityHours:") and "nebulaCaValidityHours" in message
    message = _error(run_program, {"hybrid-llm:nebulaEarlyRenewalHours": "9000"})
    assert message.startswith("hybrid-llm:nebulaEarlyRenewalHours:")


def test_vpc_size_limits(run_program):
    message = _error(run_program, {"hybrid-llm:vpcCidr": "10.0.0.0/8"})
    assert message.startswith("hybrid-llm:vpcCidr:") and "/16 to /28" in message


def test_spot_price_needs_spot(run_program):
    message = _error(run_program, {"hybrid-llm:gpuSpot": "false", "hybrid-llm:gpuSpotMaxPrice": "0.3"})
    assert message.startswith("hybrid-llm:gpuSpotMaxPrice:")


@pytest.mark.parametrize("gpu_type", ["g4dn.xlarge", "g5.xlarge", "p5.48xlarge"])
def test_hibernation_is_refused_for_gpu_families(run_program, gpu_type):
    message = _error(run_program, {"hybrid-llm:gpuHibernate": "true", "hybrid-llm:gpuInstanceType": gpu_type})
    assert message.startswith("hybrid-llm:gpuHibernate:") and gpu_type in message


def test_bad_models_and_schedule_and_budget(run_program):
    assert _error(run_program, {"hybrid-llm:models": '"llama3"'}).startswith("hybrid-llm:models:")
    assert _error(run_program, {"hybrid-llm:scalerSchedule": "every minute"}).startswith("hybrid-llm:scalerSchedule:")
    assert _error(run_program, {"hybrid-llm:budgetMonthlyUsd": "20"}).startswith("hybrid-llm:budgetMonthlyUsd:")
    assert _error(run_program, {"hybrid-llm:budgetEmails": '["ops@example.org"]'}).startswith("hybrid-llm:budgetEmails:")


def test_invalid_config_declares_no_resource():
    """Validation runs before the first resource: nothing half-made."""
    config = harness.stack_config("dev", {"hybrid-llm:gpuWorkers": "0"})
    monitor_resources = []
    with pytest.raises(ConfigError):
        try:
            harness.run(config)
        finally:
            from pulumi.runtime import settings
            monitor_resources = list(settings.get_monitor().resources)
    assert monitor_resources == []
