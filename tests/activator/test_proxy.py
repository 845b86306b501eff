"""The proxy against a real local HTTP server standing in for Ollama, moto for
EC2 (and CloudWatch or a stub), everything on 127.0.0.1."""

from __future__ import annotations

import asyncio
import hashlib
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

import aiohttp
from yarl import URL

from activator.service import Activator
from activator.settings import Settings

from .fakes import FakeOllama, RecordingClient, StubCloudWatch, fast_settings, launch, run, state_of

ABSENT_ID = "i-0123456789abcdef0"  # well-formed, never launched in moto


@asynccontextmanager
async def serving(settings: Settings, ec2: Any, cloudwatch: Any) -> AsyncIterator[tuple[Activator, str]]:
    activator = Activator(settings, ec2, cloudwatch)
    url = await activator.start()
    try:
        yield activator, url
    finally:
        await activator.stop()


@asynccontextmanager
async def client() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     auto_decompress=False) as session:
        yield session


def when_started(backend: FakeOllama, delay: float, action: Callable[[], Any] | None = None) -> Callable[[], None]:
    """A StartInstances hook (runs in boto's thread): bring the backend up after `delay`."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[None]] = []

    async def later() -> None:
        await asyncio.sleep(delay)
        if action is None:
            await backend.start()
        else:
            action()

    return lambda: loop.call_soon_threadsafe(lambda: tasks.append(loop.create_task(later())))


async def wait_for(condition: Callable[[], bool], limit: float = 5.0) -> bool:
    """Poll a condition the code under test makes true; False if it never did."""
    for _ in range(int(limit / 0.01)):
        if condition():
            return True
        await asyncio.sleep(0.01)
    return condition()


GENERATE = {"model": "llama3", "prompt": "hi", "stream": False}


def test_a_held_request_is_served_once_the_worker_is_up(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[int, Any, list[str]]:
        backend = FakeOllama()
        ec2 = RecordingClient(moto_clients[0], on_start=when_started(backend, 0.3))
        async with serving(fast_settings(backend.url, (instance_id,)), ec2, moto_clients[1]) as (_, url), \
                client() as session:
            async with session.post(url + "/api/generate", json=GENERATE) as reply:
                result = reply.status, await reply.json()
        await backend.stop()
        return (*result, ec2.calls)

    status, body, calls = run(scenario())
    assert (status, body["response"]) == (200, "hello")
    assert calls == ["describe_instances", "start_instances"]
    assert state_of(moto_clients[0], instance_id) == "running"


def test_an_intermediate_502_is_held_like_a_refused_connection(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[int, Any, list[str], list[tuple[str, str]]]:
        backend = FakeOllama()
        backend.gateway_only = True
        await backend.start()
        ec2 = RecordingClient(moto_clients[0],
                              on_start=when_started(backend, 0.2, lambda: setattr(backend, "gateway_only", False)))
        async with serving(fast_settings(backend.url, (instance_id,)), ec2, moto_clients[1]) as (_, url), \
                client() as session:
            async with session.post(url + "/api/generate", json=GENERATE) as reply:
                result = reply.status, await reply.json()
        await backend.stop()
        return (*result, ec2.calls, backend.seen)

    status, body, calls, seen = run(scenario())
    assert (status, body["response"]) == (200, "hello")
    assert calls.count("start_instances") == 1
    # Known asleep (the start-up probe met the 502), so the request went out only once it could land.
    assert seen.count(("POST", "/api/generate")) == 1 and seen[-1] == ("POST", "/api/generate")


def test_ollamas_own_503_passes_through_without_aws(moto_clients: tuple[Any, Any]) -> None:
    async def scenario() -> tuple[int, Any, list[str]]:
        backend = FakeOllama()
        await backend.start()
        ec2 = RecordingClient(moto_clients[0])
        async with serving(fast_settings(backend.url, (ABSENT_ID,)), ec2, moto_clients[1]) as (_, url), \
                client() as session:
            async with session.post(url + "/api/busy", json=GENERATE) as reply:
                result = reply.status, await reply.json()
        await backend.stop()
        return (*result, ec2.calls)

    status, body, calls = run(scenario())
    assert (status, body) == (503, {"error": "server busy, please try again"})
    assert calls == []


async def _read_lockstep(session: aiohttp.ClientSession, backend: FakeOllama, method: str, url: str,
                         payload: Any, after_first: Callable[[], Any] | None = None) -> list[bytes]:
    """Read line by line, acknowledging each line to the backend."""
    lines = []
    async with session.request(method, url, json=payload) as reply:
        assert reply.status == 200
        async for line in reply.content:
            lines.append(line)
            if len(lines) == 1 and after_first is not None:
                await after_first()
            backend.ack()
    return lines


def test_streams_pass_through_chunk_by_chunk(moto_clients: tuple[Any, Any]) -> None:
    async def scenario() -> tuple[list[bytes], list[bytes], list[bool], list[str]]:
        backend = FakeOllama()
        await backend.start()
        ec2 = RecordingClient(moto_clients[0])
        async with serving(fast_settings(backend.url, (ABSENT_ID,)), ec2, moto_clients[1]) as (_, url), \
                client() as session:
            ndjson = await _read_lockstep(session, backend, "POST", url + "/api/generate",
                                          {"model": "m", "prompt": "p"})
            sse = await _read_lockstep(session, backend, "POST", url + "/v1/chat/completions",
                                       {"model": "m", "messages": [], "stream": True})
        await backend.stop()
        return ndjson, sse, backend.acked, ec2.calls

    ndjson, sse, acked, calls = run(scenario())
    assert ndjson[0] == b'{"response": "a", "done": false}\n' and ndjson[-1] == b'{"done":true}\n'
    assert len(ndjson) == 4 and b"data: [DONE]\n" in sse
    # Every ack was sent only after its line reached the client: nothing was held back.
    assert acked == [True] * 5
    assert calls == []


def test_a_hold_that_runs_out_answers_503_with_retry_after(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[int, str, str, list[str]]:
        backend = FakeOllama()  # never comes up
        ec2 = RecordingClient(moto_clients[0])
        settings = fast_settings(backend.url, (instance_id,), hold_seconds=0.4)
        async with serving(settings, ec2, moto_clients[1]) as (_, url), client() as session:
            async with session.post(url + "/api/chat", json={"model": "m"}) as reply:
                return reply.status, reply.headers.get("Retry-After", ""), await reply.text(), ec2.calls

    status, retry_after, text, calls = run(scenario())
    assert (status, retry_after) == (503, "30")
    assert instance_id in text and "0.4s hold" in text and text.count("\n") == 1
    assert calls == ["describe_instances", "start_instances"]


def test_a_hundred_held_requests_are_served_and_the_worker_started_once(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[list[int], list[str], int]:
        backend = FakeOllama()
        ec2 = RecordingClient(moto_clients[0], on_start=when_started(backend, 0.3))
        async with serving(fast_settings(backend.url, (instance_id,)), ec2, moto_clients[1]) as (_, url), \
                client() as session:
            async def one(n: int) -> int:
                async with session.post(url + f"/echo/{n}", data=str(n).encode()) as reply:
                    body = await reply.json()
                    assert body["sha256"] == hashlib.sha256(str(n).encode()).hexdigest()
                    return reply.status

            statuses = await asyncio.gather(*(one(n) for n in range(100)))
        await backend.stop()
        return list(statuses), ec2.calls, len([s for s in backend.seen if s[1].startswith("/echo/")])

    statuses, calls, echoed = run(scenario())
    assert statuses == [200] * 100 and echoed == 100
    assert calls == ["describe_instances", "start_instances"]


def test_a_refused_start_is_a_prompt_503_with_the_aws_reason(moto_clients: tuple[Any, Any]) -> None:
    async def scenario() -> tuple[int, str, str]:
        backend = FakeOllama()
        settings = fast_settings(backend.url, (ABSENT_ID,), hold_seconds=600.0)
        async with serving(settings, moto_clients[0], moto_clients[1]) as (_, url), client() as session:
            async with session.post(url + "/api/chat", json={"model": "m"}) as reply:
                return reply.status, reply.headers.get("Retry-After", ""), await reply.text()

    # The hold is 600 s: only the refusal itself can answer within run()'s limit.
    status, retry_after, text = run(scenario(), limit=30)
    assert (status, retry_after) == (503, "300")
    assert "InvalidInstanceID.NotFound" in text and "ACTIVATOR_INSTANCE_IDS" in text


def test_healthz_is_200_while_the_worker_is_stopped(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[int, str, list[str]]:
        backend = FakeOllama()
        ec2 = RecordingClient(moto_clients[0])
        async with serving(fast_settings(backend.url, (instance_id,)), ec2, moto_clients[1]) as (_, url), \
                client() as session:
            async with session.get(url + "/healthz") as reply:
                return reply.status, await reply.text(), ec2.calls

    assert run(scenario()) == (200, "ok\n", [])
    assert state_of(moto_clients[0], instance_id) == "stopped"


def test_request_bodies_arrive_intact(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])
    bodies = {"large": os.urandom(8 * 1024 * 1024), "binary": bytes(range(256)) * 1024,
              "empty": b"", "streamed": os.urandom(1024 * 1024 + 7)}

    async def scenario() -> tuple[dict[str, Any], list[str]]:
        backend = FakeOllama()
        ec2 = RecordingClient(moto_clients[0], on_start=when_started(backend, 0.2))
        # Bodies past 64 KiB take the streamed path; the worker is stopped at first.
        settings = fast_settings(backend.url, (instance_id,), buffer_bytes=64 * 1024)
        settings_big = fast_settings(backend.url, (instance_id,))
        seen: dict[str, Any] = {}
        async with serving(settings, ec2, moto_clients[1]) as (_, url), client() as session:
            async with session.post(url + "/api/blobs/streamed", data=bodies["streamed"]) as reply:
                seen["streamed"] = (reply.status, await reply.json())
            async with session.put(url + "/echo/empty", data=b"") as reply:
                seen["empty"] = (reply.status, await reply.json())
        async with serving(settings_big, ec2, moto_clients[1]) as (_, url), client() as session:
            for name in ("large", "binary"):
                async with session.post(url + f"/echo/{name}", data=bodies[name],
                                        headers={"Content-Type": "application/octet-stream"}) as reply:
                    seen[name] = (reply.status, await reply.json())
        await backend.stop()
        return seen, ec2.calls

    seen, calls = run(scenario())
    for name, body in bodies.items():
        status, echo = seen[name]
        assert status == 200
        assert (echo["length"], echo["sha256"]) == (len(body), hashlib.sha256(body).hexdigest()), name
    assert calls.count("start_instances") == 1


def test_method_path_query_and_headers_pass_through(moto_clients: tuple[Any, Any]) -> None:
    raw = "/echo/odd%20path/%2Fslash?a=1&b=%2F&a=2&empty="

    backend = FakeOllama()

    async def scenario() -> tuple[dict[str, Any], int, dict[str, str], list[str], str]:
        await backend.start()
        ec2 = RecordingClient(moto_clients[0])
        echoes: dict[str, Any] = {}
        async with serving(fast_settings(backend.url, (ABSENT_ID,)), ec2, moto_clients[1]) as (_, url), \
                client() as session:
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"):
                async with session.request(method, URL(url + raw, encoded=True), headers={
                    "X-Custom": "kept", "Authorization": "Bearer t", "Connection": "keep-alive, X-Hop",
                    "X-Hop": "dropped", "Keep-Alive": "timeout=5"}) as reply:
                    echoes[method] = await reply.json()
                    reply_headers = {k: v for k, v in reply.headers.items()}
            async with session.head(URL(url + raw, encoded=True)) as reply:
                head_status = reply.status
            async with session.post(url + "/healthz", data=b"x") as reply:
                healthz_post = (await reply.json())["method"]
        await backend.stop()
        return echoes, head_status, reply_headers, ec2.calls, healthz_post

    echoes, head_status, reply_headers, calls, healthz_post = run(scenario())
    for method, echo in echoes.items():
        headers = {k.lower(): v for k, v in echo["headers"]}
        # raw_path is the request target as sent: path and query, encoding untouched.
        assert (echo["method"], echo["raw_path"]) == (method, raw)
        assert headers["x-custom"] == "kept" and headers["authorization"] == "Bearer t"
        assert "x-hop" not in headers and "keep-alive" not in headers
        assert headers["x-forwarded-for"] == "127.0.0.1"
        assert headers["host"] == f"127.0.0.1:{backend.port}"
    assert head_status == 200 and healthz_post == "POST"
    assert reply_headers["X-Backend"] == "fake-ollama" and reply_headers["Set-Cookie"] == "a=1"
    assert calls == []


def test_a_stream_is_work_while_it_is_in_flight(moto_clients: tuple[Any, Any]) -> None:
    cloudwatch = StubCloudWatch()

    async def scenario() -> tuple[list[bool], list[int], int, list[str], str]:
        backend = FakeOllama()
        await backend.start()
        ec2 = RecordingClient(moto_clients[0])
        seen: list[int] = []
        async with serving(fast_settings(backend.url, (ABSENT_ID,)), ec2, cloudwatch) as (activator, url), \
                client() as session:
            async def mid_stream() -> None:
                # The backend waits for our ack: this runs while the stream is open.
                assert await wait_for(lambda: len(cloudwatch.calls) == 1)
                seen.append(activator.activity.in_flight)
                async with session.get(url + "/metrics") as reply:
                    seen.append(int(float(_sample(await reply.text(), "hybrid_llm_activator_requests_in_flight"))))
            await _read_lockstep(session, backend, "POST", url + "/api/generate", {"model": "m"},
                                 after_first=mid_stream)
            after = activator.activity.in_flight
        await backend.stop()
        return backend.acked, seen, after, ec2.calls, ""

    acked, seen, after, calls, _ = run(scenario())
    assert acked == [True, True, True] and calls == []
    assert seen == [1, 1] and after == 0
    first = cloudwatch.calls[0]
    assert first["Namespace"] == "HybridLLM"
    point = first["MetricData"][0]
    assert (point["MetricName"], point["Unit"], point["Value"], point["Dimensions"]) == \
        ("Activity", "Count", 1.0, [{"Name": "InstanceId", "Value": ABSENT_ID}])
    assert point["Timestamp"].second == 0 and point["Timestamp"].microsecond == 0


def _sample(text: str, name: str, labels: str = "") -> str:
    """The value of one sample in Prometheus' text format."""
    for line in text.splitlines():
        if line.startswith(f"{name}{labels} "):
            return line.split()[-1]
    raise AssertionError(f"no sample {name}{labels} in:\n{text}")


def test_activity_reaches_cloudwatch(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0], state="running")

    async def scenario() -> None:
        backend = FakeOllama()
        await backend.start()
        async with serving(fast_settings(backend.url, (instance_id,)), moto_clients[0], moto_clients[1]) \
                as (activator, url), client() as session:
            async with session.post(url + "/api/generate", json=GENERATE) as reply:
                assert reply.status == 200
            assert await wait_for(lambda: len(activator.activity.published) == 1)
        await backend.stop()

    run(scenario())
    metrics = moto_clients[1].list_metrics(Namespace="HybridLLM")["Metrics"]
    assert [(m["MetricName"], m["Dimensions"]) for m in metrics] == \
        [("Activity", [{"Name": "InstanceId", "Value": instance_id}])]


def test_a_failing_publish_never_fails_a_request(moto_clients: tuple[Any, Any]) -> None:
    async def scenario() -> tuple[int, list[int]]:
        backend = FakeOllama()
        await backend.start()
        async with serving(fast_settings(backend.url, (ABSENT_ID,)), moto_clients[0],
                           StubCloudWatch(fail=True)) as (activator, url), client() as session:
            async with session.post(url + "/api/generate", json=GENERATE) as reply:
                status = reply.status
            await asyncio.sleep(0.05)
            published = list(activator.activity.published)
        await backend.stop()
        return status, published

    assert run(scenario()) == (200, [])


def test_shutdown_answers_held_requests(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[int, str]:
        backend = FakeOllama()  # never comes up
        activator = Activator(fast_settings(backend.url, (instance_id,), hold_seconds=600.0),
                              moto_clients[0], moto_clients[1])
        url = await activator.start()
        async with client() as session:
            pending = asyncio.ensure_future(session.post(url + "/api/chat", json={"model": "m"}))
            assert await wait_for(lambda: activator.hold is not None and activator.hold.held == 1)
            await activator.stop()
            reply = await pending
            return reply.status, await reply.text()

    assert run(scenario(), limit=30) == (503, "activator shutting down\n")
