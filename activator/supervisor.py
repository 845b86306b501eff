"""Keeping the background loops alive: activity publishing, Ollama's liveness
probe and the pod watch.

A loop that ends with an exception (kubernetes_asyncio raises a plain
`Exception` for a malformed watch line, say) is logged and started again after a
capped backoff. A loop that fails `give_up_after` times in a row without having
run `healthy_after` seconds in between cannot recover by itself: the supervisor
marks it failed, and `GET /healthz` answers 503 so that Kubernetes restarts the
pod. A loop that returns (none should) is treated the same as one that failed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable

log = logging.getLogger("activator.supervisor")


class Supervisor:
    def __init__(self, *, base: float = 1.0, cap: float = 60.0, give_up_after: int = 5,
                 healthy_after: float = 300.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._base = base
        self._cap = cap
        self._give_up_after = give_up_after
        self._healthy_after = healthy_after
        self._clock = clock
        self.failed: dict[str, str] = {}
        """Loops that could not recover: name -> the last error."""
        self.restarts: dict[str, int] = {}

    @property
    def healthy(self) -> bool:
        return not self.failed

    async def keep(self, name: str, loop: Callable[[], Awaitable[None]]) -> None:
        """Run `loop` for as long as the process lives."""
        failures = 0
        while True:
            began = self._clock()
            try:
                await loop()
                error = "returned"
            except asyncio.CancelledError:
                raise
            except Exception as err:  # anything: a loop must never die silently
                error = f"{type(err).__name__}: {' '.join(str(err).split())[:200]}"
            failures = 1 if self._clock() - began >= self._healthy_after else failures + 1
            self.restarts[name] = self.restarts.get(name, 0) + 1
            if failures >= self._give_up_after:
                self.failed[name] = error
                log.error("%s failed %d times in a row (%s); /healthz now fails so the pod is restarted",
                          name, failures, error)
                return
            delay = min(self._cap, self._base * 2 ** (failures - 1))
            log.warning("%s ended (%s); starting it again in %.0fs", name, error, delay)
            await asyncio.sleep(delay)
