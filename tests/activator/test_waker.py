"""Starting a worker: moto for what moto can answer, a stub client for the
errors moto cannot produce (spot interruption, capacity, throttling)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, ReadTimeoutError

from activator.waker import StartFailure, Waker, Wakers, backoff, classify

from .fakes import RecordingClient, fast_settings, launch, run, state_of

BACKEND = "http://127.0.0.1:9"


def client_error(code: str, status: int = 400, operation: str = "StartInstances") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": f"{code} happened"},
                        "ResponseMetadata": {"HTTPStatusCode": status}}, operation)


class StubEC2:
    """Answers DescribeInstances from a list of states and StartInstances from a
    list of outcomes (an exception to raise, or None for success)."""

    def __init__(self, states: list[str], starts: list[Exception | None]) -> None:
        self.states = list(states)
        self.starts = list(starts)
        self.calls: list[str] = []

    def describe_instances(self, InstanceIds: list[str]) -> dict[str, Any]:
        self.calls.append("describe_instances")
        state = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"Reservations": [{"Instances": [{"InstanceId": InstanceIds[0], "State": {"Name": state}}]}]}

    def start_instances(self, InstanceIds: list[str]) -> dict[str, Any]:
        self.calls.append("start_instances")
        outcome = self.starts.pop(0) if self.starts else None
        if outcome is not None:
            raise outcome
        return {"StartingInstances": [{"InstanceId": InstanceIds[0], "CurrentState": {"Name": "pending"}}]}


class FakeTime:
    """A clock that only moves when the waker sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


ID = "i-0123456789abcdef0"


def stub_waker(stub: StubEC2, **overrides: Any) -> tuple[Waker, FakeTime]:
    time = FakeTime()
    settings = fast_settings(BACKEND, (ID,), **{"aws_backoff_base": 1.0, "aws_backoff_cap": 8.0,
                                                "hold_seconds": 60.0, **overrides})
    return Waker(stub, ID, settings, sleep=time.sleep, clock=time.clock), time


async def woken(waker: Waker) -> Any:
    return await waker.wake("test")


# --- against moto ---------------------------------------------------------------------------

def test_a_stopped_worker_is_started_once_however_many_wake(moto_clients: tuple[Any, Any]) -> None:
    ec2 = RecordingClient(moto_clients[0])
    instance_id = launch(moto_clients[0])
    waker = Waker(ec2, instance_id, fast_settings(BACKEND, (instance_id,)))

    async def scenario() -> list[Any]:
        tasks = [waker.wake(f"request {n}") for n in range(20)]
        return await asyncio.gather(*tasks)

    results = run(scenario())
    assert all(r.started and r.failure is None for r in results)
    assert ec2.calls == ["describe_instances", "start_instances"]
    assert state_of(moto_clients[0], instance_id) == "running"


def test_a_running_worker_is_not_started(moto_clients: tuple[Any, Any]) -> None:
    ec2 = RecordingClient(moto_clients[0])
    instance_id = launch(moto_clients[0], state="running")
    result = run(woken(Waker(ec2, instance_id, fast_settings(BACKEND, (instance_id,)))))
    assert (result.started, result.failure, result.state) == (False, None, "running")
    assert ec2.calls == ["describe_instances"]


def test_an_instance_not_in_the_list_is_never_started(moto_clients: tuple[Any, Any]) -> None:
    ours, other = launch(moto_clients[0]), launch(moto_clients[0])
    settings = fast_settings(BACKEND, (ours,))
    wakers = Wakers(moto_clients[0], settings)
    assert other not in wakers and ours in wakers
    with pytest.raises(KeyError):
        wakers[other]
    with pytest.raises(ValueError, match="not in ACTIVATOR_INSTANCE_IDS"):
        Waker(moto_clients[0], other, settings)
    run(woken(wakers[ours]))
    assert (state_of(moto_clients[0], ours), state_of(moto_clients[0], other)) == ("running", "stopped")


def test_a_wrong_id_is_a_prompt_non_retryable_failure(moto_clients: tuple[Any, Any]) -> None:
    ec2 = RecordingClient(moto_clients[0])
    waker = Waker(ec2, ID, fast_settings(BACKEND, (ID,), hold_seconds=600.0))
    result = run(woken(waker))
    assert result.failure is not None
    assert (result.failure.code, result.failure.retryable) == ("InvalidInstanceID.NotFound", False)
    assert "ACTIVATOR_INSTANCE_IDS" in result.failure.reason(ID)
    assert ec2.calls == ["describe_instances"] and waker.backoffs == []


# --- stubbed errors ---------------------------------------------------------------------------

def test_an_interrupted_spot_worker_is_not_retried() -> None:
    stub = StubEC2(["stopped"], [client_error("IncorrectSpotRequestState")])
    waker, time = stub_waker(stub)
    result = run(woken(waker))
    assert result.failure == StartFailure("IncorrectSpotRequestState", "IncorrectSpotRequestState happened", False)
    assert "only by EC2" in result.failure.reason(ID)
    assert stub.calls == ["describe_instances", "start_instances"] and time.slept == []


def test_no_capacity_is_retried_with_capped_exponential_backoff() -> None:
    capacity = client_error("InsufficientInstanceCapacity", 500)
    stub = StubEC2(["stopped"], [capacity] * 6 + [None])
    waker, time = stub_waker(stub)
    result = run(woken(waker))
    assert result.started and result.failure is None and waker.last_failure is None
    assert waker.backoffs == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0] == time.slept
    assert stub.calls.count("start_instances") == 7


def test_retrying_stops_when_the_hold_runs_out_with_the_last_reason() -> None:
    stub = StubEC2(["stopped"], [client_error("RequestLimitExceeded", 503)] * 100)
    waker, time = stub_waker(stub, hold_seconds=20.0)
    result = run(woken(waker))
    assert result.failure is not None and result.failure.code == "RequestLimitExceeded"
    assert result.failure.retryable
    assert sum(time.slept) == pytest.approx(20.0)
    assert time.slept == [1.0, 2.0, 4.0, 8.0, 5.0]


def test_a_stopping_worker_is_started_once_stopped() -> None:
    stub = StubEC2(["stopping", "stopping", "stopped"], [])
    waker, time = stub_waker(stub)
    result = run(woken(waker))
    assert result.started and stub.calls == ["describe_instances"] * 3 + ["start_instances"]
    assert time.slept == [waker._settings.aws_poll_seconds] * 2


def test_a_terminated_worker_is_reported_not_started() -> None:
    stub = StubEC2(["terminated"], [])
    waker, _ = stub_waker(stub)
    result = run(woken(waker))
    assert result.failure is not None and result.failure.code == "InstanceTerminated"
    assert not result.failure.retryable and "start_instances" not in stub.calls


@pytest.mark.parametrize("error, code, retryable", [
    (client_error("InvalidInstanceID.NotFound"), "InvalidInstanceID.NotFound", False),
    (client_error("InvalidInstanceID.Malformed"), "InvalidInstanceID.Malformed", False),
    (client_error("UnauthorizedOperation", 403), "UnauthorizedOperation", False),
    (client_error("UnsupportedOperation"), "UnsupportedOperation", False),
    (client_error("IncorrectSpotRequestState"), "IncorrectSpotRequestState", False),
    (client_error("VcpuLimitExceeded"), "VcpuLimitExceeded", False),
    (client_error("SomethingNew"), "SomethingNew", False),
    (client_error("InsufficientInstanceCapacity", 500), "InsufficientInstanceCapacity", True),
    (client_error("RequestLimitExceeded", 503), "RequestLimitExceeded", True),
    (client_error("Throttling"), "Throttling", True),
    (client_error("IncorrectInstanceState"), "IncorrectInstanceState", True),
    (client_error("SomethingBroke", 500), "SomethingBroke", True),
    (EndpointConnectionError(endpoint_url="https://ec2.example"), "EndpointConnectionError", True),
    (ReadTimeoutError(endpoint_url="https://ec2.example"), "ReadTimeoutError", True),
    (NoCredentialsError(), "NoCredentialsError", False),
])
def test_classification(error: Exception, code: str, retryable: bool) -> None:
    failure = classify(error)
    assert (failure.code, failure.retryable) == (code, retryable)
    assert "\n" not in failure.reason(ID)


def test_backoff_is_capped() -> None:
    assert [backoff(n, 0.5, 3.0) for n in range(6)] == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]
    assert backoff(10_000, 1.0, 30.0) == 30.0
