"""The cold-start budget: from the activator's StartInstances on a stopped worker
to held requests released, step by step, as a p50 and a p99 in seconds, each with
where the figure comes from. The default hold is derived from it (the p99 plus a
minute, rounded up to half a minute), so a change here moves the hold, and the
README's table is this one (a test compares them).

Estimates are marked as such: nothing here can boot EC2, k3s, Liqo or a GPU.
The Ollama chart pulls the configured models in a postStart hook at every
start, so the budget grows with their number, and so does the hold.

Steps that run beside the critical path (the homelab's Nebula tunnel to the
worker while k3s starts; the virtual node's recovery and the kubelet's re-list,
which end together) count once, as their longest. The tunnel is not a step in
any lighthouse placement: from the worker's Nebula start to the homelab's answered
ping took 0.26 s (median; `workers`, `ec2`) and 0.36 s (`homelab`, the worker found
through the lighthouse node) in bench/worker_restart_mesh.py, far inside k3s's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from components.homelab import ollama


@dataclass(frozen=True)
class Step:
    name: str
    p50: float
    p99: float
    source: str


def _readiness() -> tuple[float, float]:
    """The Ollama pod's first readiness success after its container starts, from the
    probe the program sets: the initial delay plus one period (p99: two)."""
    probe = ollama.READINESS_PROBE
    return (probe["initialDelaySeconds"] + probe["periodSeconds"],
            probe["initialDelaySeconds"] + 2 * probe["periodSeconds"])


READY_P50, READY_P99 = _readiness()
PULL_CHECK_P99 = 10
"""Seconds a model's `ollama pull` takes at p99 when the model is already on the
volume: a manifest request to registry.ollama.ai and a local digest check."""


def _post_start(models: int) -> Step:
    """The chart's postStart hook (templates/deployment.yaml, v1.77.0): it polls
    `ollama ps` every 5 s, then runs `ollama pull` for each configured model. The
    container is not Running, so not ready, until it ends."""
    return Step(f"the chart's postStart hook (`ollama ps` every 5 s, then `ollama pull` of {models} model(s))",
                6, 5 + PULL_CHECK_P99 * models,
                "the chart's template; each pull of a model already there asks registry.ollama.ai for its "
                "manifest (estimate: 1-10 s)")


_BEFORE_PROBE: tuple[Step, ...] = (
    Step("a `stopping` worker waited out first", 0, 120,
         "estimate: Ubuntu's shutdown and EC2's stopping; the usual start is from `stopped`"),
    Step("EC2 `pending` to `running`", 15, 60,
         "estimate from published launch timings (about 5 s and 16.5 s for new launches); not a GPU restart"),
    Step("boot to network-online", 20, 45,
         "estimate: about 17 s for a plain AMI, the Deep Learning AMI is heavier; cloud-init does not re-run user data"),
    Step("per-start units to k3s (SSM fetches, Nebula address, model volume)", 1.5, 8,
         "measured here: nebula1 has its address 0.11 s after Nebula starts (bench/worker_restart_mesh.py); "
         "one GetParameters call per ten names, in parallel (userdata/ssm-fetch.sh)"),
    Step("k3s answering on the Nebula address", 15, 45, "estimate (k3s #9073: the API answers before systemd says so)"),
    Step("Liqo: virtual node Ready again and its pods re-listed", 68, 77,
         "Liqo v1.2.0 pings the provider's /livez every 15 s; the virtual kubelet's status timer is 60 s; "
         "client-go's re-list backoff is capped at 30-60 s (read in their source)"),
    Step("Ollama's pod running again (a GPU pod rejected at the node's restart is replaced)", 8, 20,
         "estimate; kubernetes #128043 (device-plugin pods fail admission after a reboot); not observed here"),
)
_AFTER_HOOK: tuple[Step, ...] = (
    Step("Ollama's readiness probe", READY_P50, READY_P99,
         "the probe the program sets on the chart: initial delay plus one period (p99: two)"),
    Step("readiness reflected into the homelab Service's endpoints", 2, 5, "estimate (watch events)"),
    Step("the activator's probe notices", 1, 2, "its poll, ACTIVATOR_POLL_SECONDS = 2"),
)


def steps(models: int) -> tuple[Step, ...]:
    """The budget for a stack that pulls this many models."""
    return _BEFORE_PROBE + (_post_start(models),) + _AFTER_HOOK


def p50(models: int) -> float:
    return sum(step.p50 for step in steps(models))


def p99(models: int) -> float:
    """A plain sum of the steps' p99s: conservative (a root-sum-square of the
    spreads is about 100 s less)."""
    return sum(step.p99 for step in steps(models))


MARGIN_SECONDS = 60


def hold_seconds(models: int) -> int:
    """The budget's p99 plus a minute, rounded up to half a minute."""
    return int(math.ceil((p99(models) + MARGIN_SECONDS) / 30) * 30)
