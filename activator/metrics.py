"""What people scrape: `GET /metrics` in Prometheus' text format, made by the
official `prometheus_client` on a registry of the activator's own (so two
activators in one test process never share a counter).

The gauges are read at scrape time from the objects that own the numbers (the
activity's in-flight count, the hold's held count), so no count is kept twice.
"""

from __future__ import annotations

from typing import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# A cold start takes minutes (README, "Scale up"); the buckets resolve it.
HOLD_BUCKETS = (1, 5, 15, 30, 60, 90, 120, 180, 240, 300, 420, 600, 900)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.in_flight = Gauge(
            "hybrid_llm_activator_requests_in_flight",
            "GPU requests being answered by Ollama through this activator now (held ones not included)",
            registry=self.registry)
        self.held = Gauge(
            "hybrid_llm_activator_requests_held",
            "Requests held now while the worker starts", registry=self.registry)
        self.worker_starts = Counter(
            "hybrid_llm_activator_worker_starts",
            "Attempts to bring a worker up, by result: started (StartInstances), "
            "running (already pending or running), failed (AWS refused or gave up)",
            ["result"], registry=self.registry)
        self.answered_while_asleep = Counter(
            "hybrid_llm_activator_answered_while_asleep",
            "Reads answered by the activator itself while Ollama was asleep, by source: "
            "cache (Ollama's last answer), known (what the activator knows), none (503)",
            ["source"], registry=self.registry)
        self.hold_seconds = Histogram(
            "hybrid_llm_activator_hold_duration_seconds",
            "How long each held request waited, by outcome: released, unavailable (503), left (client hung up)",
            ["outcome"], buckets=HOLD_BUCKETS, registry=self.registry)
        self.streams_ended = Counter(
            "hybrid_llm_activator_streams_ended",
            "Answers the activator ended because Ollama went silent, by phase "
            "(first_byte: nothing at all; idle: silent after it began)",
            ["phase"], registry=self.registry)
        for result in ("started", "running", "failed"):
            self.worker_starts.labels(result)
        for source in ("cache", "known", "none"):
            self.answered_while_asleep.labels(source)

    def track(self, in_flight: Callable[[], int], held: Callable[[], int]) -> None:
        """Read the gauges from their owners at each scrape."""
        self.in_flight.set_function(in_flight)
        self.held.set_function(held)

    async def handle(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
