"""The teardown wake (components/teardown_wake.py): on `pulumi destroy` it holds
its worker against the scaler and starts it if stopped (moto), or, when the worker
cannot run, marks its Liqo peer as gone (a recording stand-in for the Kubernetes
API); it never replaces, and so never runs, on a worker replacement."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from botocore.exceptions import ClientError

from components import teardown_wake
from components.teardown_wake import UNREACHABLE_ANNOTATION
from scaler_lambda import handler as scaler
from tests.aws.test_spot_guard import aws_files, ec2  # noqa: F401 - fixtures: moto EC2, the environment's keys only
from tests.homelab.conftest import api_port  # noqa: F401 - fixture

REGION = "us-east-1"
CLUSTER = "hybrid-llm-dev-gpu-0"
TENANT = "liqo-tenant-hybrid-llm-dev-gpu-0"
SLICE = "hybrid-llm-dev-gpu-0"


@pytest.fixture(autouse=True)
def quick(monkeypatch):
    monkeypatch.setattr(teardown_wake, "_POLL", 0.01)


def worker(ec2, state: str = "stopped") -> str:
    (instance,) = ec2.run_instances(ImageId="ami-12c6146b", InstanceType="g4dn.xlarge",
                                    MinCount=1, MaxCount=1)["Instances"]
    if state == "stopped":
        ec2.stop_instances(InstanceIds=[instance["InstanceId"]])
    elif state == "terminated":
        ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    return instance["InstanceId"]


def hold(ec2, instance_id: str):
    tags = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0].get("Tags", [])
    return {t["Key"]: t["Value"] for t in tags}.get(scaler.TEARDOWN_HOLD_TAG)


def state(ec2, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


class KubeStandIn:
    """Records what the wake asks of the homelab's API; the ResourceSlice is gone
    after `gone_after` reads."""

    def __init__(self, gone_after: int = 1, foreign_cluster: bool = True):
        self.calls: list[tuple] = []
        self.reads_left = gone_after
        self.foreign_cluster = foreign_cluster

    @staticmethod
    def _missing():
        err = Exception("Not Found")
        err.status = 404
        return err

    def patch_cluster_custom_object(self, group, version, plural, name, body):
        self.calls.append(("patch", group, plural, name, body))
        if not self.foreign_cluster:
            raise self._missing()

    def delete_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("delete", group, plural, namespace, name))

    def get_namespaced_custom_object(self, group, version, namespace, plural, name):
        self.calls.append(("get", plural, name))
        if self.reads_left <= 0:
            raise self._missing()
        self.reads_left -= 1
        return {}


def props(instance_id: str) -> dict:
    return {"instance_id": instance_id, "region": REGION,
            "kubeconfig": "apiVersion: v1\nkind: Config\n", "cluster_id": CLUSTER,
            "tenant_namespace": TENANT, "resource_slice": SLICE}


def test_delete_holds_the_worker_against_the_scaler_and_starts_it(ec2, monkeypatch):
    instance_id, other = worker(ec2), worker(ec2, "running")
    monkeypatch.setattr(teardown_wake, "_homelab_api", lambda _k: pytest.fail("a worker that runs needs no unpeer"))
    before = datetime.now(timezone.utc)
    teardown_wake._Provider().delete("id", props(instance_id))
    assert state(ec2, instance_id) == "running"
    until = datetime.strptime(hold(ec2, instance_id), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    assert before + timedelta(minutes=teardown_wake.TEARDOWN_HOLD_MINUTES - 1) < until
    assert hold(ec2, other) is None, "the other workers stay under the scaler's rules"
    # The scaler honours it: held now, not after the hold.
    instance = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    assert scaler.held_for_teardown(instance, before) == hold(ec2, instance_id)
    assert scaler.held_for_teardown(instance, until + timedelta(seconds=1)) is None


def test_a_running_worker_is_left_running(ec2):
    instance_id = worker(ec2, "running")
    teardown_wake._Provider().delete("id", {**props(instance_id), "kubeconfig": "unused"})
    assert state(ec2, instance_id) == "running"


def test_an_aws_error_that_is_not_about_the_worker_is_reported_not_taken_for_a_dead_peer(ec2, monkeypatch):
    instance_id = worker(ec2)
    monkeypatch.setattr(teardown_wake, "_homelab_api", lambda _k: pytest.fail("the peer is not dead"))
    real = teardown_wake.deployer_session

    class Throttled:
        def client(self, name):
            made = real(REGION, None).client(name)

            def start_instances(**_):
                raise ClientError({"Error": {"Code": "RequestLimitExceeded", "Message": "slow down"}},
                                  "StartInstances")
            made.start_instances = start_instances
            return made

    monkeypatch.setattr(teardown_wake, "deployer_session", lambda region, profile: Throttled())
    with pytest.raises(teardown_wake.TeardownError) as err:
        teardown_wake._Provider().delete("id", props(instance_id))
    assert "RequestLimitExceeded" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("how", ["terminated", "missing", "refused"])
def test_a_worker_that_cannot_run_has_its_peer_marked_gone(ec2, monkeypatch, how):
    instance_id = worker(ec2, "terminated" if how == "terminated" else "stopped")
    if how == "missing":
        instance_id = "i-0123456789abcdef0"
    kube = KubeStandIn(gone_after=2)
    monkeypatch.setattr(teardown_wake, "_homelab_api", lambda _k: kube)
    real_client = teardown_wake.deployer_session

    def session(region, profile):
        made = real_client(region, profile)
        if how != "refused":
            return made

        class Refusing:
            def client(self, name):
                real = made.client(name)
                if name != "ec2":
                    return real

                def start_instances(**_):   # EC2's answer for a spot instance stopped by an interruption
                    raise ClientError({"Error": {"Code": "IncorrectSpotRequestState", "Message": "x"}},
                                      "StartInstances")
                real.start_instances = start_instances
                return real
        return Refusing()

    monkeypatch.setattr(teardown_wake, "deployer_session", session)
    teardown_wake._Provider().delete("id", props(instance_id))
    assert kube.calls[0] == ("patch", "core.liqo.io", "foreignclusters", CLUSTER,
                             {"metadata": {"annotations": {UNREACHABLE_ANNOTATION: "true"}}})
    assert kube.calls[1] == ("delete", "authentication.liqo.io", "resourceslices", TENANT, SLICE)
    assert [c[0] for c in kube.calls[2:]] == ["get", "get", "get"], "waits until the slice is gone"


def test_mark_peer_gone_without_a_foreign_cluster_still_deletes_the_slice():
    kube = KubeStandIn(gone_after=0, foreign_cluster=False)
    teardown_wake.mark_peer_gone(kube, CLUSTER, TENANT, SLICE)
    assert [c[0] for c in kube.calls] == ["patch", "delete", "get"]


def test_a_slice_that_never_goes_is_one_line_with_the_command_to_run(ec2, monkeypatch):
    instance_id = worker(ec2, "terminated")
    monkeypatch.setattr(teardown_wake, "_homelab_api", lambda _k: KubeStandIn(gone_after=10**6))
    monkeypatch.setattr(teardown_wake, "GONE_WAIT_SECONDS", 0.0)
    with pytest.raises(teardown_wake.TeardownError) as err:
        teardown_wake._Provider().delete("id", props(instance_id))
    message = str(err.value)
    assert "\n" not in message and CLUSTER in message and f"liqoctl force unpeer {CLUSTER}" in message


def test_a_replaced_worker_updates_the_wake_in_place():
    provider = teardown_wake._Provider()
    old = props("i-0aaaaaaaaaaaaaaaa")
    new = {**old, "instance_id": "i-0bbbbbbbbbbbbbbbb"}
    diff = provider.diff("id", old, new)
    assert diff.changes and not diff.replaces
    assert provider.update("id", old, new).outs["instance_id"] == "i-0bbbbbbbbbbbbbbbb"
    assert not provider.diff("id", old, dict(old)).changes


def test_creating_it_calls_nothing(monkeypatch):
    monkeypatch.setattr(teardown_wake, "deployer_session", lambda *a: pytest.fail("create must not call AWS"))
    result = teardown_wake._Provider().create(props("i-0aaaaaaaaaaaaaaaa"))
    assert result.id == f"teardown-wake-{CLUSTER}"


def test_the_wake_keeps_the_kubeconfig_secret(api_port):
    from tools import harness
    from tests.homelab.conftest import RANGES, kubeconfig

    plan = harness.run_stack("dev", {"hybrid-llm:homelabKubeconfig": kubeconfig(api_port), **RANGES})
    (wake,) = [r for r in plan.resources if "-teardown-wake-" in r.name]
    from pulumi.runtime import rpc
    assert isinstance(wake.inputs["kubeconfig"], dict) and wake.inputs["kubeconfig"].get(rpc._special_sig_key) \
        == rpc._special_secret_sig
