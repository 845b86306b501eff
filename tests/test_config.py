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


def test_every_pulumi_yaml_key_is_typed_described_and_defaulted():
    """The CLI requires every declared key without a default in every stack, so
    each declared key has one; the undeclared ones are only the optional secrets."""
    declared = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    assert set(declared) == set(config_module.KEYS) - config_module.UNDECLARED_KEYS
    for key, spec in declared.items():
        assert spec.get("type") in {"string", "integer", "boolean", "array"}, key
        assert spec.get("description"), key
        assert "default" in spec, key
        assert not spec.get("secret"), key
    for key in config_module.UNDECLARED_KEYS:
        assert config_module.KEYS[key].secret
        assert key in (ROOT / "Pulumi.yaml").read_text(), f"{key} is documented in a comment"


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
    assert cfg.model_volume_gib == 24 and cfg.idle_minutes == 10
    assert cfg.gpu_root_volume_gib == 0, "0: the AMI's own snapshot size"
    assert cfg.lighthouse_placement == "workers" and cfg.lighthouse_node is None
    assert cfg.max_run_hours == 24 and cfg.scaler_schedule == "rate(1 minute)"
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
    key = "hybrid-llm:homelabKubeconfig"
    raw = harness.stack_config("dev", {key: "apiVersion: v1\nkind: Config\n", **HOMELAB_RANGES})
    cfg = parse(raw, project="hybrid-llm", stack="dev", secret_keys=frozenset({key}))
    from pulumi.runtime.sync_await import _sync_await
    assert _sync_await(cfg.homelab_kubeconfig.is_secret()) is True


HOMELAB_RANGES = {"hybrid-llm:homelabPodCidr": "10.244.0.0/16", "hybrid-llm:homelabServiceCidr": "10.96.0.0/12"}


@pytest.mark.parametrize("missing", sorted(HOMELAB_RANGES))
def test_homelab_ranges_are_needed_with_the_kubeconfig(missing):
    key = "hybrid-llm:homelabKubeconfig"
    given = {k: v for k, v in HOMELAB_RANGES.items() if k != missing}
    with pytest.raises(ConfigError) as info:
        parse(harness.stack_config("dev", {key: "x", **given}), project="hybrid-llm", stack="dev",
              secret_keys=frozenset({key}))
    assert str(info.value).startswith(f"{missing}: is needed with hybrid-llm:homelabKubeconfig")


def test_homelab_kubeconfig_set_in_plain_text_is_refused():
    key = "hybrid-llm:homelabKubeconfig"
    config = harness.stack_config("dev", {key: "apiVersion: v1\nkind: Config\n"})
    with pytest.raises(ConfigError) as info:
        harness.run(config, secret_keys=[])
    assert str(info.value).startswith(f"{key}:") and "--secret" in str(info.value)


def test_empty_homelab_kubeconfig_means_none():
    cfg = parse(harness.stack_config("dev", {"hybrid-llm:homelabKubeconfig": ""}), project="hybrid-llm",
                stack="dev")
    assert cfg.homelab_kubeconfig is None


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
    if key == "gpuRootVolumeGiB":                 # 0 is the AMI's own size; below it, say so
        if value == "0":
            assert _parse({f"hybrid-llm:{key}": value}).gpu_root_volume_gib == 0
            return
        message = _error(run_program, {f"hybrid-llm:{key}": value})
        assert message.startswith(f"hybrid-llm:{key}:") and "0 (the AMI's own size)" in message
        return
    message = _error(run_program, {f"hybrid-llm:{key}": value})
    assert message.startswith(f"hybrid-llm:{key}:") and "greater than 0" in message


# --- where the lighthouse lives ------------------------------------------------

HOMELAB = {"hybrid-llm:lighthousePlacement": "homelab",
           "hybrid-llm:homelabLighthouseEndpoint": "home.example.net:4242",
           "hybrid-llm:homelabLighthouseLanIp": "192.168.1.20"}


def test_homelab_placement_reads_its_keys():
    cfg = _parse(HOMELAB)
    assert cfg.lighthouse_placement == "homelab"
    assert cfg.lighthouse_node == cfg.homelab_nodes[0] == "talos-cp-1"
    assert cfg.homelab_lighthouse_endpoint == "home.example.net:4242"
    assert str(cfg.homelab_lighthouse_lan_ip) == "192.168.1.20"
    chosen = _parse({**HOMELAB, "hybrid-llm:homelabLighthouseNode": "talos-worker-1"})
    assert chosen.lighthouse_node == "talos-worker-1"
    assert _parse({**HOMELAB, "hybrid-llm:homelabLighthouseEndpoint": "81.2.69.142:443"}).homelab_lighthouse_endpoint


@pytest.mark.parametrize("overrides, key, words", [
    ({"hybrid-llm:lighthousePlacement": "cloud"}, "lighthousePlacement", "workers, ec2, homelab"),
    ({"hybrid-llm:homelabLighthouseEndpoint": "home.example.net:4242"}, "homelabLighthouseEndpoint",
     "lighthousePlacement is workers"),
    ({"hybrid-llm:lighthousePlacement": "ec2", "hybrid-llm:homelabLighthouseLanIp": "192.168.1.20"},
     "homelabLighthouseLanIp", "lighthousePlacement is ec2"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseEndpoint": ""}, "homelabLighthouseEndpoint", "router forwards"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseLanIp": ""}, "homelabLighthouseLanIp", "more than one homelab node"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseNode": "nas-1"}, "homelabLighthouseNode", "not one of"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseNode": "Nas_1"}, "homelabLighthouseNode", "DNS label"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseEndpoint": "home.example.net"}, "homelabLighthouseEndpoint",
     "host:port"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseEndpoint": "home.example.net:70000"}, "homelabLighthouseEndpoint",
     "host:port"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseEndpoint": "192.168.1.1:4242"}, "homelabLighthouseEndpoint",
     "not a public address"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseEndpoint": "100.72.4.1:4242"}, "homelabLighthouseEndpoint",
     "carrier-grade NAT"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseEndpoint": "[2001:db8::1]:4242"}, "homelabLighthouseEndpoint",
     "neither an IPv4 address nor a DNS name"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseEndpoint": "home_router:4242"}, "homelabLighthouseEndpoint",
     "neither an IPv4 address nor a DNS name"),
    ({**HOMELAB, "hybrid-llm:homelabLighthouseLanIp": "192.168.1"}, "homelabLighthouseLanIp", "IPv4 address"),
])
def test_placement_mistakes_are_one_line_naming_the_key(run_program, overrides, key, words):
    message = _error(run_program, overrides)
    assert message.startswith(f"hybrid-llm:{key}:") and words in message, message


def test_one_homelab_node_needs_no_lan_address():
    cfg = _parse({**HOMELAB, "hybrid-llm:homelabNodes": '["nas-1"]', "hybrid-llm:homelabLighthouseLanIp": ""})
    assert cfg.lighthouse_node == "nas-1" and cfg.homelab_lighthouse_lan_ip is None


def test_max_run_hours_zero_turns_the_backstop_off(run_program):
    assert _parse({"hybrid-llm:maxRunHours": "0"}).max_run_hours == 0
    message = _error(run_program, {"hybrid-llm:maxRunHours": "-1"})
    assert message.startswith("hybrid-llm:maxRunHours:") and "0 (off)" in message


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


# --- what AWS or the Pulumi CLI would refuse at `up` is refused offline first ----


@pytest.mark.parametrize("schedule,hint", [
    ("rate(0 minutes)", "at least 1"),
    ("rate(1 minutes)", "rate(1 minute)"),
    ("rate(5 minute)", "rate(5 minutes)"),
    ("rate(2 hour)", "rate(2 hours)"),
    ("rate(1 second)", "EventBridge schedule"),
    ("cron(0 * * * *)", "six fields"),
    ("cron(0 10 * * MON *)", "?"),
    ("cron(0 10 * * ? * *)", "six fields"),
    ("cron(0 10 * * ? $)", "six fields"),
])
def test_schedules_eventbridge_refuses(run_program, schedule, hint):
    message = _error(run_program, {"hybrid-llm:scalerSchedule": schedule})
    assert message.startswith("hybrid-llm:scalerSchedule:") and hint in message


@pytest.mark.parametrize("schedule", ["rate(1 minute)", "rate(5 minutes)", "rate(1 hour)", "rate(2 days)",
                                      "cron(0/5 * * * ? *)", "cron(0 10 ? * MON-FRI *)"])
def test_schedules_eventbridge_accepts(schedule):
    assert _parse({"hybrid-llm:scalerSchedule": schedule}).scaler_schedule == schedule


def test_zero_rate_never_reaches_the_cost_estimate(run_program):
    """`rate(0 minutes)` once divided by zero in the bill (a traceback in preview)."""
    _error(run_program, {"hybrid-llm:scalerSchedule": "rate(0 minutes)"})
    from components import costs
    with pytest.raises(costs.UnpricedError):
        costs.runs_per_month("cron(0/0 * * * ? *)")


@pytest.mark.parametrize("zone", ["us-west-2a", "us-east-1", "us-east-1ab", "eu-west-1a"])
def test_availability_zone_outside_the_region(run_program, zone):
    message = _error(run_program, {"hybrid-llm:availabilityZone": zone})
    assert message.startswith("hybrid-llm:availabilityZone:")


@pytest.mark.parametrize("key", ["gpuRootVolumeGiB", "modelVolumeGiB"])
def test_volume_larger_than_gp3_allows(run_program, key):
    message = _error(run_program, {f"hybrid-llm:{key}": str(config_module.GP3_MAX_GIB + 1)})
    assert message.startswith(f"hybrid-llm:{key}:") and "gp3" in message
    assert _parse({f"hybrid-llm:{key}": str(config_module.GP3_MAX_GIB)})


@pytest.mark.parametrize("key,value", [("gpuInstanceType", "g4dn.huge"), ("gpuInstanceType", "g5.metal"),
                                       ("lighthouseInstanceType", "t4g.4xlarge"), ("lighthouseInstanceType", "c5.large2")])
def test_size_a_family_does_not_have(run_program, key, value):
    message = _error(run_program, {f"hybrid-llm:{key}": value})
    assert message.startswith(f"hybrid-llm:{key}:") and "size" in message


def test_gpu_family_the_deep_learning_ami_dropped(run_program):
    message = _error(run_program, {"hybrid-llm:gpuInstanceType": "p3.2xlarge"})
    assert message.startswith("hybrid-llm:gpuInstanceType:") and "Deep Learning AMI" in message


@pytest.mark.parametrize("cidr,kind", [("169.254.0.0/16", "link-local"), ("127.0.0.0/16", "loopback"),
                                       ("224.0.0.0/16", "multicast"), ("240.0.0.0/16", "reserved"),
                                       ("0.0.0.0/16", "0.0.0.0/8")])
def test_ranges_in_special_use_space(run_program, cidr, kind):
    message = _error(run_program, {"hybrid-llm:nebulaCidr": cidr})
    assert message.startswith("hybrid-llm:nebulaCidr:") and kind in message


def test_misspelt_namespace_is_not_ignored(run_program):
    message = _error(run_program, {"hybridllm:gpuWorkers": "2"})
    assert message.startswith("hybridllm:gpuWorkers: unknown namespace") and "hybrid-llm:gpuWorkers" in message


def test_misspelt_aws_key_is_not_ignored(run_program):
    message = _error(run_program, {"aws:regoin": "eu-west-1"})
    assert message.startswith("aws:regoin: not used") and "aws:region" in message


def test_aws_key_the_explicit_provider_never_sees_is_refused(run_program):
    """An explicit provider does not read the stack's aws: settings; silently
    dropping aws:assumeRoles would deploy with the wrong identity."""
    message = _error(run_program, {"aws:assumeRoles": '[{"roleArn": "arn:aws:iam::123456789012:role/x"}]'})
    assert message.startswith("aws:assumeRoles: not used")


def test_allowed_account_ids_reach_the_provider(run_program):
    plan = run_program({"aws:allowedAccountIds": '["123456789012"]'})
    provider = plan.of_type("pulumi:providers:aws")[0]
    # Provider inputs travel as JSON strings.
    assert json.loads(provider.plain()["allowedAccountIds"]) == ["123456789012"]
    assert _error(run_program, {"aws:allowedAccountIds": '["12345"]'}).startswith("aws:allowedAccountIds:")


def test_pulumi_namespace_keys_are_allowed():
    assert _parse({"pulumi:disable-default-providers": '["*"]'})


@pytest.mark.parametrize("model", ["hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "qwen2.5-coder:7b",
                                   "library/llama3.2", "registry.example.org:5000/team/model:v1"])
def test_ollama_model_names_are_accepted(model):
    assert _parse({"hybrid-llm:models": json.dumps([model])}).models == (model,)


@pytest.mark.parametrize("model", ["llama3 2", "-x", "a::b", "hf.co//x", ""])
def test_malformed_model_names_are_refused(run_program, model):
    assert _error(run_program, {"hybrid-llm:models": json.dumps([model])}).startswith("hybrid-llm:models:")


def test_aws_profile_is_refused_with_what_to_do_instead(run_program):
    """A profile in the provider's state breaks `pulumi destroy` wherever it does
    not exist; credentials come from the environment of whoever runs Pulumi."""
    message = _error(run_program, {"aws:profile": "homelab"})
    assert message.startswith("aws:profile:") and "export AWS_PROFILE=" in message
