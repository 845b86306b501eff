"""Holding requests while the proxy's worker comes up.

All held requests share one task: it asks the waker to start the worker (one
start however many requests wait), then probes Ollama every `poll_seconds` until
it answers. Each request waits on that task with its own deadline (the moment
its hold began plus `hold_seconds`), so a request is never cut before its hold
ends, and each new request extends the task's deadline. The answer is a
`Verdict`: ready (replay the request) or a one-line reason for a 503.

A worker that stops while requests wait (a spot interruption, `maxRunHours`, a
person, the scaler racing the hold) is seen within `restart_check_seconds` and
started again, at most `max_restarts` times a hold; never one that EC2 stopped for
a spot interruption or that the scaler stopped because its Ollama never answered
(waker.py), which answers the held requests at once with that reason.

At most `max_held` requests wait at once; one more gets its 503 at once. A held
request is not work (activity.py): it never keeps a running worker alive, so a
worker whose Ollama never answers is still stopped by the scaler. A client that
hangs up leaves the hold at once (the server cancels its handler).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Awaitable, Callable, Optional

from activator.metrics import Metrics
from activator.present import Presence
from activator.settings import Settings
from activator.waker import Waker

log = logging.getLogger("activator.hold")


@dataclass(frozen=True)
class Verdict:
    ready: bool
    reason: str = ""
    """One line for the 503 body when not ready."""
    retry_after: int = 0


class Hold:
    def __init__(self, settings: Settings, waker: Waker, probe: Callable[[], Awaitable[bool]], *,
                 clock: Callable[[], float] = time.monotonic, metrics: Optional[Metrics] = None,
                 presence: Optional[Presence] = None) -> None:
        self._settings = settings
        self._waker = waker
        self._probe = probe
        self._clock = clock
        self._metrics = metrics
        self._presence = presence
        self._task: Optional[asyncio.Task[Verdict]] = None
        self._deadline = 0.0
        self._closing = asyncio.Event()
        self.held = 0
        """Requests waiting right now."""

    def deadline(self) -> float:
        """When a hold starting now must end."""
        return self._clock() + self._settings.hold_seconds

    async def wait(self, deadline: float, model: Optional[str] = None) -> Verdict:
        """Wait, at most until `deadline`, for the backend to be ready and, for a
        request naming one of the configured `model`s, for that model to be there
        (present.py): still held, capped, counted and answered at shutdown."""
        if self._closing.is_set():
            return self._shutting_down()
        if self.held >= self._settings.max_held:
            return Verdict(False, f"{self.held} requests are held already (ACTIVATOR_MAX_HELD="
                                  f"{self._settings.max_held}); try again shortly",
                           self._settings.retry_after_seconds)
        self._deadline = max(self._deadline, deadline)
        self._waker.extend(deadline)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        self.held += 1
        began = self._clock()
        verdict: Optional[Verdict] = None
        try:
            verdict = await asyncio.wait_for(asyncio.shield(self._task), max(0.0, deadline - self._clock()))
            if verdict.ready and self._presence is not None and self._presence.must_wait_for(model):
                verdict = await self._until_present(str(model), deadline)
        except asyncio.TimeoutError:
            verdict = self._ran_out()
        finally:
            self.held -= 1
            if self._metrics is not None:
                outcome = "left" if verdict is None else "released" if verdict.ready else "unavailable"
                self._metrics.hold_seconds.labels(outcome).observe(self._clock() - began)
        return verdict

    async def _until_present(self, model: str, deadline: float) -> Verdict:
        assert self._presence is not None
        arrived = asyncio.ensure_future(self._presence.wait(model, deadline))
        closing = asyncio.ensure_future(self._closing.wait())
        try:
            await asyncio.wait({arrived, closing}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (arrived, closing):
                task.cancel()
        if not arrived.done() or arrived.cancelled():
            return self._shutting_down()
        if arrived.result():
            return Verdict(True)
        return Verdict(False, f"Ollama answers, but {model} did not arrive on the worker within the "
                              f"{self._settings.hold_seconds:g}s hold", self._settings.retry_after_seconds)

    def close(self) -> None:
        """Shutting down: every held request gets its 503 now."""
        self._closing.set()

    async def _run(self) -> Verdict:
        wake = self._waker.wake("held request")
        began = datetime.now(timezone.utc)
        restarts = 0
        next_look = self._clock() + self._settings.restart_check_seconds
        try:
            while not self._closing.is_set():
                if await self._probe():
                    log.info("backend ready; releasing %d held request(s)", self.held)
                    return Verdict(True)
                if wake.done() and wake.result().failure is None and self._clock() >= next_look:
                    # Started, yet not up: a spot interruption, maxRunHours, a person or
                    # the scaler may have stopped it since. Look, and start it again.
                    next_look = self._clock() + self._settings.restart_check_seconds
                    if await self._stopped_since():
                        if restarts >= self._settings.max_restarts:
                            return Verdict(False, f"worker {self._waker.instance_id} stopped again during the "
                                                  f"hold after {restarts} restart(s); not starting it again",
                                           self._settings.retry_after_seconds)
                        restarts += 1
                        log.warning("worker %s stopped during the hold: starting it again (%d of %d)",
                                    self._waker.instance_id, restarts, self._settings.max_restarts)
                        wake = self._waker.wake("held request, worker stopped during the hold",
                                                restart_since=began)
                if wake.done():
                    failure = wake.result().failure
                    if failure is not None and not failure.retryable:
                        return Verdict(False, failure.reason(self._waker.instance_id),
                                       self._settings.failed_retry_after_seconds)
                    if failure is not None and self._clock() < self._deadline and not self._waker.busy:
                        # The waker gave up before newer demand extended its deadline.
                        wake = self._waker.wake("held request")
                if self._clock() >= self._deadline:
                    return self._ran_out()
                try:
                    await asyncio.wait_for(self._closing.wait(), self._settings.poll_seconds)
                except asyncio.TimeoutError:
                    pass
            return self._shutting_down()
        except Exception as err:  # a bug must still give held requests an answer
            log.exception("hold failed")
            return Verdict(False, f"activator error while holding: {type(err).__name__}",
                           self._settings.retry_after_seconds)

    async def _stopped_since(self) -> bool:
        """Whether the worker is stopping or stopped now (one DescribeInstances)."""
        try:
            instance = await self._waker.describe()
        except Exception as err:  # a failed look is no reason to give up the hold
            log.warning("worker %s: could not read its state during the hold (%s)", self._waker.instance_id,
                        type(err).__name__)
            return False
        return instance["State"]["Name"] in ("stopping", "stopped")

    def _ran_out(self) -> Verdict:
        waker, hold = self._waker, self._settings.hold_seconds
        failure = waker.last_failure
        if failure is not None:
            reason = (f"worker {waker.instance_id} not ready after the {hold:g}s hold; "
                      f"last AWS error {failure.code}: {failure.message}")
        else:
            reason = (f"worker {waker.instance_id} (last seen {waker.last_state or 'starting'}) "
                      f"did not bring Ollama up within the {hold:g}s hold")
        return Verdict(False, reason, self._settings.retry_after_seconds)

    def _shutting_down(self) -> Verdict:
        return Verdict(False, "activator shutting down", self._settings.retry_after_seconds)
