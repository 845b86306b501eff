"""The whole process: `python -m activator` as a subprocess against moto's
server (AWS_ENDPOINT_URL, fake credentials) and a local fake Ollama, all on
127.0.0.1. A held request starts the instance and is served once the backend
comes up; SIGTERM ends the process with exit code 0."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import boto3
import pytest
import yaml
from aiohttp import web
from moto.server import ThreadedMotoServer

from .fakes import FakeOllama, LOOPBACK, free_port, launch, run, state_of

ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_REGION": "us-east-1"}


@pytest.fixture
def moto_server() -> Iterator[str]:
    port = free_port()
    server = ThreadedMotoServer(ip_address=LOOPBACK, port=port, verbose=False)
    server.start()
    try:
        yield f"http://{LOOPBACK}:{port}"
    finally:
        server.stop()


def test_a_held_request_starts_the_instance_and_is_served(moto_server: str, tmp_path: Path) -> None:
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    instance_id = launch(ec2)
    backend_port = free_port()
    process, port = _start(moto_server, tmp_path, backend_port, instance_id, ACTIVATOR_HOLD_SECONDS="30")
    try:
        status, body, state_when_served = run(_scenario(ec2, instance_id, port, backend_port), limit=45)
    finally:
        code, stderr = _stop(process)
    output = (tmp_path / "stdout").read_text()
    assert (status, body["response"]) == (200, "hello")
    assert state_when_served == "running" == state_of(ec2, instance_id)
    assert code == 0 and "Traceback" not in stderr, stderr
    assert f"worker {instance_id} started" in output and "stopped" in output.splitlines()[-1]


async def _scenario(ec2: Any, instance_id: str, port: int, backend_port: int) -> tuple[int, Any, str]:
    url = f"http://{LOOPBACK}:{port}"
    backend = FakeOllama(backend_port)
    async with aiohttp.ClientSession() as session:
        await _listening(session, url)
        request = asyncio.ensure_future(session.post(url + "/api/generate",
                                                     json={"model": "m", "prompt": "p", "stream": False}))
        for _ in range(400):  # bring "Ollama" up only once the activator has started the instance
            if await asyncio.to_thread(state_of, ec2, instance_id) != "stopped":
                break
            await asyncio.sleep(0.05)
        await backend.start()
        try:
            reply = await request
            state = await asyncio.to_thread(state_of, ec2, instance_id)
            return reply.status, await reply.json(), state
        finally:
            await backend.stop()


def _start(moto_server: str, tmp_path: Path, backend_port: int, instance_id: str, **extra: str) -> tuple[Any, int]:
    """`python -m activator` against moto's server and a backend port on loopback;
    its stdout goes to tmp_path/stdout."""
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ACTIVATOR_", "AWS_")) and k.lower() not in ("http_proxy", "https_proxy")}
    env.update(CREDENTIALS, AWS_ENDPOINT_URL=moto_server, NO_PROXY=LOOPBACK, HOME=str(tmp_path),
               ACTIVATOR_BACKEND=f"http://{LOOPBACK}:{backend_port}", ACTIVATOR_INSTANCE_IDS=instance_id,
               ACTIVATOR_HOST=LOOPBACK, ACTIVATOR_PORT=str(port), ACTIVATOR_WATCH_PODS="false",
               ACTIVATOR_POLL_SECONDS="0.1")
    env.update(extra)
    log = (tmp_path / "stdout").open("w+")
    process = subprocess.Popen([sys.executable, "-m", "activator"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.PIPE, text=True)
    return process, port


def _stop(process: Any) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return code, process.stderr.read() if process.stderr else ""


async def _listening(session: aiohttp.ClientSession, url: str) -> None:
    """The process is listening once /healthz answers."""
    for _ in range(300):
        try:
            async with session.get(url + "/healthz") as reply:
                if reply.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            await asyncio.sleep(0.05)


def _activity_points(moto_server: str, instance_id: str) -> list[float]:
    cloudwatch = boto3.client("cloudwatch", endpoint_url=moto_server, region_name="us-east-1",
                              aws_access_key_id="testing", aws_secret_access_key="testing")
    now = datetime.now(timezone.utc)
    stats = cloudwatch.get_metric_statistics(
        Namespace="HybridLLM", MetricName="Activity", Dimensions=[{"Name": "InstanceId", "Value": instance_id}],
        StartTime=now - timedelta(hours=1), EndTime=now + timedelta(minutes=5), Period=60, Statistics=["Maximum"])
    return [point["Maximum"] for point in stats["Datapoints"]]


def test_reads_never_wake_a_stopped_worker_nor_count_as_work(moto_server: str, tmp_path: Path) -> None:
    """Fault 1 of "Pay only for real work": what chat UIs and uptime checks poll."""
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    instance_id = launch(ec2)
    process, port = _start(moto_server, tmp_path, free_port(), instance_id, ACTIVATOR_MODELS="llama3.2:3b",
                           ACTIVATOR_HOLD_SECONDS="5")

    async def scenario() -> dict[str, int]:
        url = f"http://{LOOPBACK}:{port}"
        statuses = {}
        async with aiohttp.ClientSession() as session:
            await _listening(session, url)
            for _ in range(3):  # a chat UI's page loads and an uptime check
                for path in ("/", "/api/version", "/api/tags", "/api/ps", "/v1/models"):
                    async with session.get(url + path, timeout=aiohttp.ClientTimeout(total=4)) as reply:
                        await reply.read()
                        statuses[path] = reply.status
        return statuses

    try:
        statuses = run(scenario(), limit=45)
    finally:
        code, stderr = _stop(process)
    assert statuses == {"/": 200, "/api/version": 200, "/api/tags": 200, "/api/ps": 200, "/v1/models": 200}
    assert state_of(ec2, instance_id) == "stopped"
    assert _activity_points(moto_server, instance_id) == []
    assert code == 0 and "Traceback" not in stderr, stderr


def test_silent_answers_and_clients_that_hang_up_stop_being_work(moto_server: str, tmp_path: Path) -> None:
    """Fault 4: a stream that goes silent is ended, and a client that leaves ends its request."""
    backend_port = free_port()
    process, port = _start(moto_server, tmp_path, backend_port, "i-0123456789abcdef0",
                           ACTIVATOR_STREAM_IDLE_SECONDS="0.5")

    async def scenario() -> tuple[list[bytes], str, float, float]:
        url = f"http://{LOOPBACK}:{port}"
        backend = FakeOllama(backend_port)
        await backend.start()
        lines: list[bytes] = []
        broke = ""
        try:
            async with aiohttp.ClientSession() as session:
                await _listening(session, url)
                async with session.post(url + "/api/silent", json={"model": "m"},
                                        timeout=aiohttp.ClientTimeout(total=10)) as reply:
                    try:
                        async for line in reply.content:
                            lines.append(line)
                    except aiohttp.ClientPayloadError as err:
                        broke = type(err).__name__
                after_silence = await _in_flight(session, url)
            async with aiohttp.ClientSession() as leaving:
                asyncio.ensure_future(leaving.post(url + "/api/mute", json={"model": "m"}))
                for _ in range(100):
                    if ("POST", "/api/mute") in backend.seen:
                        break
                    await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            async with aiohttp.ClientSession() as session:
                after_hangup = await _in_flight(session, url)
        finally:
            await backend.stop()
        return lines, broke, after_silence, after_hangup

    try:
        lines, broke, after_silence, after_hangup = run(scenario(), limit=45)
    finally:
        code, stderr = _stop(process)
    assert lines == [b'{"response":"a","done":false}\n'] and broke == "ClientPayloadError"
    assert (after_silence, after_hangup) == (0, 0)
    assert code == 0 and "Traceback" not in stderr, stderr


async def _in_flight(session: aiohttp.ClientSession, url: str) -> float:
    async with session.get(url + "/metrics") as reply:
        for line in (await reply.text()).splitlines():
            if line.startswith("hybrid_llm_activator_requests_in_flight "):
                return float(line.split()[-1])
    raise AssertionError("no in-flight gauge in /metrics")


def test_a_worker_stopped_mid_hold_is_restarted_and_requests_wait_for_their_model(
        moto_server: str, tmp_path: Path) -> None:
    """Issue 16, items 4 and 5, through the whole process: the worker is stopped right
    after the activator started it (a spot-free stop: a person, maxRunHours, the
    scaler racing the hold); the held request starts it again, then waits until
    the model it names has been pulled, and only then reaches Ollama, once."""
    ec2 = boto3.client("ec2", endpoint_url=moto_server, region_name="us-east-1",
                       aws_access_key_id="testing", aws_secret_access_key="testing")
    instance_id = launch(ec2)
    backend_port = free_port()
    process, port = _start(moto_server, tmp_path, backend_port, instance_id, ACTIVATOR_HOLD_SECONDS="30",
                           ACTIVATOR_RESTART_CHECK_SECONDS="0.2", ACTIVATOR_MODELS="llama3.2:3b,qwen2.5")

    async def scenario() -> tuple[int, bool, int]:
        url = f"http://{LOOPBACK}:{port}"
        backend = FakeOllama(backend_port)
        backend.tags = {"models": []}  # Ollama up, nothing pulled yet
        async with aiohttp.ClientSession() as session:
            await _listening(session, url)
            request = asyncio.ensure_future(session.post(url + "/api/generate", json={"model": "qwen2.5"}))
            await _until_state(ec2, instance_id, ("pending", "running"))
            await asyncio.to_thread(ec2.stop_instances, InstanceIds=[instance_id])
            await _until_state(ec2, instance_id, ("pending", "running"))  # started again by the hold
            await backend.start()
            await asyncio.sleep(1.0)
            waited_for_model = not request.done()
            backend.tags = {"models": [{"name": "qwen2.5:latest", "model": "qwen2.5:latest"}]}
            try:
                reply = await request
                status = reply.status
                reply.release()
            finally:
                await backend.stop()
        return status, waited_for_model, backend.seen.count(("POST", "/api/generate"))

    try:
        status, waited_for_model, generates = run(scenario(), limit=45)
    finally:
        code, stderr = _stop(process)
    output = (tmp_path / "stdout").read_text()
    assert (status, waited_for_model, generates) == (200, True, 1)
    assert "stopped during the hold: starting it again (1 of 2)" in output
    assert code == 0 and "Traceback" not in stderr, stderr


async def _until_state(ec2: Any, instance_id: str, states: tuple[str, ...]) -> None:
    for _ in range(400):
        if await asyncio.to_thread(state_of, ec2, instance_id) in states:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{instance_id} never reached {states}")


def test_a_pod_watch_that_keeps_dying_fails_healthz(moto_server: str, tmp_path: Path) -> None:
    """Issue 16, item 6: kubernetes_asyncio raises a plain Exception for a malformed
    watch line, which ended the watch for good while /healthz said 200. The
    supervisor restarts it; when it cannot recover, /healthz fails."""
    api_port = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "test",
        "clusters": [{"name": "test", "cluster": {"server": f"http://{LOOPBACK}:{api_port}"}}],
        "users": [{"name": "test", "user": {"token": "t"}}],
        "contexts": [{"name": "test", "context": {"cluster": "test", "user": "test"}}]}))
    process, port = _start(moto_server, tmp_path, free_port(), "i-0123456789abcdef0",
                           ACTIVATOR_WATCH_PODS="true", KUBECONFIG=str(kubeconfig))

    async def scenario() -> tuple[int, int, str, int]:
        watches = [0]

        async def pods(request: web.Request) -> web.StreamResponse:
            if request.query.get("watch", "").lower() in ("true", "1"):
                watches[0] += 1
                response = web.StreamResponse()
                await response.prepare(request)
                await response.write(b"{this is not a watch event\n")
                await response.write_eof()
                return response
            return web.json_response({"kind": "PodList", "apiVersion": "v1",
                                      "metadata": {"resourceVersion": "7"}, "items": []})

        app = web.Application()
        app.router.add_get("/api/v1/pods", pods)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, LOOPBACK, api_port).start()
        url = f"http://{LOOPBACK}:{port}"
        try:
            async with aiohttp.ClientSession() as session:
                await _listening(session, url)
                async with session.get(url + "/healthz") as reply:
                    first = reply.status
                for _ in range(600):  # the supervisor's backoff: 1 + 2 + 4 + 8 s
                    async with session.get(url + "/healthz") as reply:
                        if reply.status != 200:
                            return first, reply.status, await reply.text(), watches[0]
                    await asyncio.sleep(0.1)
                return first, 200, "", watches[0]
        finally:
            await runner.cleanup()

    try:
        first, last, text, watches = run(scenario(), limit=50)
    finally:
        code, stderr = _stop(process)
    assert (first, last) == (200, 503) and "pod watch" in text
    assert watches == 5
    assert code == 0 and "Traceback" not in stderr, stderr
