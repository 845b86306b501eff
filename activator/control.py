"""The activator's own endpoints, beside Ollama's API: `GET /healthz`,
`GET /metrics` and `POST /hybrid-llm/wake` (a prefix Ollama does not use).

`/healthz` answers 200 whatever the worker's state, and 503 once a background
loop has failed for good (supervisor.py), so that Kubernetes restarts the pod.

The explicit wake is for a person or an automation that wants the GPU warm
before the first prompt (reads never wake it, DESIGN decision 12). It starts the
proxy's worker and answers at once with its state: 200 when Ollama already
answers, 202 while the worker comes up, 503 with the AWS reason when the start
is refused for good. A start it makes counts as a minute of work (the scaler's
grace from "ready" covers the boot); on a worker that was running already it
counts as nothing, so calling it never keeps an idle or broken worker up.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from activator.activity import Activity
from activator.awake import Awake
from activator.metrics import Metrics
from activator.settings import Settings
from activator.supervisor import Supervisor
from activator.waker import Waker, WakeResult

WAKE_PATH = "/hybrid-llm/wake"
WAKE_ANSWER_SECONDS = 5.0
"""How long the wake waits for EC2's answer before it answers 202 `starting`."""


def _count_start(task: "asyncio.Task[WakeResult]", activity: Activity) -> None:
    """A start the wake made is a minute of work; a worker that was running already
    (Ollama down on it, say) gets none, so a keep-warm call never keeps a broken
    worker billing."""
    if not task.cancelled() and task.exception() is None and task.result().started:
        activity.begin()
        activity.end()


def routes(settings: Settings, waker: Waker, awake: Awake, activity: Activity,
           metrics: Metrics, supervisor: Supervisor) -> web.RouteTableDef:
    table = web.RouteTableDef()

    @table.get("/healthz")
    async def healthz(request: web.Request) -> web.Response:
        if not supervisor.healthy:
            failed = "; ".join(f"{name}: {error}" for name, error in sorted(supervisor.failed.items()))
            return web.Response(status=503, text=f"background loop failed for good: {failed}\n")
        return web.Response(text="ok\n")

    table.get("/metrics")(metrics.handle)

    @table.post(WAKE_PATH)
    async def wake(request: web.Request) -> web.Response:
        worker = waker.instance_id
        if awake.awake:
            return web.json_response({"worker": worker, "state": "running", "ollama": "awake", "started": False})
        task = waker.wake("explicit wake")
        task.add_done_callback(lambda done: _count_start(done, activity))
        await asyncio.wait({task}, timeout=WAKE_ANSWER_SECONDS)
        if not task.done():
            return web.json_response({"worker": worker, "state": waker.last_state or "starting",
                                      "ollama": "asleep", "started": False}, status=202)
        result = task.result()
        if result.failure is not None and not result.failure.retryable:
            return web.json_response({"worker": worker, "state": result.state, "ollama": "asleep",
                                      "error": result.failure.reason(worker)}, status=503,
                                     headers={"Retry-After": str(settings.failed_retry_after_seconds)})
        return web.json_response({"worker": worker, "state": result.state, "ollama": "asleep",
                                  "started": result.started}, status=202)

    return table
