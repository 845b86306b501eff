"""Serving every real request through a cold start: a worker that stops during a
hold is started again (a few times at most, never one EC2 stopped for a spot
interruption or the scaler stopped for a never-ready Ollama); a held request is
released only when the model it names is on the worker; a background loop that
dies is restarted, and one that cannot recover fails /healthz. In-process against
moto and a local stand-in Ollama on 127.0.0.1."""

from __future__ import annotations

import asyncio
from datetime import datetime, timezone
from typing import Any

from activator.service import Activator
from activator.supervisor import Supervisor

from .fakes import TAGS, FakeOllama, RecordingClient, StubCloudWatch, fast_settings, launch, run, state_of
from .test_proxy import GENERATE, client, serving, wait_for, when_started

FAST = dict(restart_check_seconds=0.1, hold_seconds=20.0)


def stop_when_started(ec2: Any, instance_id: str, times: int, tag: str = "") -> Any:
    """A StartInstances hook: stop the worker again right after each of its first `times` starts."""
    left = [times]

    def hook() -> None:
        if left[0] > 0:
            left[0] -= 1
            ec2.stop_instances(InstanceIds=[instance_id])
            if tag:
                stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "hybrid-llm:stop-reason",
                                                               "Value": f"{tag}@{stamp}"}])
    return hook


def test_a_worker_stopped_during_the_hold_is_started_again(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[int, list[str]]:
        backend = FakeOllama()
        stopper = stop_when_started(moto_clients[0], instance_id, times=1)
        come_up = when_started(backend, 0.5)
        starts = [0]

        def on_start() -> None:
            starts[0] += 1
            if starts[0] == 1:
                stopper()  # a spot-free stop by a person or maxRunHours, right after our start
            else:
                come_up()

        ec2 = RecordingClient(moto_clients[0], on_start=on_start)
        async with serving(fast_settings(backend.url, (instance_id,), **FAST), ec2, StubCloudWatch()) as (_, url), \
                client() as session:
            async with session.post(url + "/api/generate", json=GENERATE) as reply:
                status = reply.status
        await backend.stop()
        return status, ec2.calls

    status, calls = run(scenario())
    assert status == 200 and calls.count("start_instances") == 2
    assert state_of(moto_clients[0], instance_id) == "running"


def test_restarts_in_one_hold_are_bounded(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[int, str, list[str]]:
        ec2 = RecordingClient(moto_clients[0], on_start=stop_when_started(moto_clients[0], instance_id, times=10))
        settings = fast_settings(FakeOllama().url, (instance_id,), **FAST)
        async with serving(settings, ec2, StubCloudWatch()) as (_, url), client() as session:
            async with session.post(url + "/api/generate", json=GENERATE) as reply:
                return reply.status, await reply.text(), ec2.calls

    status, text, calls = run(scenario())
    assert status == 503 and "after 2 restart(s)" in text
    assert calls.count("start_instances") == 1 + 2


def test_a_worker_the_scaler_stopped_as_never_ready_is_not_restarted(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[int, str, str, list[str]]:
        ec2 = RecordingClient(moto_clients[0], on_start=stop_when_started(moto_clients[0], instance_id, times=1,
                                                                          tag="never-ready"))
        settings = fast_settings(FakeOllama().url, (instance_id,), **FAST)
        async with serving(settings, ec2, StubCloudWatch()) as (_, url), client() as session:
            async with session.post(url + "/api/generate", json=GENERATE) as reply:
                return reply.status, reply.headers.get("Retry-After", ""), await reply.text(), ec2.calls

    status, retry_after, text, calls = run(scenario())
    assert (status, retry_after) == (503, "300") and "StoppedNeverReady" in text
    assert calls.count("start_instances") == 1


class Interrupted:
    """moto's EC2, except that the worker reads as stopped by a spot interruption."""

    def __init__(self, ec2: Any) -> None:
        self._ec2 = ec2
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._ec2, name)

        def call(**kwargs: Any) -> Any:
            self.calls.append(name)
            reply = method(**kwargs)
            if name == "describe_instances":
                for reservation in reply["Reservations"]:
                    for instance in reservation["Instances"]:
                        instance["StateReason"] = {"Code": "Server.SpotInstanceShutdown",
                                                   "Message": "Server.SpotInstanceShutdown: Spot interruption"}
            return reply
        return call


def test_a_spot_interrupted_worker_is_answered_with_the_reason_not_started(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[int, str, list[str]]:
        ec2 = Interrupted(moto_clients[0])
        async with serving(fast_settings(FakeOllama().url, (instance_id,)), ec2, StubCloudWatch()) as (_, url), \
                client() as session:
            async with session.post(url + "/api/generate", json=GENERATE) as reply:
                return reply.status, await reply.text(), ec2.calls

    status, text, calls = run(scenario())
    assert status == 503 and "SpotInterrupted" in text and "only EC2 restarts" in text
    assert "start_instances" not in calls


def test_a_held_request_waits_for_its_model_to_arrive(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])
    pulled = {"models": TAGS["models"] + [{"name": "qwen2.5:latest", "model": "qwen2.5:latest"}]}

    async def scenario() -> tuple[int, float, float, int]:
        backend = FakeOllama()
        ec2 = RecordingClient(moto_clients[0], on_start=when_started(backend, 0.2))
        settings = fast_settings(backend.url, (instance_id,), models=("llama3.2:3b", "qwen2.5"))
        loop = asyncio.get_running_loop()
        async with serving(settings, ec2, StubCloudWatch()) as (activator, url), client() as session:
            began = loop.time()
            request = asyncio.ensure_future(session.post(url + "/api/generate",
                                                         json={**GENERATE, "model": "qwen2.5"}))
            assert await wait_for(lambda: activator.awake.awake, limit=10)
            up_at = loop.time() - began
            await asyncio.sleep(0.5)
            assert not request.done()  # Ollama answers, the model is still being pulled
            assert activator.hold.held == 1  # still held: capped, counted, answered at shutdown
            backend.tags = pulled
            reply = await request
            served_at = loop.time() - began
            status = reply.status
            reply.release()
        await backend.stop()
        generates = backend.seen.count(("POST", "/api/generate"))
        return status, up_at, served_at, generates

    status, up_at, served_at, generates = run(scenario())
    assert status == 200 and generates == 1 and served_at > up_at + 0.5


def test_a_dead_background_loop_is_restarted_and_one_that_cannot_recover_fails_healthz(
        moto_clients: tuple[Any, Any]) -> None:
    class BrokenWatch:
        """A Kubernetes API whose every list raises what kubernetes_asyncio raises
        for a malformed watch line: a plain Exception, which the watch does not catch."""

        calls = 0

        async def list_pod_for_all_namespaces(self, **kwargs: Any) -> Any:
            BrokenWatch.calls += 1
            raise Exception("malformed watch line")

    async def scenario() -> tuple[int, int, str, int]:
        backend = FakeOllama()
        await backend.start()
        settings = fast_settings(backend.url, ("i-0123456789abcdef0",), watch_pods=True)
        activator = Activator(settings, moto_clients[0], StubCloudWatch(), BrokenWatch())
        activator.supervisor = Supervisor(base=0.01, cap=0.05, give_up_after=5, healthy_after=60.0)
        url = await activator.start()
        try:
            async with client() as session:
                async with session.get(url + "/healthz") as reply:
                    before = reply.status
                assert await wait_for(lambda: not activator.supervisor.healthy)
                async with session.get(url + "/healthz") as reply:
                    after, text = reply.status, await reply.text()
                async with session.post(url + "/api/generate", json=GENERATE) as reply:
                    still_serving = reply.status
        finally:
            await activator.stop()
            await backend.stop()
        return before, after, text, still_serving

    before, after, text, still_serving = run(scenario())
    assert (before, after, still_serving) == (200, 503, 200)
    assert "pod watch" in text and "malformed watch line" in text and BrokenWatch.calls == 5


def test_a_never_ready_stop_also_refuses_the_next_holds_start(moto_clients: tuple[Any, Any]) -> None:
    """The refusal outlives the hold that met it: a new request one moment later
    does not start the same broken worker again."""
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[list[int], list[str]]:
        ec2 = RecordingClient(moto_clients[0], on_start=stop_when_started(moto_clients[0], instance_id, times=1,
                                                                          tag="never-ready"))
        settings = fast_settings(FakeOllama().url, (instance_id,), **FAST)
        statuses = []
        async with serving(settings, ec2, StubCloudWatch()) as (_, url), client() as session:
            for _ in range(2):
                async with session.post(url + "/api/generate", json=GENERATE) as reply:
                    statuses.append(reply.status)
        return statuses, ec2.calls

    statuses, calls = run(scenario())
    assert statuses == [503, 503] and calls.count("start_instances") == 1


def test_a_never_ready_stop_older_than_the_cooldown_no_longer_refuses() -> None:
    from datetime import timedelta

    from activator.waker import NEVER_READY_COOLDOWN, not_to_start

    started = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)
    instance = {"State": {"Name": "stopped"},
                "Tags": [{"Key": "hybrid-llm:stop-reason", "Value": "never-ready@2026-11-30T08:31:00Z"}]}
    stopped = started + timedelta(minutes=31)
    refused = not_to_start(instance, started, now=stopped + timedelta(minutes=1))
    assert refused is not None and refused.code == "StoppedNeverReady" and not refused.retryable
    assert not_to_start(instance, started, now=stopped + NEVER_READY_COOLDOWN) is None
    # Stopped as never-ready before this activator's own start: that start is new demand.
    assert not_to_start(instance, stopped + timedelta(minutes=5), now=stopped + timedelta(minutes=6)) is None
    idle = {**instance, "Tags": [{"Key": "hybrid-llm:stop-reason", "Value": "idle@2026-11-30T08:31:00Z"}]}
    assert not_to_start(idle, started, now=stopped + timedelta(minutes=1)) is None


def test_the_activator_reads_what_the_scaler_writes() -> None:
    """The Lambda and the activator ship apart, so each names the tag and the spot
    codes itself: the two must agree, or the never-ready refusal silently stops."""
    from activator import waker
    from scaler_lambda import handler

    assert waker.STOP_REASON_TAG == handler.STOP_REASON_TAG
    assert waker.SPOT_INTERRUPTION_CODES == handler.SPOT_INTERRUPTION_CODES
