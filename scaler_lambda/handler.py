"""The scaler Lambda's entry point: read the environment, gather each worker's
state, activity and readiness with boto3, let `decision.decide` judge, act, and
log one JSON line per decision (with the ready minute, when one was seen).

Each worker is handled on its own (its own DescribeInstances, GetMetricData and
StopInstances), so an API failure on one is reported in the result and never
blocks another. Throttling and transient errors are retried by botocore's
`standard` retry mode; nothing here retries by hand. Clients are created on first
use, so importing this module does no network or credential work.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cache
from typing import Any, Callable, Mapping, Optional

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from scaler_lambda.decision import (MAX_RUN_HOURS, NOT_READY_MINUTES, NONE, STOP, Decision, Settings,
                                    decide, floor_minute, window)

_BOTO_CONFIG = Config(retries={"mode": "standard", "max_attempts": 5},
                      connect_timeout=5, read_timeout=10)
PERIOD_SECONDS = 60
READY_LOOKBACK = timedelta(days=14)
"""CloudWatch answers a 60 s period only for the last 15 days (older start times
return no data at all). Ready stays 1 every minute once Ollama has answered, so a
ready minute older than this still shows as the first point in range, long past
its grace."""


class EnvError(ValueError):
    """A broken environment contract: one line naming the variable."""


@dataclass(frozen=True)
class Env:
    instance_ids: tuple[str, ...]
    settings: Settings
    namespace: str
    metric_name: str
    ready_metric_name: str
    hibernate: bool


def _whole(environ: Mapping[str, str], name: str, default: Optional[str], minimum: int) -> int:
    raw = environ.get(name, default)
    if raw is None:
        raise EnvError(f"{name}: not set")
    try:
        value = int(raw.strip())
    except ValueError:
        raise EnvError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        kind = "a positive integer" if minimum > 0 else "0 (off) or more"
        raise EnvError(f"{name}: must be {kind}, got {value}")
    return value


def read_env(environ: Mapping[str, str]) -> Env:
    ids = tuple(i.strip() for i in environ.get("GPU_INSTANCE_IDS", "").split(",") if i.strip())
    if not ids:
        raise EnvError("GPU_INSTANCE_IDS: not set (comma-separated instance ids)")
    hibernate = environ.get("HIBERNATE", "false").strip().lower()
    if hibernate not in ("true", "false"):
        raise EnvError(f"HIBERNATE: expected true or false, got {environ['HIBERNATE']!r}")
    return Env(
        instance_ids=ids,
        settings=Settings(idle_minutes=_whole(environ, "IDLE_MINUTES", None, 1),
                          max_run_hours=_whole(environ, "MAX_RUN_HOURS", str(MAX_RUN_HOURS), 0),
                          not_ready_minutes=_whole(environ, "NOT_READY_MINUTES", str(NOT_READY_MINUTES), 1)),
        namespace=environ.get("METRIC_NAMESPACE") or "HybridLLM",
        metric_name=environ.get("METRIC_NAME") or "Activity",
        ready_metric_name=environ.get("READY_METRIC_NAME") or "Ready",
        hibernate=hibernate == "true",
    )


@cache
def client(service: str) -> Any:
    return boto3.client(service, config=_BOTO_CONFIG)


def query_start(env: Env, launch: datetime, now: datetime) -> datetime:
    """Where the metric query begins: the last start (the ready minute, and the
    minutes a late window reaches back to, may be older than the window) or the
    window when that is earlier, bounded by `maxRunHours` (a worker up longer is
    stopped whatever its points) and by READY_LOOKBACK."""
    since = floor_minute(launch)
    if env.settings.max_run_hours:
        since = max(since, floor_minute(now) - timedelta(hours=env.settings.max_run_hours))
    since = max(since, floor_minute(now) - READY_LOOKBACK)
    return min(since, window(now, env.settings.idle_minutes)[0])


def metrics(cloudwatch: Any, env: Env, instance_id: str, launch: datetime,
            now: datetime) -> tuple[dict[datetime, float], dict[datetime, float]]:
    """The largest Activity and Ready value of each minute from `query_start` to
    the end of the window: one GetMetricData call with two queries, paginated."""
    series: dict[str, dict[datetime, float]] = {"activity": {}, "ready": {}}

    def query(query_id: str, metric_name: str) -> dict[str, Any]:
        return {
            "Id": query_id,
            "MetricStat": {
                "Metric": {"Namespace": env.namespace, "MetricName": metric_name,
                           "Dimensions": [{"Name": "InstanceId", "Value": instance_id}]},
                "Period": PERIOD_SECONDS, "Stat": "Maximum",
            },
            "ReturnData": True,
        }

    queries = [query("activity", env.metric_name), query("ready", env.ready_metric_name)]
    span = {"StartTime": query_start(env, launch, now), "EndTime": window(now, env.settings.idle_minutes)[1]}
    kwargs: dict[str, Any] = {}
    while True:
        page = cloudwatch.get_metric_data(MetricDataQueries=queries, **span, **kwargs)
        for result in page["MetricDataResults"]:
            points = series[result["Id"]]
            for stamp, value in zip(result["Timestamps"], result["Values"]):
                stamp = stamp if stamp.tzinfo else stamp.replace(tzinfo=timezone.utc)
                points[stamp] = max(value, points.get(stamp, value))
        if not page.get("NextToken"):
            return series["activity"], series["ready"]
        kwargs = {"NextToken": page["NextToken"]}


# The tag each stop leaves on its worker: `<rule>@<UTC time>`. The activator reads it
# (activator/waker.py, STOP_REASON_TAG) so that it does not start again, for hours,
# a worker the scaler stopped because its Ollama never answered after its start.
STOP_REASON_TAG = "hybrid-llm:stop-reason"

# Set by the teardown wake (components/teardown_wake.py) on a worker it starts so
# that the homelab's Liqo objects can let go of it: `<UTC time>` until which this
# function leaves it running. A tag on that one worker, so the schedule keeps
# stopping the others (a `pulumi up` that removes only the homelab, or one worker,
# deletes wakes too).
TEARDOWN_HOLD_TAG = "hybrid-llm:teardown-hold"

# StateReason codes of an instance that EC2 stopped for a spot interruption.
SPOT_INTERRUPTION_CODES = ("Server.SpotInstanceShutdown", "Server.SpotInstanceTermination")


def interrupted(instance: Mapping[str, Any]) -> bool:
    """Stopped by a spot interruption, not by us or a user."""
    return instance.get("StateReason", {}).get("Code") in SPOT_INTERRUPTION_CODES


def held_for_teardown(instance: Mapping[str, Any], now: datetime) -> Optional[str]:
    """The hold's end when a teardown holds the worker running at `now`, else None."""
    tags = {t["Key"]: t["Value"] for t in instance.get("Tags", [])}
    value = tags.get(TEARDOWN_HOLD_TAG)
    if not value:
        return None
    try:
        until = datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None                       # not ours to honour: an unreadable hold holds nothing
    return value if until > now else None


def stop_arguments(instance: Mapping[str, Any], hibernate: bool) -> dict[str, Any]:
    """Hibernate only when asked and the instance was launched with hibernation
    configured; otherwise StopInstances would fail or the request is a plain stop."""
    kwargs: dict[str, Any] = {"InstanceIds": [instance["InstanceId"]]}
    if hibernate and instance.get("HibernationOptions", {}).get("Configured"):
        kwargs["Hibernate"] = True
    return kwargs


def decide_one(ec2: Any, cloudwatch: Any, env: Env, instance_id: str, now: datetime) -> dict[str, Any]:
    reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    instance = reservations[0]["Instances"][0]
    launch = instance["LaunchTime"]
    launch = launch if launch.tzinfo else launch.replace(tzinfo=timezone.utc)
    state = instance["State"]["Name"]
    # Metrics matter only for a running worker; the others are never acted on.
    activity, ready = metrics(cloudwatch, env, instance_id, launch, now) if state == "running" else ({}, {})
    verdict: Decision = decide(state, launch, activity, ready, now, env.settings)
    entry = {"instance_id": instance_id, "action": verdict.action, "reason": verdict.reason,
             "ready_at": verdict.ready_at.isoformat() if verdict.ready_at else None}
    if state == "stopped" and interrupted(instance):
        entry["reason"] += ("; stopped by a spot interruption: only EC2 restarts it, when capacity "
                            "returns (StartInstances is refused until then)")
    hold = held_for_teardown(instance, now) if verdict.action == STOP else None
    if hold:
        return {**entry, "action": NONE, "reason": f"held for a teardown until {hold}; wanted to: {verdict.reason}"}
    if verdict.action == STOP:
        kwargs = stop_arguments(instance, env.hibernate)
        try:
            ec2.stop_instances(**kwargs)
        except (ClientError, BotoCoreError) as err:
            return {**entry, "action": NONE, "reason": f"stop failed; wanted to: {verdict.reason}",
                    "error": _describe(err)}
        if kwargs.get("Hibernate"):
            entry["reason"] += "; hibernated"
        rule = verdict.reason.split(":", 1)[0]
        try:
            ec2.create_tags(Resources=[instance_id], Tags=[
                {"Key": STOP_REASON_TAG, "Value": f"{rule}@{now.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"}])
        except (ClientError, BotoCoreError) as err:  # the stop happened; only the note is missing
            entry["tag_error"] = _describe(err)
    return entry


def _describe(err: Exception) -> str:
    return f"{type(err).__name__}: {err}"


def run(environ: Mapping[str, str], *, now: Optional[datetime] = None,
        make_client: Callable[[str], Any] = client) -> dict[str, Any]:
    """One pass over every worker. `now` and `make_client` let tests control time
    and endpoints."""
    env = read_env(environ)
    moment = now or datetime.now(timezone.utc)
    ec2, cloudwatch = make_client("ec2"), make_client("cloudwatch")
    decisions = []
    for instance_id in env.instance_ids:
        try:
            entry = decide_one(ec2, cloudwatch, env, instance_id, moment)
        except (ClientError, BotoCoreError, LookupError) as err:
            entry = {"instance_id": instance_id, "action": NONE,
                     "reason": "error: no decision this run", "error": _describe(err)}
        # stdout reaches the log group line by line; the scaler's worker-errors
        # metric filter counts the ERROR lines.
        level = "ERROR" if "error" in entry else "INFO"
        print(json.dumps({"at": moment.isoformat(), "level": level, **entry}, sort_keys=True), flush=True)
        decisions.append(entry)
    return {"decisions": decisions}


def handler(event: Any, context: Any) -> dict[str, Any]:
    """Lambda entry point (EventBridge schedule)."""
    return run(os.environ)
