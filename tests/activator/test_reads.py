"""Reads of state never wake a worker and are never work (DESIGN decision 12):
answered from Ollama's last answer or from what the activator knows while the
worker sleeps, in shapes the official `ollama` and `openai` clients parse; and
the explicit wake. In-process against moto and a local stand-in Ollama."""

from __future__ import annotations

import asyncio
import gzip
import json
from typing import Any

import ollama
import openai

from .fakes import SHOW, TAGS, FakeOllama, RecordingClient, StubCloudWatch, fast_settings, launch, run, state_of
from .test_proxy import _sample, client, serving, wait_for, when_started

MODELS = ("llama3.2:3b", "qwen2.5")


def test_reads_on_a_sleeping_worker_wake_nothing_and_are_not_work(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])
    cloudwatch = StubCloudWatch()

    async def scenario() -> tuple[dict[str, Any], list[str], str]:
        backend = FakeOllama()  # the worker is stopped: nothing listens
        ec2 = RecordingClient(moto_clients[0])
        settings = fast_settings(backend.url, (instance_id,), models=MODELS, ollama_version="0.32.15")
        answers: dict[str, Any] = {}
        async with serving(settings, ec2, cloudwatch) as (activator, url), client() as session:
            for method, path in [("GET", "/"), ("HEAD", "/"), ("GET", "/api/version"), ("GET", "/api/tags"),
                                 ("HEAD", "/api/tags"), ("GET", "/api/ps"), ("GET", "/v1/models"),
                                 ("GET", "/v1/models/qwen2.5"), ("GET", "/v1/models/mistral"),
                                 ("HEAD", "/api/blobs/sha256:" + "0" * 64)]:
                async with session.request(method, url + path) as reply:
                    answers[f"{method} {path}"] = (reply.status, reply.headers.get("Retry-After"),
                                                   reply.headers.get("Content-Type"), await reply.read())
            async with session.post(url + "/api/show", json={"model": "llama3.2:3b"}) as reply:
                answers["POST /api/show"] = (reply.status, reply.headers.get("Retry-After"), None, await reply.read())
            async with session.get(url + "/metrics") as reply:
                metrics = await reply.text()
        return answers, ec2.calls, metrics

    answers, calls, metrics = run(scenario())
    assert calls == [] and cloudwatch.calls == []
    assert state_of(moto_clients[0], instance_id) == "stopped"
    assert answers["GET /"][::3] == (200, b"Ollama is running")
    assert answers["HEAD /"][0] == 200 and answers["HEAD /"][3] == b""
    assert json.loads(answers["GET /api/version"][3]) == {"version": "0.32.15"}
    assert [m["name"] for m in json.loads(answers["GET /api/tags"][3])["models"]] == \
        ["llama3.2:3b", "qwen2.5:latest"]
    assert answers["HEAD /api/tags"][0] == 200
    assert json.loads(answers["GET /api/ps"][3]) == {"models": []}
    listing = json.loads(answers["GET /v1/models"][3])
    assert listing["object"] == "list" and [(m["id"], m["owned_by"]) for m in listing["data"]] == \
        [("llama3.2:3b", "library"), ("qwen2.5:latest", "library")]
    assert json.loads(answers["GET /v1/models/qwen2.5"][3])["id"] == "qwen2.5"
    # What it cannot know is a 503 with Retry-After, never a guess.
    for unknown in ("GET /v1/models/mistral", "HEAD /api/blobs/sha256:" + "0" * 64, "POST /api/show"):
        status, retry_after, _, _ = answers[unknown]
        assert (status, retry_after) == (503, "30"), unknown
    assert float(_sample(metrics, "hybrid_llm_activator_answered_while_asleep_total", '{source="known"}')) == 8
    assert float(_sample(metrics, "hybrid_llm_activator_answered_while_asleep_total", '{source="none"}')) == 3


def test_the_official_clients_parse_the_answers_of_a_sleeping_worker(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])

    async def scenario() -> tuple[list[str], int, list[str], str, list[str]]:
        backend = FakeOllama()
        ec2 = RecordingClient(moto_clients[0])
        settings = fast_settings(backend.url, (instance_id,), models=MODELS)
        async with serving(settings, ec2, StubCloudWatch()) as (_, url):
            native = ollama.AsyncClient(host=url)
            listed = [m.model for m in (await native.list()).models]
            loaded = len((await native.ps()).models)
            compatible = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
            ids = [m.id async for m in compatible.models.list()]
            try:
                await native.show("llama3.2:3b")
                refused = "answered"
            except ollama.ResponseError as err:
                refused = f"{err.status_code}"
            await compatible.close()
        return listed, loaded, ids, refused, ec2.calls

    listed, loaded, ids, refused, calls = run(scenario())
    assert listed == ids == ["llama3.2:3b", "qwen2.5:latest"]
    assert loaded == 0 and refused == "503" and calls == []


def test_a_sleeping_worker_answers_reads_from_ollamas_last_answer_uncompressed(moto_clients: tuple[Any, Any]) -> None:
    async def scenario() -> tuple[Any, ...]:
        backend = FakeOllama()
        await backend.start()
        ec2 = RecordingClient(moto_clients[0])
        settings = fast_settings(backend.url, ("i-0123456789abcdef0",), models=("other:1b",))
        async with serving(settings, ec2, StubCloudWatch()) as (activator, url), client() as session:
            async with session.get(url + "/api/tags", headers={"Accept-Encoding": "gzip"}) as reply:
                awake_tags = (reply.headers.get("Content-Encoding"), json.loads(await reply.read()))
            async with session.post(url + "/api/show", json={"model": "llama3.2:3b"}) as reply:
                awake_show = await reply.json()
            await backend.stop()
            assert await wait_for(lambda: not activator.awake.awake)
            asleep = {}
            for accept in ("gzip", None):
                headers = {"Accept-Encoding": accept} if accept else {"Accept-Encoding": "identity"}
                async with session.get(url + "/api/tags", headers=headers) as reply:
                    asleep[accept] = (reply.status, reply.headers.get("Content-Encoding"),
                                      reply.headers.get("X-Hybrid-LLM-Answer"), await reply.read())
            async with session.post(url + "/api/show", json={"model": "llama3.2:3b"}) as reply:
                cached_show = (reply.status, await reply.json())
            async with session.post(url + "/api/show", json={"model": "llama3.2:3b", "verbose": True}) as reply:
                other_show = reply.status
        return awake_tags, awake_show, asleep, cached_show, other_show, ec2.calls, backend.seen

    awake_tags, awake_show, asleep, cached_show, other_show, calls, seen = run(scenario())
    # The activator asked Ollama for no compression, so the answer it kept is plain JSON.
    assert awake_tags == (None, TAGS) and awake_show == SHOW
    for accept, (status, encoding, source, body) in asleep.items():
        assert (status, encoding) == (200, None), accept
        assert source.startswith("activator (cache") and json.loads(body) == TAGS
        assert not body.startswith(gzip.compress(b"")[:2])
    assert cached_show == (200, SHOW) and other_show == 503 and calls == []


def test_an_explicit_wake_starts_the_worker_and_is_work_only_until_it_started(moto_clients: tuple[Any, Any]) -> None:
    instance_id = launch(moto_clients[0])
    cloudwatch = StubCloudWatch()

    async def scenario() -> tuple[Any, ...]:
        backend = FakeOllama()
        ec2 = RecordingClient(moto_clients[0], on_start=when_started(backend, 0.3))
        async with serving(fast_settings(backend.url, (instance_id,)), ec2, cloudwatch) as (activator, url), \
                client() as session:
            async with session.post(url + "/hybrid-llm/wake") as reply:
                first = (reply.status, await reply.json())
            in_flight_after = activator.activity.in_flight
            assert await wait_for(lambda: activator.awake.awake)
            async with session.post(url + "/hybrid-llm/wake") as reply:
                second = (reply.status, await reply.json())
            async with session.get(url + "/metrics") as reply:
                metrics = await reply.text()
        await backend.stop()
        return first, in_flight_after, second, ec2.calls, metrics

    first, in_flight_after, second, calls, metrics = run(scenario())
    assert first[0] == 202 and first[1]["worker"] == instance_id and first[1]["started"] is True
    assert first[1]["state"] in ("pending", "running")
    assert in_flight_after == 0 and len(cloudwatch.calls) == 1
    assert second == (200, {"worker": instance_id, "state": "running", "ollama": "awake", "started": False})
    assert calls == ["describe_instances", "start_instances"]
    assert float(_sample(metrics, "hybrid_llm_activator_worker_starts_total", '{result="started"}')) == 1


def test_an_explicit_wake_refused_by_aws_says_why(moto_clients: tuple[Any, Any]) -> None:
    async def scenario() -> tuple[int, str, Any]:
        settings = fast_settings(FakeOllama().url, ("i-0123456789abcdef0",))
        async with serving(settings, moto_clients[0], StubCloudWatch()) as (_, url), client() as session:
            async with session.post(url + "/hybrid-llm/wake") as reply:
                return reply.status, reply.headers.get("Retry-After", ""), await reply.json()

    status, retry_after, body = run(scenario())
    assert (status, retry_after) == (503, "300") and "InvalidInstanceID.NotFound" in body["error"]


def test_a_long_answer_is_kept_whole(moto_clients: tuple[Any, Any]) -> None:
    async def scenario() -> tuple[bytes, bytes, str]:
        backend = FakeOllama()
        await backend.start()
        settings = fast_settings(backend.url, ("i-0123456789abcdef0",))
        async with serving(settings, moto_clients[0], StubCloudWatch()) as (activator, url), client() as session:
            async with session.get(url + "/api/big") as reply:
                awake = await reply.read()
            await backend.stop()
            assert await wait_for(lambda: not activator.awake.awake)
            async with session.get(url + "/api/big") as reply:
                asleep, source = await reply.read(), reply.headers.get("X-Hybrid-LLM-Answer", "")
        return awake, asleep, source

    awake, asleep, source = run(scenario())
    assert len(json.loads(awake)["parts"]) == 2000
    assert asleep == awake and source.startswith("activator (cache")


def test_a_read_that_breaks_mid_answer_is_answered_by_the_activator(moto_clients: tuple[Any, Any]) -> None:
    async def scenario() -> tuple[int, str, bool]:
        backend = FakeOllama()
        await backend.start()
        settings = fast_settings(backend.url, ("i-0123456789abcdef0",))
        async with serving(settings, moto_clients[0], StubCloudWatch()) as (activator, url), client() as session:
            async with session.get(url + "/api/torn") as reply:
                result = reply.status, reply.headers.get("X-Hybrid-LLM-Answer", "")
            awake = activator.awake.awake
        await backend.stop()
        return (*result, awake)

    status, source, awake = run(scenario())
    # No 500: the activator says what it can (here: nothing true, so 503 + Retry-After).
    assert status == 503 and source.startswith("activator (none") and awake


def test_an_explicit_wake_of_a_running_worker_is_no_work(moto_clients: tuple[Any, Any]) -> None:
    """Ollama down on a running worker (crash-looping, say): a keep-warm call must not
    keep it billing."""
    instance_id = launch(moto_clients[0], state="running")
    cloudwatch = StubCloudWatch()

    async def scenario() -> tuple[int, Any, list[str]]:
        ec2 = RecordingClient(moto_clients[0])
        async with serving(fast_settings(FakeOllama().url, (instance_id,)), ec2, cloudwatch) as (_, url), \
                client() as session:
            async with session.post(url + "/hybrid-llm/wake") as reply:
                result = reply.status, await reply.json()
            await asyncio.sleep(0.2)
        return (*result, ec2.calls)

    status, body, calls = run(scenario())
    assert status == 202 and body["state"] == "running" and body["started"] is False
    assert calls == ["describe_instances"] and cloudwatch.calls == []
