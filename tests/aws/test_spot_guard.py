"""The spot guard: a spot worker's persistent request is cancelled before the
worker is destroyed, so `pulumi destroy` leaves no request that relaunches a GPU."""

import boto3
import pytest
from moto import mock_aws

from components.aws import spot_guard

REGION = "us-east-1"
GUARD = "pulumi-python:dynamic:Resource"


@pytest.fixture
def ec2(monkeypatch):
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def persistent_spot(ec2) -> tuple[str, str]:
    """(request id, instance id) of a fulfilled persistent request."""
    ec2.request_spot_instances(Type="persistent", InstanceCount=1, LaunchSpecification={
        "ImageId": "ami-12c6146b", "InstanceType": "g4dn.xlarge"})
    requests = ec2.describe_spot_instance_requests()["SpotInstanceRequests"]
    newest = requests[-1]
    return newest["SpotInstanceRequestId"], newest["InstanceId"]


def live_requests(ec2) -> set[str]:
    found = ec2.describe_spot_instance_requests(
        Filters=[{"Name": "state", "Values": ["open", "active", "disabled"]}])["SpotInstanceRequests"]
    return {r["SpotInstanceRequestId"] for r in found}


def test_cancels_only_the_request_of_that_instance(ec2):
    mine, instance = persistent_spot(ec2)
    other, _ = persistent_spot(ec2)
    assert spot_guard.cancel_requests(ec2, instance) == [mine]
    assert live_requests(ec2) == {other}
    assert ec2.describe_instances(InstanceIds=[instance])["Reservations"], "the instance itself is left to Pulumi"


def test_an_instance_without_a_request_is_a_no_op(ec2):
    other, _ = persistent_spot(ec2)
    assert spot_guard.cancel_requests(ec2, "i-0123456789abcdef0") == []
    assert live_requests(ec2) == {other}


def test_provider_delete_cancels_through_boto3(ec2):
    request, instance = persistent_spot(ec2)
    spot_guard._Provider().delete(f"spot-guard-{instance}", {"instance_id": instance, "region": REGION, "profile": None})
    assert request not in live_requests(ec2)


def test_provider_delete_failure_is_one_line_naming_the_instance(monkeypatch):
    class Refusing:
        def describe_spot_instance_requests(self, **_):
            from botocore.exceptions import ClientError
            raise ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "not allowed"}},
                              "DescribeSpotInstanceRequests")

    monkeypatch.setattr(spot_guard, "_ec2", lambda region, profile: Refusing())
    with pytest.raises(spot_guard.SpotGuardError) as err:
        spot_guard._Provider().delete("x", {"instance_id": "i-0abc", "region": REGION})
    message = str(err.value)
    assert "\n" not in message and "i-0abc" in message and "UnauthorizedOperation" in message


def test_creating_calls_no_aws_api_and_a_new_instance_replaces_the_guard(monkeypatch):
    monkeypatch.setattr(spot_guard, "_ec2", lambda *a: pytest.fail("create must not call AWS"))
    provider = spot_guard._Provider()
    props = {"instance_id": "i-0abc", "region": REGION, "profile": None}
    assert provider.create(props).id == "spot-guard-i-0abc"
    assert provider.diff("x", props, dict(props)).changes is False
    replaced = provider.diff("x", props, {**props, "instance_id": "i-0def"})
    assert replaced.changes and replaced.replaces == ["instance_id"]
    profile = provider.diff("x", props, {**props, "profile": "homelab"})
    assert profile.changes and not profile.replaces


def guards(plan):
    return [r for r in plan.of_type(GUARD) if r.name.endswith("-spot-guard")]


def test_every_spot_worker_has_a_guard_that_depends_on_its_instance(run_program):
    plan = run_program({"hybrid-llm:gpuWorkers": "2", "aws:profile": "homelab"})
    instances = {r.urn: r for r in plan.of_type("aws:ec2/instance:Instance") if "gpu-" in r.name}
    found = guards(plan)
    assert len(found) == len(instances) == 2
    for guard in found:
        inputs = guard.plain()
        (instance,) = [i for i in instances.values() if i.id == inputs["instance_id"]]
        assert instance.urn in guard.dependencies
        assert (inputs["region"], inputs["profile"]) == (REGION, "homelab")
    (provider,) = plan.of_type("pulumi:providers:aws")
    assert provider.plain()["profile"] == "homelab", "the explicit provider ignores aws:profile unless given it"


def test_on_demand_workers_need_no_guard(run_program):
    assert guards(run_program({"hybrid-llm:gpuSpot": "false"})) == []
