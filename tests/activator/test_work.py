"""GPU work through the activator: nothing runs forever (silent answers are
ended, a client that hangs up ends its request), work Ollama received is never
sent twice, and the held requests are capped. In-process, on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

import aiohttp

from .fakes import FakeOllama, LOOPBACK, RecordingClient, StubCloudWatch, fast_settings, launch, run
from .test_proxy import GENERATE, _sample, client, serving, wait_for

ID = "i-0123456789abcdef0"


def test_a_stream_that_goes_silent_is_ended_and_stops_being_work(moto_clients: tuple[Any, Any]) -> None:
    async def scenario() -> tuple[Any, ...]:
        backend = FakeOllama()
        await backend.start()
        settings = fast_settings(backend.url, (ID,), stream_idle_seconds=0.3)
        async with serving(settings, moto_clients[0], StubCloudWatch()) as (activator, url), client() as session:
            lines, broke = [], ""
            async with session.post(url + "/api/silent", json=GENERATE) as reply:
                try:
                    async for line in reply.content:
                        lines.append(line)
                except aiohttp.ClientPayloadError as err:
                    broke = type(err).__name__
            in_flight = activator.activity.in_flight
            async with session.get(url + "/metrics") as metrics:
                text = await metrics.text()
        await backend.stop()
        return lines, broke, in_flight, text

    lines, broke, in_flight, text = run(scenario(), limit=20)
    # The client sees a broken answer, not a clean end, and the work count is back to 0.
    assert lines == [b'{"response":"a","done":false}\n'] and broke == "ClientPayloadError"
    assert in_flight == 0
    assert float(_sample(text, "hybrid_llm_activator_streams_ended_total", '{phase="idle"}')) == 1


def test_an_answer_that_never_starts_is_a_504_after_the_first_byte_limit(moto_clients: tuple[Any, Any]) -> None:
    async def scenario() -> tuple[int, str, int, list[tuple[str, str]]]:
        backend = FakeOllama()
        await backend.start()
        settings = fast_settings(backend.url, (ID,), first_byte_seconds=0.4)
        async with serving(settings, moto_clients[0], StubCloudWatch()) as (activator, url), client() as session:
            async with session.post(url + "/api/mute", json=GENERATE) as reply:
                result = reply.status, await reply.text()
            in_flight = activator.activity.in_flight
        await backend.stop()
        return (*result, in_flight, backend.seen)

    status, text, in_flight, seen = run(scenario(), limit=20)
    assert status == 504 and "nothing for 0.4s" in text and "not sent again" in text
    assert in_flight == 0 and seen.count(("POST", "/api/mute")) == 1  # ended, never sent again


def test_a_client_that_hangs_up_ends_its_work_and_its_hold_at_once(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[int, int, int]:
        backend = FakeOllama()
        await backend.start()
        settings = fast_settings(backend.url, (ID,))
        async with serving(settings, moto_clients[0], StubCloudWatch()) as (activator, url):
            async with client() as session:
                asyncio.ensure_future(session.post(url + "/api/silent", json=GENERATE))
                assert await wait_for(lambda: activator.activity.in_flight == 1)
            # The client's session is closed: its connection is gone mid-answer.
            assert await wait_for(lambda: activator.activity.in_flight == 0, limit=2)
            streaming_left = activator.activity.in_flight
        await backend.stop()
        held_backend = FakeOllama()  # never comes up: the request is held
        settings = fast_settings(held_backend.url, (instance_id,), hold_seconds=600.0)
        async with serving(settings, RecordingClient(moto_clients[0]), StubCloudWatch()) as (activator, url):
            async with client() as session:
                asyncio.ensure_future(session.post(url + "/api/chat", json={"model": "m"}))
                assert await wait_for(lambda: activator.hold is not None and activator.hold.held == 1)
            assert await wait_for(lambda: activator.hold.held == 0, limit=2)
            async with client() as session, session.get(url + "/metrics") as reply:
                text = await reply.text()
        return streaming_left, activator.hold.held, \
            int(float(_sample(text, "hybrid_llm_activator_hold_duration_seconds_count", '{outcome="left"}')))

    assert run(scenario(), limit=30) == (0, 0, 1)


def test_past_the_cap_a_request_is_refused_at_once(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[int, str, str, int]:
        backend = FakeOllama()  # never comes up
        settings = fast_settings(backend.url, (instance_id,), hold_seconds=600.0, max_held=2)
        async with serving(settings, RecordingClient(moto_clients[0]), StubCloudWatch()) as (activator, url), \
                client() as session:
            held = [asyncio.ensure_future(session.post(url + "/api/chat", json={"model": "m"})) for _ in range(2)]
            assert await wait_for(lambda: activator.hold.held == 2)
            async with session.post(url + "/api/chat", json={"model": "m"}) as reply:
                result = reply.status, reply.headers.get("Retry-After", ""), await reply.text()
            still = activator.hold.held
            for request in held:
                request.cancel()
        return (*result, still)

    status, retry_after, text, still = run(scenario(), limit=30)
    assert (status, retry_after, still) == (503, "30", 2) and "ACTIVATOR_MAX_HELD=2" in text


class RawOllama:
    """A hand-written HTTP/1.1 server on 127.0.0.1 that answers `GET /api/version`
    and treats each POST as told: `before` resets the connection after the
    headers, before asking for the body (no 100 Continue: Ollama never read it);
    `after` sends 100 Continue, reads the whole body, then resets (Ollama got
    it); `serve` reads the body and answers 200. Counts the bodies it read."""

    def __init__(self, posts: list[str]) -> None:
        self.posts = posts
        self.bodies: list[bytes] = []
        self.server: asyncio.AbstractServer | None = None
        self.url = ""

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, LOOPBACK, 0)
        self.url = f"http://{LOOPBACK}:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    @staticmethod
    def _reset(writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method = lines[0].split()[0]
                headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
                if method == "GET":
                    body = b'{"version":"0.32.15"}'
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                                 + str(len(body)).encode() + b"\r\n\r\n" + body)
                    await writer.drain()
                    continue
                mode = self.posts.pop(0) if self.posts else "serve"
                if mode == "before":
                    self._reset(writer)
                    return
                if headers.get("expect", "").lower() == "100-continue":
                    writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                    await writer.drain()
                self.bodies.append(await reader.readexactly(int(headers["content-length"])))
                if mode == "after":
                    self._reset(writer)
                    return
                body = json.dumps({"response": "hello", "done": True}).encode()
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                             + str(len(body)).encode() + b"\r\n\r\n" + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()


def _one_generate(posts: list[str], moto_clients: tuple[Any, Any]) -> tuple[int, str, list[bytes], list[str]]:
    async def scenario() -> tuple[int, str, list[bytes], list[str]]:
        backend = RawOllama(posts)
        await backend.start()
        ec2 = RecordingClient(moto_clients[0])
        async with serving(fast_settings(backend.url, (ID,)), ec2, StubCloudWatch()) as (_, url), \
                client() as session:
            async with session.post(url + "/api/generate", json=GENERATE) as reply:
                result = reply.status, await reply.text()
        await backend.stop()
        return (*result, backend.bodies, ec2.calls)

    return run(scenario(), limit=30)


def test_a_reset_after_ollama_read_the_body_is_a_502_and_never_sent_again(moto_clients: tuple[Any, Any]) -> None:
    status, text, bodies, calls = _one_generate(["after"], moto_clients)
    assert status == 502 and "not sent again" in text
    assert bodies == [json.dumps(GENERATE).encode()] and calls == []


def test_a_reset_before_ollama_read_the_body_is_replayed_once(moto_clients: tuple[Any, Any]) -> None:
    status, text, bodies, calls = _one_generate(["before"], moto_clients)
    assert (status, json.loads(text)) == (200, {"response": "hello", "done": True})
    assert bodies == [json.dumps(GENERATE).encode()] and calls == []  # read once, and no AWS call
