"""Stand-ins for the activator's tests: a local Ollama on 127.0.0.1, recording
AWS clients, and moto helpers."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import threading
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Optional

from aiohttp import web

from activator.settings import Settings

AMI = "ami-12c6146b"  # one of moto's built-in images
# Ollama's own shapes (api/types.go, v0.32.15), as a running worker answers.
TAGS = {"models": [{"name": "llama3.2:3b", "model": "llama3.2:3b", "modified_at": "2026-11-01T10:00:00Z",
                    "size": 2019393189, "digest": "a80c4f17acd5",
                    "details": {"parent_model": "", "format": "gguf", "family": "llama", "families": ["llama"],
                                "parameter_size": "3.2B", "quantization_level": "Q4_K_M"}}]}
SHOW = {"modelfile": "FROM llama3.2:3b", "parameters": "", "template": "{{ .Prompt }}",
        "details": TAGS["models"][0]["details"], "model_info": {"general.architecture": "llama"},
        "capabilities": ["completion"], "modified_at": "2026-11-01T10:00:00Z"}
LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def fast_settings(backend: str, instance_ids: tuple[str, ...], **overrides: Any) -> Settings:
    """Short holds and polls so the suite runs in seconds; loopback only."""
    base = Settings(backend=backend, instance_ids=instance_ids, host=LOOPBACK, port=0,
                    hold_seconds=10.0, watch_pods=False, poll_seconds=0.05, connect_timeout=1.0,
                    aws_backoff_base=0.01, aws_backoff_cap=0.04, aws_poll_seconds=0.02,
                    shutdown_seconds=1.0, liveness_seconds=0.2)
    return replace(base, **overrides)


def launch(ec2: Any, state: str = "stopped") -> str:
    instance_id = ec2.run_instances(ImageId=AMI, MinCount=1, MaxCount=1,
                                    InstanceType="g4dn.xlarge")["Instances"][0]["InstanceId"]
    if state == "stopped":
        ec2.stop_instances(InstanceIds=[instance_id])
    return instance_id


def state_of(ec2: Any, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


class RecordingClient:
    """Wraps a boto3 client: records each operation called, runs a hook after
    StartInstances (in the calling thread)."""

    def __init__(self, client: Any, on_start: Optional[Callable[[], None]] = None) -> None:
        self._client = client
        self._on_start = on_start
        self._lock = threading.Lock()
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(**kwargs: Any) -> Any:
            with self._lock:
                self.calls.append(name)
            reply = method(**kwargs)
            if name == "start_instances" and self._on_start is not None:
                self._on_start()
            return reply

        return call

    def count(self, name: str) -> int:
        return self.calls.count(name)


@dataclass
class StubCloudWatch:
    """Records PutMetricData; fails when told to."""
    fail: bool = False
    calls: list[dict[str, Any]] = field(default_factory=list)

    def put_metric_data(self, **kwargs: Any) -> dict[str, Any]:
        if self.fail:
            raise RuntimeError("no route to monitoring")
        self.calls.append(kwargs)
        return {}


class FakeOllama:
    """Ollama's API on 127.0.0.1 as far as the proxy needs it.

    Streams run in lockstep: after each chunk but the last, the server waits
    (up to 5 s) for the client to `ack`, and records whether the ack came. A
    proxy that buffered the answer would keep every ack from coming."""

    def __init__(self, port: Optional[int] = None) -> None:
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.gateway_only = False
        """Answer 502 everywhere, as an intermediate does while its backend is gone."""
        self.seen: list[tuple[str, str]] = []
        self.acks: asyncio.Queue[None] = asyncio.Queue()
        self.acked: list[bool] = []
        self.before_ack: Optional[Callable[[], Any]] = None
        self.tags: dict[str, Any] = TAGS
        """What /api/tags lists: the models on the worker."""
        self._runner: Optional[web.AppRunner] = None

    def ack(self) -> None:
        self.acks.put_nowait(None)

    async def start(self) -> None:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, LOOPBACK, self.port).start()

    async def start_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.seen.append((request.method, request.raw_path))
        if self.gateway_only:
            return web.Response(status=502, text="bad gateway")
        path = request.path
        if path == "/api/version":
            return web.json_response({"version": "0.32.0"})
        if path == "/api/tags":
            return self._compressible(request, self.tags)
        if path == "/api/show":
            payload = await request.json()
            if payload.get("model") != "llama3.2:3b":
                return web.json_response({"error": f"model '{payload.get('model')}' not found"}, status=404)
            return web.json_response(SHOW)
        if path == "/api/big":  # an answer that arrives in many chunks
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            await response.write(b'{"parts":[')
            for index in range(2000):
                await response.write(json.dumps({"n": index, "text": "x" * 200}).encode() +
                                     (b"," if index < 1999 else b""))
            await response.write(b"]}")
            await response.write_eof()
            return response
        if path == "/api/torn":  # promises 100 bytes, sends 10, and the connection drops
            response = web.StreamResponse(headers={"Content-Type": "application/json", "Content-Length": "100"})
            await response.prepare(request)
            await response.write(b'{"models":')
            if request.transport is not None:
                request.transport.close()
            return response
        if path == "/api/silent":  # one line, then nothing: a worker that went away mid-answer
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            await response.write(b'{"response":"a","done":false}\n')
            await asyncio.sleep(3600)
        if path == "/api/mute":  # nothing at all, not even headers
            await asyncio.sleep(3600)
        if path == "/api/busy":
            return web.json_response({"error": "server busy, please try again"}, status=503)
        if path == "/api/generate":
            payload = await request.json()
            if not payload.get("stream", True):
                return web.json_response({"model": payload["model"], "response": "hello", "done": True})
            return await self._lockstep(request, "application/x-ndjson",
                                        [json.dumps({"response": w, "done": False}) + "\n"
                                         for w in ("a", "b", "c")] + ['{"done":true}\n'])
        if path == "/v1/chat/completions":
            return await self._lockstep(request, "text/event-stream",
                                        [f"data: {json.dumps({'choices': [{'delta': {'content': w}}]})}\n\n"
                                         for w in ("a", "b")] + ["data: [DONE]\n\n"])
        body = await request.read()
        return web.json_response({
            "method": request.method, "raw_path": request.raw_path, "query": request.query_string,
            "headers": [[k, v] for k, v in request.headers.items()],
            "length": len(body), "sha256": hashlib.sha256(body).hexdigest(),
        }, headers={"X-Backend": "fake-ollama", "Set-Cookie": "a=1"})

    @staticmethod
    def _compressible(request: web.Request, payload: Any) -> web.Response:
        """gzip when asked, as a compressing proxy in front of Ollama would."""
        response = web.json_response(payload)
        if "gzip" in request.headers.get("Accept-Encoding", ""):
            response.enable_compression(web.ContentCoding.gzip)
        return response

    async def _lockstep(self, request: web.Request, content_type: str, chunks: list[str]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": content_type})
        await response.prepare(request)
        for index, chunk in enumerate(chunks):
            await response.write(chunk.encode())
            if index < len(chunks) - 1:
                try:
                    await asyncio.wait_for(self.acks.get(), 5)
                    self.acked.append(True)
                except asyncio.TimeoutError:
                    self.acked.append(False)
        await response.write_eof()
        return response


def run(coro: Any, limit: float = 60) -> Any:
    """Run one scenario; a scenario that hangs fails instead of hanging the suite."""
    return asyncio.run(asyncio.wait_for(coro, limit))
