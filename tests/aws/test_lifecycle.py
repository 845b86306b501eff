"""The claims of docs/lifecycle.md that the program controls, checked on the mocked
program: replacement order, fields held against drift, delete order between the
spot guard, the volume attachment and the instance, and first-boot ordering.
A change that breaks one of them fails here, not on a real account."""

from __future__ import annotations

import pytest

from components.aws.gpu_worker import GPU_PRESENT_LABEL, PUBLIC_IP_FIELD, STOP_REASON_FIELD
from components.config import ConfigError
from tests.conftest import PLACEMENTS
from tools import harness
from tools.mocks import AwsMocks

INSTANCE = "aws:ec2/instance:Instance"
ATTACHMENT = "aws:ec2/volumeAttachment:VolumeAttachment"
GUARD = "pulumi-python:dynamic:Resource"
ASSOCIATION = "aws:ec2/routeTableAssociation:RouteTableAssociation"


def workers(plan):
    return [r for r in plan.of_type(INSTANCE) if r.plain().get("launchTemplate")]


def lighthouse(plan):
    return next(r for r in plan.of_type(INSTANCE) if not r.plain().get("launchTemplate"))


def worker_parts(plan, index=0):
    """(instance, attachment, guard or None) of worker gpu-<index>."""
    host = f"gpu-{index}"
    instance = next(r for r in workers(plan) if r.name.endswith(f"{host}-instance"))
    attachment = next(r for r in plan.of_type(ATTACHMENT) if r.name.endswith(f"{host}-models-attachment"))
    guards = [r for r in plan.of_type(GUARD) if r.name.endswith(f"{host}-spot-guard")]
    return instance, attachment, (guards[0] if guards else None)


def test_worker_replacement_deletes_first(dev_plan):
    """The model volume attaches to one instance at a time (VolumeInUse), and a
    second spot GPU would run outside the scaler meanwhile."""
    instance, attachment, _ = worker_parts(dev_plan)
    assert instance.delete_before_replace and attachment.delete_before_replace


def test_the_lighthouse_is_replaced_create_first(ec2_plan):
    """Its address is the stack's Elastic IP, so a new lighthouse can come up
    before the old goes: nothing forces delete-first there."""
    assert not lighthouse(ec2_plan).delete_before_replace


def test_a_stopped_workers_missing_public_ip_does_not_replace_it(dev_plan):
    instance, _, _ = worker_parts(dev_plan)
    assert instance.plain()["associatePublicIpAddress"] is True
    assert PUBLIC_IP_FIELD == "associatePublicIpAddress" and PUBLIC_IP_FIELD in instance.ignore_changes
    # The scaler's note on a stopped worker never shows as drift to strip.
    assert STOP_REASON_FIELD == 'tags["hybrid-llm:stop-reason"]' and STOP_REASON_FIELD in instance.ignore_changes


def test_delete_order_attachment_then_guard_then_instance(dev_plan):
    """Pulumi deletes dependents first. The attachment depends on the guard, the
    guard on the instance: detach (stopping the instance), then cancel the spot
    request (AWS terminates the stopped instance), then the instance."""
    instance, attachment, guard = worker_parts(dev_plan)
    assert guard is not None
    assert guard.urn in attachment.dependencies and instance.urn in attachment.dependencies
    assert instance.urn in guard.dependencies
    assert guard.plain()["instance_id"] == instance.id
    assert attachment.urn not in guard.dependencies, "no cycle"


def test_on_demand_workers_have_no_guard_and_keep_the_order(run_program):
    plan = run_program({"hybrid-llm:gpuSpot": "false"})
    instance, attachment, guard = worker_parts(plan)
    assert guard is None and instance.urn in attachment.dependencies
    assert instance.delete_before_replace and attachment.delete_before_replace


@pytest.mark.parametrize("count", [1, 3])
def test_every_worker_keeps_the_rules(run_program, count):
    plan = run_program({"hybrid-llm:gpuWorkers": str(count)})
    for index in range(count):
        instance, attachment, guard = worker_parts(plan, index)
        assert instance.delete_before_replace and PUBLIC_IP_FIELD in instance.ignore_changes
        assert guard.urn in attachment.dependencies


@pytest.mark.parametrize("plan_fixture", ["dev_plan", "ec2_plan"])
def test_instances_boot_after_the_internet_route(request, plan_fixture):
    """Without the route, a first boot's downloads fail before cloud-init retries."""
    plan = request.getfixturevalue(plan_fixture)
    association = plan.of_type(ASSOCIATION)[0]
    instances = plan.of_type(INSTANCE)
    assert len(instances) == (2 if plan_fixture == "ec2_plan" else 1), [r.name for r in instances]
    for instance in instances:
        assert association.urn in instance.dependencies, instance.name


def test_held_amis_still_held(dev_plan, ec2_plan):
    instance = lighthouse(ec2_plan)
    assert "ami" in instance.ignore_changes
    for plan in (dev_plan, ec2_plan):
        template = plan.of_type("aws:ec2/launchTemplate:LaunchTemplate")[0]
        assert "imageId" in template.ignore_changes


def _run_with(mocks: AwsMocks, overrides=None):
    return harness.run(harness.stack_config("dev", overrides), mocks=mocks)


def test_ami_lookups_name_owners_and_find_deprecated_amis():
    mocks = AwsMocks()
    _run_with(mocks)
    lookups = [a for token, a in mocks.invokes if token == "aws:ec2/getAmi:getAmi"]
    assert lookups and all(a.get("includeDeprecated") is True for a in lookups)
    assert all(a.get("owners") == ["amazon"] for a in lookups), "the public parameter's AMIs are Amazon's"
    mocks = AwsMocks()
    _run_with(mocks, {"hybrid-llm:gpuAmiId": "ami-0123456789abcdef0"})
    pinned = [a for token, a in mocks.invokes if token == "aws:ec2/getAmi:getAmi"
              and a["filters"][0]["values"] == ["ami-0123456789abcdef0"]]
    assert pinned and not pinned[0].get("owners"), "a pinned AMI may be the user's own"


def _root_ebs(plan) -> dict:
    (template,) = plan.of_type("aws:ec2/launchTemplate:LaunchTemplate")
    (root,) = template.plain()["blockDeviceMappings"]
    return root["ebs"]


def test_root_volume_smaller_than_the_ami_snapshot_fails_early():
    mocks = AwsMocks()
    mocks.ami_root_gib = 120
    with pytest.raises(ConfigError) as info:
        _run_with(mocks, {"hybrid-llm:gpuRootVolumeGiB": "100"})
    assert str(info.value).startswith("hybrid-llm:gpuRootVolumeGiB: 100 GiB is smaller than the root snapshot")
    assert "(120 GiB)" in str(info.value)
    mocks = AwsMocks()
    mocks.ami_root_gib = 120
    assert _root_ebs(_run_with(mocks, {"hybrid-llm:gpuRootVolumeGiB": "120"}))["volumeSize"] == 120


def test_the_default_root_volume_is_the_amis_own_snapshot_whatever_its_size():
    """gpuRootVolumeGiB 0 (the default) names no size: EC2 takes the snapshot's,
    so a larger snapshot is no error and a new AMI leaves the template alone."""
    templates = []
    for snapshot in (75, 120):
        mocks = AwsMocks()
        mocks.ami_root_gib = snapshot
        ebs = _root_ebs(_run_with(mocks))
        assert "volumeSize" not in ebs, ebs
        assert (ebs["volumeType"], ebs["encrypted"]) == ("gp3", "true")
        templates.append(ebs)
    assert templates[0] == templates[1]


def test_a_zone_that_does_not_offer_the_gpu_type_is_refused():
    mocks = AwsMocks()
    mocks.unoffered = {("g4dn.xlarge", "us-east-1b")}
    with pytest.raises(ConfigError) as info:
        _run_with(mocks)
    message = str(info.value)
    assert message.startswith("hybrid-llm:availabilityZone: us-east-1b does not offer g4dn.xlarge")
    assert "hybrid-llm:gpuInstanceType" in message and "us-east-1a" in message


@pytest.mark.parametrize("placement, zone", [("ec2", "us-east-1c"), ("workers", "us-east-1b"),
                                             ("homelab", "us-east-1b")])
def test_without_a_zone_the_first_that_offers_the_instance_types_is_taken(placement, zone):
    """With an EC2 lighthouse the zone must offer both types; without one, only
    gpuInstanceType counts (a zone lacking t4g.nano is fine)."""
    mocks = AwsMocks()
    mocks.unoffered = {("g4dn.xlarge", "us-east-1a"), ("t4g.nano", "us-east-1b")}
    plan = _run_with(mocks, {**PLACEMENTS[placement], "hybrid-llm:availabilityZone": ""})
    subnet = plan.of_type("aws:ec2/subnet:Subnet")[0]
    assert subnet.plain()["availabilityZone"] == zone
    volume = plan.of_type("aws:ebs/volume:Volume")[0]
    assert volume.plain()["availabilityZone"] == zone, "the model volume follows the subnet's zone"
    offerings = [a for token, a in mocks.invokes if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings"]
    asked = {t for a in offerings for f in a["filters"] for t in f["values"]}
    assert asked == ({"g4dn.xlarge", "t4g.nano"} if placement == "ec2" else {"g4dn.xlarge"})


def test_no_zone_offers_the_types():
    mocks = AwsMocks()
    mocks.unoffered = {("g4dn.xlarge", f"us-east-1{z}") for z in "abcdef"}
    with pytest.raises(ConfigError, match=r"^hybrid-llm:gpuInstanceType: no available zone offers"):
        _run_with(mocks, {"hybrid-llm:availabilityZone": ""})


def test_the_device_plugin_can_schedule_on_the_worker(dev_plan):
    """Chart 0.17.0's default affinity wants an NFD label or nvidia.com/gpu.present;
    k3s sets the latter on the node, so the plugin's DaemonSet has a node."""
    boot = dev_plan.file("workers/gpu-0/boot.sh").content
    assert f"--node-label={GPU_PRESENT_LABEL[0]}={GPU_PRESENT_LABEL[1]}" in boot
    assert GPU_PRESENT_LABEL == ("nvidia.com/gpu.present", "true")


@pytest.mark.parametrize("plan_fixture, path", [("ec2_plan", "lighthouse/boot.sh"),
                                                 ("dev_plan", "workers/gpu-0/boot.sh")])
def test_the_refresh_timer_never_fails_at_boot(request, plan_fixture, path):
    boot = request.getfixturevalue(plan_fixture).file(path).content
    unit = boot.split("hybrid-llm-nebula-refresh.service' <<'HYBRID_LLM_EOF'")[1]
    unit = unit[:unit.index("\nHYBRID_LLM_EOF")]
    assert "[Service]" in unit
    assert not [line for line in unit.splitlines() if line.startswith("Requisite=")]
    assert "ExecCondition=/bin/systemctl is-active --quiet nebula.service" in unit


def test_the_subnet_is_replaced_delete_first_and_a_chosen_zone_is_held(run_program):
    """The subnet keeps its CIDR, which cannot exist twice in the VPC; and a zone
    the program picked must not move when EC2's offerings change."""
    subnet = run_program({"hybrid-llm:availabilityZone": ""}).of_type("aws:ec2/subnet:Subnet")[0]
    assert subnet.delete_before_replace and "availabilityZone" in subnet.ignore_changes
    pinned = run_program().of_type("aws:ec2/subnet:Subnet")[0]
    assert pinned.delete_before_replace and "availabilityZone" not in pinned.ignore_changes
