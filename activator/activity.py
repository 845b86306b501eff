"""Telling the scaler that the proxy's worker has work (DESIGN decision 6).

Work is a GPU request that Ollama is answering through this activator, from the
moment it is sent until its answer ends or its client hangs up; and an explicit
wake until the worker has started. Reads answered from the cache, requests
waiting in a hold, and a model Ollama merely keeps loaded are not work.

Each minute in which anything was in flight gets one `HybridLLM/Activity` point,
stamped with the start of that minute (so a point published late still lands in
the minute it describes) and valued with the count in flight when it is sent:
the first work of a minute is published at once, a stream that lasts an hour
once a minute (the scaler only asks whether a minute was above 0). Nothing
is published for an idle minute (missing data is idle to the scaler). A failed
publish is logged and never touches a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from datetime import datetime, timezone
from typing import Any, Callable, Optional

from botocore.config import Config

from activator.settings import Settings

log = logging.getLogger("activator.activity")

CLOUDWATCH_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 3})
MINUTE = 60


def minute_of(moment: float) -> int:
    """The start (unix seconds) of the minute `moment` falls in."""
    return int(moment // MINUTE) * MINUTE


class Activity:
    def __init__(self, cloudwatch: Any, settings: Settings, *,
                 clock: Callable[[], float] = time.time) -> None:
        self._cloudwatch = cloudwatch
        self._settings = settings
        self._clock = clock
        self._in_flight = 0
        self._peaks: dict[int, int] = {}
        """Minute start -> the most in flight in it, for this minute and unpublished ones."""
        self._published: set[int] = set()
        self._changed = asyncio.Event()
        self.published: deque[tuple[int, int]] = deque(maxlen=100)
        """(minute start, value) of the latest points published, oldest first."""

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def begin(self) -> None:
        self._in_flight += 1
        self._mark()

    def end(self) -> None:
        self._in_flight -= 1

    def _mark(self) -> None:
        minute = minute_of(self._clock())
        self._peaks[minute] = max(self._peaks.get(minute, 0), self._in_flight)
        if minute not in self._published:
            self._changed.set()

    async def run(self) -> None:
        while True:
            # Cleared before looking, so work that begins during a publish wakes the next turn.
            self._changed.clear()
            if self._in_flight:
                self._mark()
            due = {m: v for m, v in self._peaks.items() if m not in self._published}
            self._peaks = {m: v for m, v in self._peaks.items() if m >= minute_of(self._clock())}
            for minute, value in sorted(due.items()):
                self._published.add(minute)
                await self._publish(minute, value)
            self._published = {m for m in self._published if m >= minute_of(self._clock()) - MINUTE}
            await self._wait()

    async def _wait(self) -> None:
        """Until new work marks an unpublished minute, or (while work is in
        flight) the next minute begins."""
        timeout: Optional[float] = None
        if self._in_flight:
            timeout = minute_of(self._clock()) + MINUTE - self._clock() + 0.01
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    async def _publish(self, minute: int, value: int) -> None:
        instance_id = self._settings.proxy_instance_id
        try:
            await asyncio.to_thread(
                self._cloudwatch.put_metric_data,
                Namespace=self._settings.metric_namespace,
                MetricData=[{
                    "MetricName": self._settings.metric_name,
                    "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
                    "Timestamp": datetime.fromtimestamp(minute, timezone.utc),
                    "Value": float(value),
                    "Unit": "Count",
                }],
            )
        except Exception as err:  # a metric must never fail a request
            code = getattr(err, "response", {}).get("Error", {}).get("Code", type(err).__name__)
            log.warning("activity for %s not published (%s): %s", instance_id, code,
                        " ".join(str(err).split())[:200])
            return
        self.published.append((minute, value))
        log.info("activity for %s published: %d in flight in the minute from %s", instance_id, value,
                 datetime.fromtimestamp(minute, timezone.utc).strftime("%H:%MZ"))
