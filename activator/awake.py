"""Whether Ollama is awake, as the activator knows it without asking AWS.

Awake means Ollama has answered since the worker's last start and since the
last failed probe. The activator learns it from its own probes of
`GET /api/version` (every `liveness_seconds`, and at every hold poll), from
Ollama's answers to the requests it forwards, and from the starts it makes; a
read costs no AWS call and no wake. Until the first probe has answered, Ollama
counts as asleep: a read is then answered by the activator, never by a start.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable

log = logging.getLogger("activator.awake")


class Awake:
    def __init__(self, probe: Callable[[], Awaitable[bool]], period: float) -> None:
        self._probe = probe
        self._period = period
        self._awake = False

    @property
    def awake(self) -> bool:
        return self._awake

    def answered(self) -> None:
        """Ollama answered a request or a probe."""
        if not self._awake:
            log.info("Ollama answers: awake")
        self._awake = True

    def lost(self, why: str) -> None:
        """A probe failed, or the worker was just started (its Ollama is not up yet)."""
        if self._awake:
            log.info("Ollama asleep: %s", why)
        self._awake = False

    async def check(self) -> bool:
        """Probe now and record what it found."""
        if await self._probe():
            self.answered()
            return True
        self.lost("GET /api/version did not answer")
        return False

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(self._period)
