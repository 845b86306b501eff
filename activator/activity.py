"""Telling the scaler that the proxy's worker is in use.

The scaler stops a worker when every minute of its idle window shows
`HybridLLM/Activity` (Maximum) at 0 or no data. The worker's own agent reports
loaded models; this adds the requests flowing through the activator, so a long
stream or a model pull that outlives Ollama's keep-alive view still counts.

While anything is in flight the largest in-flight count of the period is
published, at most once per `activity_period` (60 s): the first request after a
quiet period is published at once, a stream that lasts an hour is published
every minute. Nothing is published while idle (missing data is idle to the
scaler). A failed publish is logged and never touches a request.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any, Awaitable, Callable

from botocore.config import Config

from activator.settings import Settings

log = logging.getLogger("activator.activity")

CLOUDWATCH_CONFIG = Config(connect_timeout=5, read_timeout=10, retries={"mode": "standard", "max_attempts": 3})


class Activity:
    def __init__(self, cloudwatch: Any, settings: Settings, *,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._cloudwatch = cloudwatch
        self._settings = settings
        self._sleep = sleep
        self._in_flight = 0
        self._peak = 0
        self._busy = asyncio.Event()
        self.published: deque[int] = deque(maxlen=100)
        """The latest values published, oldest first."""

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def begin(self) -> None:
        self._in_flight += 1
        self._peak = max(self._peak, self._in_flight)
        self._busy.set()

    def end(self) -> None:
        self._in_flight -= 1

    async def run(self) -> None:
        while True:
            await self._busy.wait()
            value, self._peak = self._peak, self._in_flight
            if self._in_flight == 0:
                self._busy.clear()
            await self._publish(value)
            await self._sleep(self._settings.activity_period)

    async def _publish(self, value: int) -> None:
        instance_id = self._settings.proxy_instance_id
        try:
            await asyncio.to_thread(
                self._cloudwatch.put_metric_data,
                Namespace=self._settings.metric_namespace,
                MetricData=[{
                    "MetricName": self._settings.metric_name,
                    "Dimensions": [{"Name": "InstanceId", "Value": instance_id}],
                    "Value": float(value),
                    "Unit": "Count",
                }],
            )
        except Exception as err:  # a metric must never fail a request
            code = getattr(err, "response", {}).get("Error", {}).get("Code", type(err).__name__)
            log.warning("activity for %s not published (%s): %s", instance_id, code,
                        " ".join(str(err).split())[:200])
            return
        self.published.append(value)
        log.info("activity for %s published: %d in flight", instance_id, value)
