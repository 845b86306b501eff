"""Whether a held request can be served: the model it names is on the worker.

A worker is *ready* when Ollama answers `/api/version` after a start (what the
scaler's grace counts from). A request can be *served* only when the model it
names is there too: at a cold start the chart pulls the configured models, and a
request released before its model has arrived gets Ollama's error instead of an
answer. So a held request that names one of the configured models (the ones the
chart pulls) is released only once `GET /api/tags` lists it, within its hold; a
request that names another model, or none, is released when Ollama answers (its
answer, even a "model not found", is then Ollama's to give). One `/api/tags` call
per poll serves every held request.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Optional

from activator.reads import full_name, json_object, model_of

log = logging.getLogger("activator.present")


def requested_model(body: bytes) -> Optional[str]:
    """The model a request's JSON body names, as Ollama lists it."""
    return model_of(json_object(body))


class Presence:
    def __init__(self, configured: tuple[str, ...], list_models: Callable[[], Awaitable[Optional[set[str]]]],
                 poll_seconds: float, clock: Callable[[], float]) -> None:
        self._configured = {full_name(m) for m in configured}
        self._list_models = list_models
        self._poll = poll_seconds
        self._clock = clock
        self._listing: Optional[asyncio.Task[Optional[set[str]]]] = None
        self._listed_at = float("-inf")

    def must_wait_for(self, model: Optional[str]) -> bool:
        return model is not None and model in self._configured

    async def wait(self, model: str, deadline: float) -> bool:
        """Until `model` is listed (True) or `deadline` passes (False)."""
        told = False
        while True:
            present = await self._models()
            if present is not None and model in present:
                return True
            if not told:
                log.info("Ollama answers but %s is not on the worker yet (being pulled?): holding", model)
                told = True
            if self._clock() + self._poll >= deadline:
                return False
            await asyncio.sleep(self._poll)

    async def _models(self) -> Optional[set[str]]:
        """The models Ollama lists, fetched at most once a poll for all waiters."""
        if self._listing is None or (self._listing.done() and self._clock() - self._listed_at >= self._poll):
            self._listed_at = self._clock()
            self._listing = asyncio.ensure_future(self._list_models())
        return await asyncio.shield(self._listing)
