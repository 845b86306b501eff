"""Starting a worker on EC2, at most one start attempt in flight per worker.

Every caller (held requests, pending pods) shares one task per worker, so a
hundred waiting requests cost one DescribeInstances and at most one
StartInstances. The task reads the state first: `stopped` is started, `stopping`
is waited out and then started, `pending`/`running` need nothing. Two stopped
workers are not started: one EC2 stopped for a spot interruption (only EC2 may
restart it; StartInstances would be refused), and one the scaler stopped
because its Ollama never answered (the scaler's `hybrid-llm:stop-reason` tag)
after this activator started it, or after the hold that starts it again began,
for NEVER_READY_COOLDOWN after that stop: starting it again would bill another
30 minutes for the same fault. After the cooldown a new request may try once
more (the fault may have passed: a registry that was down during the pull).

AWS failures are answers, not hangs. Each is logged in one line with its error
code and classified: a non-retryable one (wrong id, no permission, a spot
instance only EC2 may restart, ...) ends the task at once so held requests get a
prompt 503 that says what to do; a retryable one (no capacity, throttling, 5xx,
endpoint trouble) is retried with capped exponential backoff for as long as
someone still wants the worker (each demand extends the deadline by the hold).
botocore's own retries are off for EC2 so this is the one retry policy, and its
connect/read timeouts keep every call bounded; calls run in a thread so the
event loop never blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Awaitable, Callable, Optional

from botocore.config import Config
from botocore.exceptions import ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from activator.metrics import Metrics
from activator.settings import Settings

log = logging.getLogger("activator.waker")

# scaler_lambda/handler.py STOP_REASON_TAG: `<rule>@<UTC time>` of the scaler's last stop.
STOP_REASON_TAG = "hybrid-llm:stop-reason"
NEVER_READY = "never-ready"
NEVER_READY_COOLDOWN = timedelta(hours=6)
# StateReason codes of an instance that EC2 stopped for a spot interruption.
SPOT_INTERRUPTION_CODES = ("Server.SpotInstanceShutdown", "Server.SpotInstanceTermination")

EC2_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 1})

RETRYABLE_CODES = frozenset({
    "InsufficientInstanceCapacity", "RequestLimitExceeded", "Throttling", "ThrottlingException",
    "IncorrectInstanceState", "InternalError", "InternalFailure", "ServiceUnavailable",
    "Unavailable", "RequestTimeout", "RequestTimeoutException", "InstanceStopping",
})
ADVICE = {
    "InvalidInstanceID.NotFound": "check ACTIVATOR_INSTANCE_IDS against the stack's workers and AWS_REGION",
    "InvalidInstanceID.Malformed": "fix ACTIVATOR_INSTANCE_IDS",
    "UnauthorizedOperation": "allow the activator's AWS identity ec2:DescribeInstances and "
                             "ec2:StartInstances on this worker",
    "AuthFailure": "check the activator's AWS credentials",
    "UnsupportedOperation": "this instance cannot be started by a call (e.g. a one-time spot "
                            "instance); recreate the worker with pulumi up",
    "IncorrectSpotRequestState": "the worker's spot request is not active: an instance stopped by "
                                 "a spot interruption is restarted only by EC2 when capacity "
                                 "returns; wait, or run the worker on-demand",
    "VcpuLimitExceeded": "the account's vCPU quota for this instance family is too low; "
                         "request a Service Quotas increase",
    "MaxSpotInstanceCountExceeded": "the account's spot quota is reached; request an increase",
    "InstanceTerminated": "the worker is gone; run pulumi up to recreate it and update "
                          "ACTIVATOR_INSTANCE_IDS",
    "InsufficientInstanceCapacity": "EC2 has no capacity for this instance type in the zone now",
    "SpotInterrupted": "only EC2 restarts a worker stopped by a spot interruption, when capacity "
                       "returns; wait, or run the worker on-demand (gpuSpot=false)",
    "StoppedNeverReady": "the scaler stopped it because Ollama never answered after its start; "
                         "see the scaler's log and the worker's k3s and Ollama pod before retrying",
}
DEFAULT_ADVICE = "an operator must act; see the activator's log"


@dataclass(frozen=True)
class StartFailure:
    code: str
    message: str
    retryable: bool

    @property
    def advice(self) -> str:
        return ADVICE.get(self.code, "retrying" if self.retryable else DEFAULT_ADVICE)

    def reason(self, instance_id: str) -> str:
        """One line for a 503 body: what AWS said and what to do."""
        return f"worker {instance_id} could not be started: AWS {self.code}: {self.message} ({self.advice})"


@dataclass(frozen=True)
class WakeResult:
    state: str
    """The last state read: `running`, `pending`, or what it was when the task gave up."""
    started: bool = False
    failure: Optional[StartFailure] = None


def _one_line(text: str, limit: int = 240) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def classify(err: BaseException) -> StartFailure:
    """Non-retryable unless the code (or a 5xx status, or a network error) says
    the same call may succeed later."""
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        code = error.get("Code") or "Unknown"
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        retryable = code in RETRYABLE_CODES or status >= 500
        return StartFailure(code, _one_line(error.get("Message") or str(err)), retryable)
    # Endpoint and socket trouble may pass; missing credentials or region will not.
    retryable = isinstance(err, (BotoConnectionError, HTTPClientError))
    return StartFailure(type(err).__name__, _one_line(str(err)), retryable)


def not_to_start(instance: dict[str, Any], restart_since: Optional[datetime],
                 now: Optional[datetime] = None) -> Optional[StartFailure]:
    """Why a stopped worker must not be started by the activator, or None.
    `restart_since`: the activator's own last start of it, or the start of the hold
    that starts it again."""
    reason = (instance.get("StateReason") or {}).get("Code", "")
    if reason in SPOT_INTERRUPTION_CODES:
        return StartFailure("SpotInterrupted", f"EC2 stopped the worker for a spot interruption ({reason})", False)
    if restart_since is None:
        return None
    tags = {t.get("Key"): t.get("Value", "") for t in instance.get("Tags") or []}
    rule, _, stamp = tags.get(STOP_REASON_TAG, "").partition("@")
    try:
        stopped_at = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        return None
    now = now or datetime.now(timezone.utc)
    if rule == NEVER_READY and stopped_at >= restart_since - timedelta(minutes=1) \
            and now - stopped_at < NEVER_READY_COOLDOWN:
        return StartFailure("StoppedNeverReady", f"the scaler stopped it at {stamp}: Ollama never answered "
                                                 f"after the activator's last start; not started again before "
                                                 f"{stopped_at + NEVER_READY_COOLDOWN:%H:%M}Z", False)
    return None


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds before retry number `attempt` (0-based): base, 2*base, ... capped."""
    return min(cap, base * (2 ** min(attempt, 32)))


class Waker:
    """Brings one worker to `pending`/`running`; only workers of the settings exist."""

    def __init__(self, ec2: Any, instance_id: str, settings: Settings, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 metrics: Optional[Metrics] = None,
                 on_started: Optional[Callable[[str], None]] = None) -> None:
        if instance_id not in settings.instance_ids:
            raise ValueError(f"{instance_id} is not in ACTIVATOR_INSTANCE_IDS")
        self.instance_id = instance_id
        self._ec2 = ec2
        self._settings = settings
        self._sleep = sleep
        self._clock = clock
        self._metrics = metrics
        self._on_started = on_started
        """Told the instance id of each worker this waker started."""
        self._task: Optional[asyncio.Task[WakeResult]] = None
        self._last_start: Optional[datetime] = None
        """When this waker last started the worker (wall clock)."""
        self._deadline = 0.0
        self.last_state: Optional[str] = None
        self.last_failure: Optional[StartFailure] = None
        self.backoffs: list[float] = []
        """Every backoff slept, in order (for logs and tests)."""

    def extend(self, until: float) -> None:
        """Someone still wants the worker until `until` (clock seconds): keep retrying."""
        self._deadline = max(self._deadline, until)

    def wake(self, why: str, *, restart_since: Optional[datetime] = None) -> asyncio.Task[WakeResult]:
        """The running wake task, or a new one if none is running. `restart_since`:
        this wake starts again a worker that stopped during a hold begun then, so a
        stop by the scaler for a never-ready Ollama after that moment is final."""
        self.extend(self._clock() + self._settings.hold_seconds)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(why, restart_since))
        return self._task

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _call(self, operation: str) -> dict[str, Any]:
        method = getattr(self._ec2, operation)
        return await asyncio.to_thread(method, InstanceIds=[self.instance_id])

    async def describe(self) -> dict[str, Any]:
        """The instance as DescribeInstances shows it now."""
        reply = await self._call("describe_instances")
        instances = [i for r in reply.get("Reservations", []) for i in r.get("Instances", [])]
        if not instances:
            raise ClientError({"Error": {"Code": "InvalidInstanceID.NotFound",
                                         "Message": "DescribeInstances returned no instance"}},
                              "DescribeInstances")
        self.last_state = instances[0]["State"]["Name"]
        return instances[0]

    async def _run(self, why: str, restart_since: Optional[datetime] = None) -> WakeResult:
        attempt = 0
        while True:
            try:
                instance = await self.describe()
                state = instance["State"]["Name"]
                if state in ("pending", "running"):
                    log.info("worker %s is %s (%s): no start needed", self.instance_id, state, why)
                    self.last_failure = None
                    self._count("running")
                    return WakeResult(state)
                since = restart_since or self._last_start
                refusal = not_to_start(instance, since) if state == "stopped" else None
                if refusal is not None:
                    return self._give_up(refusal)
                if state == "stopped":
                    self._last_start = datetime.now(timezone.utc)
                    reply = await self._call("start_instances")
                    now = reply["StartingInstances"][0]["CurrentState"]["Name"]
                    self.last_state = now
                    self.last_failure = None
                    log.info("worker %s started (%s): %s -> %s", self.instance_id, why, state, now)
                    self._count("started")
                    if self._on_started is not None:
                        self._on_started(self.instance_id)
                    return WakeResult(now, started=True)
                if state in ("shutting-down", "terminated"):
                    failure = StartFailure("InstanceTerminated", f"the instance is {state}", False)
                    return self._give_up(failure)
                if self._clock() >= self._deadline:
                    return self._give_up(StartFailure("InstanceStopping", f"the instance is still {state}", True))
                log.info("worker %s is %s (%s): waiting to start it", self.instance_id, state, why)
                await self._sleep(self._settings.aws_poll_seconds)
            except Exception as err:  # every failure becomes an answer, never a hung task
                failure = self.last_failure = classify(err)
                if not failure.retryable:
                    return self._give_up(failure)
                remaining = self._deadline - self._clock()
                if remaining <= 0:
                    return self._give_up(failure)
                delay = min(backoff(attempt, self._settings.aws_backoff_base,
                                    self._settings.aws_backoff_cap), remaining)
                attempt += 1
                self.backoffs.append(delay)
                log.warning("worker %s: AWS %s (retryable): %s; retry %d in %.1fs",
                            self.instance_id, failure.code, failure.message, attempt, delay)
                await self._sleep(delay)

    def _count(self, result: str) -> None:
        if self._metrics is not None:
            self._metrics.worker_starts.labels(result).inc()

    def _give_up(self, failure: StartFailure) -> WakeResult:
        self.last_failure = failure
        kind = "gave up after retries" if failure.retryable else "not retryable"
        log.error("worker %s: AWS %s (%s): %s; %s", self.instance_id, failure.code, kind,
                  failure.message, failure.advice)
        self._count("failed")
        return WakeResult(self.last_state or "unknown", failure=failure)


class Wakers:
    """One Waker per configured worker; an unknown instance id has none."""

    def __init__(self, ec2: Any, settings: Settings, **kwargs: Any) -> None:
        self._by_id = {i: Waker(ec2, i, settings, **kwargs) for i in settings.instance_ids}

    def __getitem__(self, instance_id: str) -> Waker:
        return self._by_id[instance_id]

    def __contains__(self, instance_id: object) -> bool:
        return instance_id in self._by_id
