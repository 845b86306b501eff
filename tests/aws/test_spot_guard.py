"""The spot guard: a spot worker's persistent request is cancelled before the
worker is destroyed, so `pulumi destroy` leaves no request that relaunches a GPU,
with the credentials of whoever runs the destroy."""

import boto3
import pytest
from moto import mock_aws

from components.aws import spot_guard

REGION = "us-east-1"
GUARD = "pulumi-python:dynamic:Resource"


# Every variable through which the environment can name credentials.
ENV_CREDENTIALS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
                   "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN",
                   "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")
# A profile recorded on a laptop, unknown on the machine running the destroy.
LAPTOP_PROFILE = "laptop-admin"


@pytest.fixture
def aws_files(tmp_path, monkeypatch):
    """This machine's shared config and credentials files: empty unless given."""
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no instance role to stumble on

    def write(config: str = "", credentials: str = "") -> None:
        (tmp_path / "config").write_text(config)
        (tmp_path / "credentials").write_text(credentials)
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "config"))
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))

    write()
    return write


@pytest.fixture
def ec2(monkeypatch, aws_files):
    for name in ENV_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        yield boto3.client("ec2", region_name=REGION)


def no_credentials_in_the_environment(monkeypatch):
    for name in ENV_CREDENTIALS:
        monkeypatch.delenv(name, raising=False)


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


HOMELAB_PROFILE = "[homelab]\naws_access_key_id = AKIAHOMELABPROFILE01\naws_secret_access_key = profile-secret\n"


@pytest.mark.parametrize("source", ["keys", "AWS_PROFILE", "web identity"])
def test_a_recorded_profile_missing_here_yields_to_the_environment(ec2, aws_files, monkeypatch, tmp_path, source):
    """A destroy from CI: the state names the laptop's profile, CI has OIDC or keys."""
    request, instance = persistent_spot(ec2)
    if source == "AWS_PROFILE":
        no_credentials_in_the_environment(monkeypatch)
        aws_files(credentials="[ci]\naws_access_key_id = AKIACIPROFILE0000001\naws_secret_access_key = s\n")
        monkeypatch.setenv("AWS_PROFILE", "ci")
    elif source == "web identity":  # what aws-actions/configure-aws-credentials can leave, or EKS IRSA
        no_credentials_in_the_environment(monkeypatch)
        (tmp_path / "token").write_text("eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl")
        monkeypatch.setenv("AWS_WEB_IDENTITY_TOKEN_FILE", str(tmp_path / "token"))
        monkeypatch.setenv("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/deploy")
    spot_guard._Provider().delete(f"spot-guard-{instance}",
                                  {"instance_id": instance, "region": REGION, "profile": LAPTOP_PROFILE})
    assert request not in live_requests(ec2)


def test_credentials_in_the_environment_win_over_the_recorded_profile(aws_files, monkeypatch):
    aws_files(credentials=HOMELAB_PROFILE)
    no_credentials_in_the_environment(monkeypatch)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVIRONMENT00001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret")
    assert spot_guard.deployer_session(REGION, "homelab").get_credentials().access_key == "AKIAENVIRONMENT00001"


@pytest.mark.parametrize("where", ["credentials", "config"])
def test_the_recorded_profile_is_used_where_it_exists_and_the_environment_has_none(
        ec2, aws_files, monkeypatch, where):
    request, instance = persistent_spot(ec2)
    if where == "credentials":
        aws_files(credentials=HOMELAB_PROFILE)
    else:
        aws_files(config=HOMELAB_PROFILE.replace("[homelab]", "[profile homelab]"))
    no_credentials_in_the_environment(monkeypatch)
    session = spot_guard.deployer_session(REGION, "homelab")
    assert session.get_credentials().access_key == "AKIAHOMELABPROFILE01"
    assert session.region_name == REGION
    spot_guard._Provider().delete(f"spot-guard-{instance}", {"instance_id": instance, "region": REGION,
                                                            "profile": "homelab"})
    assert request not in live_requests(ec2)


def test_with_no_credentials_anywhere_the_delete_fails_in_one_line(aws_files, monkeypatch):
    no_credentials_in_the_environment(monkeypatch)  # and no moto: it would lend its own
    with pytest.raises(spot_guard.SpotGuardError) as err:
        spot_guard._Provider().delete("x", {"instance_id": "i-0abc", "region": REGION, "profile": LAPTOP_PROFILE})
    message = str(err.value)
    assert "\n" not in message and "i-0abc" in message and "NoCredentialsError" in message


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
    plan = run_program({"hybrid-llm:gpuWorkers": "2"})
    instances = {r.urn: r for r in plan.of_type("aws:ec2/instance:Instance") if "gpu-" in r.name}
    found = guards(plan)
    assert len(found) == len(instances) == 2
    for guard in found:
        inputs = guard.plain()
        (instance,) = [i for i in instances.values() if i.id == inputs["instance_id"]]
        assert instance.urn in guard.dependencies
        # No profile recorded: the stack refuses `aws:profile` (tests/test_config.py);
        # a state from before still has one, used only where it exists (above).
        assert (inputs["region"], inputs.get("profile")) == (REGION, None)
    (provider,) = plan.of_type("pulumi:providers:aws")
    # Provider inputs are kept in the state and reused by `pulumi destroy`; a
    # profile there breaks a destroy wherever that profile does not exist.
    assert "profile" not in provider.plain(), "credentials come from the environment, not the state"


def test_on_demand_workers_need_no_guard(run_program):
    assert guards(run_program({"hybrid-llm:gpuSpot": "false"})) == []
