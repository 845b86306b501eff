"""The scaler handler against moto (EC2 and CloudWatch), with time under the test's
control: moto stamps LaunchTime with the wall clock at RunInstances, so each test's
`now` is that LaunchTime plus the uptime it needs, and the Activity and Ready
datapoints are put at timestamps relative to that `now`, each stamped with the start
of its minute as the publishers do (moto's GetMetricData honours them)."""

import json
from datetime import datetime, timedelta, timezone

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

    def put(self, name: str, instance_id: str, now: datetime, minutes_ago: range | list, value: float):
        self.cloudwatch.put_metric_data(Namespace="HybridLLM", MetricData=[{
            "MetricName": name, "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
            "Timestamp": floor_minute(now) - k * M, "Value": value, "Unit": "Count",
        } for k in minutes_ago])

    def activity(self, instance_id: str, now: datetime, minutes_ago: range | list, value: float = 0.0):
        self.put("Activity", instance_id, now, minutes_ago, value)

    def ready(self, instance_id: str, now: datetime, minutes_ago: range | list, value: float = 1.0):
        self.put("Ready", instance_id, now, minutes_ago, value)

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
    world.ready(worker, now, range(0, 35))
    decision = world.run([worker], now)[worker]
    assert (decision["action"], decision["reason"].split(":")[0]) == ("stop", "idle")
    assert world.ec2.stopped() == [worker] and world.state(worker) == "stopped"
    line = json.loads(capsys.readouterr().out.strip())
    assert (line["instance_id"], line["action"], line["level"]) == (worker, "stop", "INFO")
    assert line["ready_at"] == (floor_minute(now) - 34 * M).isoformat()


def test_worker_active_in_the_last_minutes_is_kept(aws):
    world = World()
    worker, launched = world.launch()
    now = launched + 40 * M
    world.activity(worker, now, range(3, 30))
    world.activity(worker, now, [1, 2], value=1)
    world.ready(worker, now, range(0, 35))
    decision = world.run([worker], now)[worker]
    assert (decision["action"], decision["reason"].split(":")[0]) == ("none", "active")
    assert world.ec2.stopped() == [] and world.state(worker) == "running"


def test_activity_just_before_the_window_does_not_keep_it(aws):
    world = World()
    worker, launched = world.launch()
    now = launched + 40 * M
    world.activity(worker, now, range(0, IDLE + 1))
    world.activity(worker, now, [IDLE + 1], value=2)
    world.ready(worker, now, range(0, 35))
    assert world.run([worker], now)[worker]["action"] == "stop"


def test_just_started_worker_is_kept(aws):
    world = World()
    worker, launched = world.launch()
    now = launched + 3 * M
    decision = world.run([worker], now)[worker]
    assert (decision["action"], decision["reason"].split(":")[0]) == ("none", "starting")
    assert world.state(worker) == "running"


def test_stopped_worker_is_untouched(aws):
    world = World()
    worker, launched = world.launch()
    world.ec2.stop_instances(InstanceIds=[worker])
    decision = world.run([worker], launched + 120 * M)[worker]
    assert decision["action"] == "none" and "stopped" in decision["reason"]
    assert world.ec2.stopped() == []


def test_silent_agent_after_the_grace_is_stopped(aws):
    """The agent said ready once, then went silent: stopped once the grace is over."""
    world = World()
    worker, launched = world.launch()
    now = launched + (IDLE + 6) * M
    world.ready(worker, now, [IDLE + 2])
    assert world.run([worker], now - 2 * M)[worker]["reason"].startswith("grace")
    decision = world.run([worker], now)[worker]
    assert decision["action"] == "stop" and "agent-silent" in decision["reason"]
    assert world.state(worker) == "stopped"


def test_two_workers_only_the_idle_one_is_stopped(aws):
    world = World()
    idle, launched = world.launch()
    busy, _ = world.launch()
    now = launched + 60 * M
    world.activity(idle, now, range(0, 30))
    world.activity(busy, now, range(0, 30), value=1)
    world.ready(idle, now, range(0, 50))
    world.ready(busy, now, range(0, 50))
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
    world.ready(worker, now, range(0, 50))
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
    assert "never-ready" in decisions[first]["reason"]
    assert decisions[second]["action"] == "stop"
    assert (world.state(first), world.state(second)) == ("running", "stopped")


def test_max_run_hours_stops_a_busy_worker(aws):
    world = World()
    worker, launched = world.launch()
    now = launched + 5 * 60 * M
    world.activity(worker, now, range(0, 30), value=3)
    world.ready(worker, now, range(0, 290))
    assert world.run([worker], now)[worker]["action"] == "none"
    decision = world.run([worker], now, MAX_RUN_HOURS="5")[worker]
    assert decision["action"] == "stop" and decision["reason"].startswith("max-run")


def test_by_default_a_worker_busy_for_a_day_is_stopped(aws):
    """Fault 1: with maxRunHours 0 by default, a client that never stopped polling
    kept a GPU billing for good; unset, the backstop now stops it after a day."""
    world = World()
    worker, launched = world.launch()
    for hours in (23, 24):
        now = launched + hours * 60 * M
        world.activity(worker, now, range(0, 30), value=1)
        world.ready(worker, now, range(0, 30))
    world.ready(worker, launched + 23 * 60 * M, range(30, 23 * 60 - 5))
    kept = world.run([worker], launched + 23 * 60 * M)[worker]
    assert (kept["action"], kept["reason"].split(":")[0]) == ("none", "active")
    decision = world.run([worker], launched + 24 * 60 * M)[worker]
    assert (decision["action"], decision["reason"].split(":")[0]) == ("stop", "max-run")
    assert world.state(worker) == "stopped"


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
    assert result == {"decisions": [{"instance_id": worker, "action": "none", "ready_at": None,
                                     "reason": result["decisions"][0]["reason"]}]}
    assert result["decisions"][0]["reason"].startswith("starting")


@pytest.mark.parametrize("env, message", [
    ({"IDLE_MINUTES": "15"}, "GPU_INSTANCE_IDS: not set"),
    ({"GPU_INSTANCE_IDS": "i-1"}, "IDLE_MINUTES: not set"),
    ({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "0"}, "IDLE_MINUTES: must be a positive integer, got 0"),
    ({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "ten"}, "IDLE_MINUTES: expected a whole number, got 'ten'"),
    ({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "5", "MAX_RUN_HOURS": "-1"}, "MAX_RUN_HOURS: must be 0 (off) or more"),
    ({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "5", "HIBERNATE": "yes"}, "HIBERNATE: expected true or false"),
    ({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "5", "NOT_READY_MINUTES": "0"},
     "NOT_READY_MINUTES: must be a positive integer, got 0"),
    ({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "5", "NOT_READY_MINUTES": "half an hour"},
     "NOT_READY_MINUTES: expected a whole number, got 'half an hour'"),
])
def test_bad_environment_is_one_line_naming_the_variable(env, message):
    with pytest.raises(handler.EnvError) as raised:
        handler.run(env, make_client=lambda service: pytest.fail("no client before the env is valid"))
    assert str(raised.value).startswith(message) and "\n" not in str(raised.value)


def test_defaults_of_the_environment_contract():
    env = handler.read_env({"GPU_INSTANCE_IDS": "i-1,i-2", "IDLE_MINUTES": "7"})
    assert (env.instance_ids, env.namespace, env.metric_name, env.ready_metric_name, env.hibernate) == \
        (("i-1", "i-2"), "HybridLLM", "Activity", "Ready", False)
    assert (env.settings.idle_minutes, env.settings.max_run_hours, env.settings.not_ready_minutes) == (7, 24, 30)
    env = handler.read_env({"GPU_INSTANCE_IDS": "i-1", "IDLE_MINUTES": "7", "MAX_RUN_HOURS": "0",
                            "NOT_READY_MINUTES": "45", "READY_METRIC_NAME": "Up"})
    assert (env.settings.max_run_hours, env.settings.not_ready_minutes, env.ready_metric_name) == (0, 45, "Up")


def queries_of(world):
    return [kw for name, kw in world.cloudwatch.calls if name == "get_metric_data"]


def test_one_metric_call_reads_activity_and_ready_per_minute_for_that_instance(aws):
    world = World()
    worker, launched = world.launch()
    now = launched + 60 * M
    world.run([worker], now, METRIC_NAMESPACE="Custom", METRIC_NAME="Busy", READY_METRIC_NAME="Up")
    queries = queries_of(world)
    assert len(queries) == 1
    query = queries[0]
    stats = {q["Id"]: q["MetricStat"] for q in query["MetricDataQueries"]}
    assert {s["Metric"]["MetricName"] for s in stats.values()} == {"Busy", "Up"}
    for stat in stats.values():
        assert (stat["Period"], stat["Stat"]) == (60, "Maximum")
        assert stat["Metric"]["Namespace"] == "Custom"
        assert stat["Metric"]["Dimensions"] == [{"Name": "InstanceId", "Value": worker}]
    # Ready is needed since the last start, which is older than the window here.
    assert (query["StartTime"], query["EndTime"]) == (floor_minute(launched), floor_minute(now) + M)


@pytest.mark.parametrize("uptime, env, start_minutes_before_now", [
    (3 * M, {}, IDLE),                                    # just started: the window reaches further back
    (3 * 60 * M, {"MAX_RUN_HOURS": "1"}, 60),             # maxRunHours bounds it
    (20 * 24 * 60 * M, {"MAX_RUN_HOURS": "0"}, 14 * 24 * 60),   # 1-minute data lives 15 days
])
def test_metric_query_start(aws, uptime, env, start_minutes_before_now):
    world = World()
    worker, launched = world.launch()
    now = launched + uptime
    world.run([worker], now, **env)
    assert queries_of(world)[0]["StartTime"] == floor_minute(now) - start_minutes_before_now * M


def test_both_series_are_read_across_pages(aws):
    """GetMetricData pages by NextToken; points of either metric may come on any page."""
    world = World()
    worker, launched = world.launch()
    now = launched + 40 * M
    world.activity(worker, now, range(0, 30))
    world.ready(worker, now, range(0, 35))
    real = world.cloudwatch._client.get_metric_data
    pages = []

    def paged(**kwargs):
        whole = real(**{k: v for k, v in kwargs.items() if k != "NextToken"})
        halves = []
        for result in whole["MetricDataResults"]:
            cut = len(result["Timestamps"]) // 2
            halves.append(({**result, "Timestamps": result["Timestamps"][:cut], "Values": result["Values"][:cut]},
                           {**result, "Timestamps": result["Timestamps"][cut:], "Values": result["Values"][cut:]}))
        pages.append(kwargs.get("NextToken"))
        if "NextToken" not in kwargs:
            return {"MetricDataResults": [h[0] for h in halves], "NextToken": "page-2"}
        return {"MetricDataResults": [h[1] for h in halves]}

    world.cloudwatch._client.get_metric_data = paged
    decision = world.run([worker], now)[worker]
    assert pages == [None, "page-2"]
    assert (decision["action"], decision["reason"].split(":")[0]) == ("stop", "idle")
    assert decision["ready_at"] == (floor_minute(now) - 34 * M).isoformat()


def test_a_slow_start_is_kept_until_ready_plus_idle_minutes(aws):
    """Fault 3: with idleMinutes 5 the old launch-based grace stopped a worker up 8
    minutes whose Ollama had not answered yet. Ready in its 9th minute, it is kept
    to the end of the ready minute + 5 complete minutes, then stopped as idle."""
    world = World()
    worker, launched = world.launch()
    ready_minute = floor_minute(launched) + 9 * M
    end = ready_minute + 8 * M
    world.activity(worker, end, range(0, 8 + 7))
    world.ready(worker, end, range(8, 8 + 7), value=0)
    world.ready(worker, end, range(0, 8 + 1))
    decisions = {}
    for minute in range(8, 16):
        now = floor_minute(launched) + minute * M + timedelta(seconds=20)
        decisions[minute] = world.run([worker], now, IDLE_MINUTES="5")[worker]
        if decisions[minute]["action"] == "stop":
            break
    assert decisions[8]["reason"].startswith("starting")
    assert all(decisions[m]["reason"].startswith("grace") for m in range(9, 15))
    assert decisions[9]["ready_at"] == ready_minute.isoformat()
    assert (decisions[15]["action"], decisions[15]["reason"].split(":")[0]) == ("stop", "idle")
    assert world.state(worker) == "stopped"


def test_a_worker_that_never_becomes_ready_is_stopped_even_with_held_requests(aws):
    """Fault 4: requests held for a broken Ollama were counted as activity every
    minute and kept the worker for good; never ready 30 minutes after its start,
    it is stopped, and the line says why."""
    world = World()
    worker, launched = world.launch()
    now = floor_minute(launched) + 31 * M
    world.activity(worker, now, range(0, 30), value=2)
    world.ready(worker, now, range(0, 29), value=0)
    early = world.run([worker], now - 2 * M)[worker]
    assert (early["action"], early["reason"].split(":")[0]) == ("none", "starting")
    decision = world.run([worker], now)[worker]
    assert (decision["action"], decision["reason"].split(":")[0]) == ("stop", "never-ready")
    assert "Ollama has not answered" in decision["reason"] and decision["ready_at"] is None
    assert world.state(worker) == "stopped"
    tags = {t["Key"]: t["Value"] for t in world.ec2.describe_instances(
        InstanceIds=[worker])["Reservations"][0]["Instances"][0].get("Tags", [])}
    # The activator reads this to never restart it within the same hold.
    assert tags[handler.STOP_REASON_TAG] == f"never-ready@{now.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"


def test_a_stop_notes_its_rule_on_the_worker_and_a_failed_note_is_no_error(aws, capsys):
    world = World(fail={})
    worker, launched = world.launch()
    now = launched + 40 * M
    world.activity(worker, now, range(0, 30))
    world.ready(worker, now, range(0, 35))

    class NoTags:
        def __init__(self, ec2):
            self._ec2 = ec2

        def __getattr__(self, name):
            if name == "create_tags":
                def refused(**kwargs):
                    raise ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "no"}}, name)
                return refused
            return getattr(self._ec2, name)

    clients = {"ec2": NoTags(world.ec2), "cloudwatch": world.cloudwatch}
    decision = handler.run({"GPU_INSTANCE_IDS": worker, "IDLE_MINUTES": str(IDLE)}, now=now,
                           make_client=clients.__getitem__)["decisions"][0]
    line = json.loads(capsys.readouterr().out.strip())
    assert decision["action"] == "stop" and world.state(worker) == "stopped"
    assert "UnauthorizedOperation" in decision["tag_error"] and line["level"] == "INFO"


def test_not_ready_minutes_from_the_environment(aws):
    world = World()
    worker, launched = world.launch()
    now = launched + 40 * M
    assert world.run([worker], now, NOT_READY_MINUTES="45")[worker]["reason"].startswith("starting")
    assert world.run([worker], now, NOT_READY_MINUTES="40")[worker]["reason"].startswith("never-ready")


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
    world.ready(worker, now, range(0, 35))
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


@pytest.mark.parametrize("hold_minutes, kept", [(30, True), (-1, False), (None, False)])
def test_a_teardown_hold_keeps_only_its_worker_until_it_ends(aws, hold_minutes, kept):
    """The teardown wake (components/teardown_wake.py) holds one worker while the
    homelab's Liqo objects let go of it; the scaler keeps stopping the others."""
    world = World()
    held, other = world.launch()[0], world.launch()[0]
    now = world.ec2.describe_instances(InstanceIds=[held])["Reservations"][0]["Instances"][0]["LaunchTime"] + 40 * M
    for worker in (held, other):
        world.activity(worker, now, range(0, 30))
        world.ready(worker, now, range(0, 35))
    value = "not a time" if hold_minutes is None else f"{now + hold_minutes * M:%Y-%m-%dT%H:%M:%SZ}"
    world.ec2.create_tags(Resources=[held], Tags=[{"Key": handler.TEARDOWN_HOLD_TAG, "Value": value}])
    decisions = world.run([held, other], now)
    assert decisions[other]["action"] == "stop"
    assert (decisions[held]["action"] == "none") == kept
    if kept:
        assert decisions[held]["reason"].startswith(f"held for a teardown until {value}; wanted to: idle")
        assert world.state(held) == "running"
    else:
        assert world.state(held) == "stopped"
