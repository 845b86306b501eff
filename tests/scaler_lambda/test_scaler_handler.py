"""The scaler handler against moto (EC2 and CloudWatch), with time under the test's
control: moto stamps LaunchTime with the wall clock at RunInstances, so each test's
`now` is that LaunchTime plus the uptime it needs, and the Activity datapoints are
put at timestamps relative to that `now` (moto's GetMetricData honours them)."""

import json
from datetime import datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from scaler_lambda import handler
from scaler_lambda.decision import floor_minute

REGION = "us-east-1"
IDLE = 15
M = timedelta(minutes=1)


class Spy:
    """A boto3 client that records the calls made through it, and can fail some."""

    def __init__(self, client, fail=None):
        self._client, self._fail, self.calls = client, fail or {}, []

    def __getattr__(self, name):
        method = getattr(self._client, name)

        def call(**kwargs):
            self.calls.append((name, kwargs))
            for instance_id in kwargs.get("InstanceIds", []):
                if (name, instance_id) in self._fail:
                    raise ClientError({"Error": {"Code": self._fail[(name, instance_id)], "Message": "boom"}}, name)
            return method(**kwargs)
        return call

    def stopped(self):
        return [i for name, kw in self.calls if name == "stop_instances" for i in kw["InstanceIds"]]


@pytest.fixture
def aws(monkeypatch):
    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(key, value)
    handler.client.cache_clear()
    with mock_aws():
        yield
    handler.client.cache_clear()


class World:
    def __init__(self, fail=None):
        self.ec2 = Spy(boto3.client("ec2", region_name=REGION), fail)
        self.cloudwatch = Spy(boto3.client("cloudwatch", region_name=REGION))
        self.image = "ami-12c6146b"  # one of moto's built-in AMIs (looking one up is slow)

    def launch(self) -> tuple[str, datetime]:
        instance = self.ec2.run_instances(ImageId=self.image, InstanceType="g4dn.xlarge",
                                          MinCount=1, MaxCount=1)["Instances"][0]
        return instance["InstanceId"], instance["LaunchTime"]

    def activity(self, instance_id: str, now: datetime, minutes_ago: range | list, value: float = 0.0):
        self.cloudwatch.put_metric_data(Namespace="HybridLLM", MetricData=[{
            "MetricName": "Activity", "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
            "Timestamp": floor_minute(now) - k * M + timedelta(seconds=30), "Value": value, "Unit": "Count",
        } for k in minutes_ago])

    def state(self, instance_id: str) -> str:
        return self.ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]

    def run(self, ids, now, **env):
        environ = {"GPU_INSTANCE_IDS": ",".join(ids), "IDLE_MINUTES": str(IDLE), **env}
        self.ec2.calls.clear()
        clients = {"ec2": self.ec2, "cloudwatch": self.cloudwatch}
        return {d["instance_id"]: d for d in handler.run(environ, now=now, make_client=clients.__getitem__)["decisions"]}


def test_idle_worker_is_stopped(aws, capsys):
    world = World()
    worker, launched = world.launch()
    now = launched + 40 * M
    world.activity(worker, now, range(0, 30))
    decision = world.run([worker], now)[worker]
    assert (decision["action"], decision["reason"].split(":")[0]) == ("stop", "idle")
    assert world.ec2.stopped() == [worker] and world.state(worker) == "stopped"
    line = json.loads(capsys.readouterr().out.strip())
    assert (line["instance_id"], line["action"], line["level"]) == (worker, "stop", "INFO")


def test_worker_active_in_the_last_minutes_is_kept(aws):
    world = World()
    worker, launched = world.launch()
    now = launched + 40 * M
    world.activity(worker, now, range(3, 30))
    world.activity(worker, now, [1, 2], value=1)
    decision = world.run([worker], now)[worker]
    assert (decision["action"], decision["reason"].split(":")[0]) == ("none", "active")
    assert world.ec2.stopped() == [] and world.state(worker) == "running"


def test_activity_just_before_the_window_does_not_keep_it(aws):
    world = World()
    worker, launched = world.launch()
    now = launched + 40 * M
    world.activity(worker, now, range(0, IDLE + 1))
    world.activity(worker, now, [IDLE + 1], value=2)
    assert world.run([worker], now)[worker]["action"] == "stop"


def test_just_started_worker_is_kept(aws):
    world = World()
    worker, launched = world.launch()
    now = launched + 3 * M
    decision = world.run([worker], now)[worker]
    assert (decision["action"], decision["reason"].split(":")[0]) == ("none", "grace")
    assert world.state(worker) == "running"


def test_stopped_worker_is_untouched(aws):
    world = World()
    worker, launched = world.launch()
    world.ec2.stop_instances(InstanceIds=[worker])
    decision = world.run([worker], launched + 120 * M)[worker]
    assert decision["action"] == "none" and "stopped" in decision["reason"]
    assert world.ec2.stopped() == []


def test_silent_agent_after_the_grace_is_stopped(aws):
    world = World()
    worker, launched = world.launch()
    decision = world.run([worker], launched + (IDLE + 2) * M)[worker]
    assert decision["action"] == "stop" and "agent-silent" in decision["reason"]
    assert world.state(worker) == "stopped"


def test_two_workers_only_the_idle_one_is_stopped(aws):
    world = World()
    idle, launched = world.launch()
    busy, _ = world.launch()
    now = launched + 60 * M
    world.activity(idle, now, range(0, 30))
    world.activity(busy, now, range(0, 30), value=1)
    decisions = world.run([idle, busy], now)
    assert (decisions[idle]["action"], decisions[busy]["action"]) == ("stop", "none")
    assert world.ec2.stopped() == [idle]
    assert (world.state(idle), world.state(busy)) == ("stopped", "running")


def test_an_api_error_on_one_worker_does_not_block_the_other(aws, capsys):
    world = World()
    worker, launched = world.launch()
    missing = "i-0123456789abcdef0"
    now = launched + 60 * M
    world.activity(worker, now, range(0, 30))
    decisions = world.run([missing, worker], now)
    assert decisions[missing]["action"] == "none"
    assert "InvalidInstanceID.NotFound" in decisions[missing]["error"]
    assert decisions[worker]["action"] == "stop" and world.state(worker) == "stopped"
    levels = {json.loads(l)["instance_id"]: json.loads(l)["level"] for l in capsys.readouterr().out.splitlines()}
    assert levels == {missing: "ERROR", worker: "INFO"}


def test_a_failed_stop_is_reported_and_the_next_worker_still_decided(aws):
    world = World()
    first, launched = world.launch()
    second, _ = world.launch()
    world.ec2._fail = {("stop_instances", first): "UnauthorizedOperation"}
    now = launched + 60 * M
    decisions = world.run([first, second], now)
    assert decisions[first]["action"] == "none" and "UnauthorizedOperation" in decisions[first]["error"]
    assert "agent-silent" in decisions[first]["reason"]
    assert decisions[second]["action"] == "stop"
    assert (world.state(first), world.state(second)) == ("running", "stopped")


def test_max_run_hours_stops_a_busy_worker(aws):
    world = World()
    worker, launched = world.launch()
    now = launched + 5 * 60 * M
    world.activity(worker, now, range(0, 30), value=3)
    assert world.run([worker], now)[worker]["action"] == "none"
    decision = world.run([worker], now, MAX_RUN_HOURS="5")[worker]
    assert decision["action"] == "stop" and decision["reason"].startswith("max-run")


def test_hibernate_only_where_the_instance_has_it_configured(aws):
    world = World()
    worker, launched = world.launch()
    world.run([worker], launched + 60 * M, HIBERNATE="true")
    assert [kw for name, kw in world.ec2.calls if name == "stop_instances"] == [{"InstanceIds": [worker]}]
    configured = {"InstanceId": worker, "HibernationOptions": {"Configured": True}}
    assert handler.stop_arguments(configured, True) == {"InstanceIds": [worker], "Hibernate": True}
    assert handler.stop_arguments(configured, False) == {"InstanceIds": [worker]}
    assert handler.stop_arguments({"InstanceId": worker, "HibernationOptions": {"Configured": False}}, True) \
        == {"InstanceIds": [worker]}


def test_the_lambda_entry_point_reads_its_environment(aws, monkeypatch):
    world = World()
    worker, _ = world.launch()
    monkeypatch.setenv("GPU_INSTANCE_IDS", f" {worker} ,")
    monkeypatch.setenv("IDLE_MINUTES", str(IDLE))
    result = handler.handler({"source": "aws.events"}, None)
    assert result == {"decisions": [{"instance_id": worker, "action": "none",
                                     "reason": result["decisions"][0]["reason"]}]}
    assert result["decisions"][0]["reason"].startswith("grace")


@pytest.mark.parametrize("env, message", [
    ({"IDLE_MINUTES": "15"}, "GPU_INSTANCE_IDS: not set"),
    ({"GPU_INSTANCE_IDS": "i-1"}, "IDLE_MINUTES: not set"),
    ({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "0"}, "IDLE_MINUTES: must be a positive integer, got 0"),
    ({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "ten"}, "IDLE_MINUTES: expected a whole number, got 'ten'"),
    ({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "5", "MAX_RUN_HOURS": "-1"}, "MAX_RUN_HOURS: must be 0 (off) or more"),
    ({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "5", "HIBERNATE": "yes"}, "HIBERNATE: expected true or false"),
])
def test_bad_environment_is_one_line_naming_the_variable(env, message):
    with pytest.raises(handler.EnvError) as raised:
        handler.run(env, make_client=lambda service: pytest.fail("no client before the env is valid"))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_defaults_of_the_environment_contract():
    env = handler.read_env({"GPU_INSTANCE_IDS": "i-1,i-2", "IDLE_MINUTES": "7"})
    assert (env.instance_ids, env.namespace, env.metric_name, env.hibernate) == (("i-1", "i-2"), "HybridLLM", "Activity", False)
    assert (env.settings.idle_minutes, env.settings.max_run_hours) == (7, 0)


def test_metric_query_is_per_minute_over_the_window_for_that_instance(aws):
    world = World()
    worker, launched = world.launch()
    now = launched + 60 * M
    world.run([worker], now, METRIC_NAMESPACE="Custom", METRIC_NAME="Busy")
    queries = [kw for name, kw in world.cloudwatch.calls if name == "get_metric_data"]
    assert len(queries) == 1
    query = queries[0]
    stat = query["MetricDataQueries"][0]["MetricStat"]
    assert (stat["Period"], stat["Stat"]) == (60, "Maximum")
    assert stat["Metric"] == {"Namespace": "Custom", "MetricName": "Busy",
                              "Dimensions": [{"Name": "InstanceId", "Value": worker}]}
    current = floor_minute(now)
    assert (query["StartTime"], query["EndTime"]) == (current - IDLE * M, current + M)


def test_no_metric_call_for_a_worker_that_is_not_running(aws):
    world = World()
    worker, launched = world.launch()
    world.ec2.stop_instances(InstanceIds=[worker])
    world.run([worker], launched + 60 * M)
    assert [name for name, _ in world.cloudwatch.calls if name == "get_metric_data"] == []


def test_overlapping_passes_do_no_harm(aws):
    """No reserved concurrency, so two passes may overlap: both may decide to stop
    the same idle worker, and StopInstances on a stopping worker is no error."""
    import threading

    world = World()
    worker, launched = world.launch()
    now = launched + 40 * M
    world.activity(worker, now, range(0, 30))
    environ = {"GPU_INSTANCE_IDS": worker, "IDLE_MINUTES": str(IDLE)}
    results, barrier = [], threading.Barrier(2)

    class Gate:
        """Both passes read the instance as running before either stops it."""

        def __init__(self, client):
            self._client = client

        def __getattr__(self, name):
            method = getattr(self._client, name)
            if name != "stop_instances":
                return method

            def stop(**kwargs):
                barrier.wait(timeout=10)
                return method(**kwargs)
            return stop

    def one_pass():
        clients = {"ec2": Gate(world.ec2), "cloudwatch": world.cloudwatch}
        results.append(handler.run(environ, now=now, make_client=clients.__getitem__)["decisions"][0])

    threads = [threading.Thread(target=one_pass) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert [r["action"] for r in results] == ["stop", "stop"]
    assert not any("error" in r for r in results)
    assert world.state(worker) == "stopped"
    # The next pass sees it stopped and leaves it.
    assert world.run([worker], now + M)[worker]["action"] == "none"


def test_a_worker_stopped_by_a_spot_interruption_is_reported(aws):
    """Only EC2 restarts it (StartInstances is refused); the decision line says so.
    moto cannot stop an instance for an interruption, so its StateReason is set here."""
    world = World()
    worker, launched = world.launch()
    world.ec2.stop_instances(InstanceIds=[worker])
    describe = world.ec2._client.describe_instances

    def interrupted(**kwargs):
        answer = describe(**kwargs)
        for reservation in answer["Reservations"]:
            for instance in reservation["Instances"]:
                instance["StateReason"] = {"Code": "Server.SpotInstanceShutdown", "Message": "capacity"}
        return answer

    world.ec2._client.describe_instances = interrupted
    decision = world.run([worker], launched + 120 * M)[worker]
    assert decision["action"] == "none" and "spot interruption" in decision["reason"]
    assert "only EC2 restarts it" in decision["reason"]
    assert world.ec2.stopped() == []
    world.ec2._client.describe_instances = describe
    plain = world.run([worker], launched + 121 * M)[worker]
    assert "interruption" not in plain["reason"], "a worker we stopped is not reported as interrupted"
