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
from pathlib import Path
from typing import Any, Iterator

import aiohttp
import boto3
import pytest
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
    port = free_port()
    backend_port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ACTIVATOR_", "AWS_")) and k.lower() not in ("http_proxy", "https_proxy")}
    env.update(CREDENTIALS, AWS_ENDPOINT_URL=moto_server, NO_PROXY=LOOPBACK, HOME=str(tmp_path),
               ACTIVATOR_BACKEND=f"http://{LOOPBACK}:{backend_port}", ACTIVATOR_INSTANCE_IDS=instance_id,
               ACTIVATOR_HOST=LOOPBACK, ACTIVATOR_PORT=str(port), ACTIVATOR_WATCH_PODS="false",
               ACTIVATOR_HOLD_SECONDS="30", ACTIVATOR_POLL_SECONDS="0.1")
    log = (tmp_path / "stdout").open("w+")
    process = subprocess.Popen([sys.executable, "-m", "activator"], cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.PIPE, text=True)
    try:
        status, body, state_when_served = run(_scenario(ec2, instance_id, port, backend_port), limit=45)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        stderr = process.stderr.read() if process.stderr else ""
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    log.seek(0)
    output = log.read()
    assert (status, body["response"]) == (200, "hello")
    assert state_when_served == "running" == state_of(ec2, instance_id)
    assert code == 0 and "Traceback" not in stderr, stderr
    assert f"worker {instance_id} started" in output and "stopped" in output.splitlines()[-1]


async def _scenario(ec2: Any, instance_id: str, port: int, backend_port: int) -> tuple[int, Any, str]:
    url = f"http://{LOOPBACK}:{port}"
    backend = FakeOllama(backend_port)
    async with aiohttp.ClientSession() as session:
        for _ in range(300):  # the process is listening once /healthz answers
            try:
                async with session.get(url + "/healthz") as reply:
                    if reply.status == 200:
                        break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
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
