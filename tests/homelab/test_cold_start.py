"""The cold-start budget and the default hold (issue 16, item 3): the hold the
deployment passes covers the budget's p99 with a minute to spare, the activator's
own default agrees, the readiness step is the probe the chart really gets, and the
README's table is the budget."""

from __future__ import annotations

from activator.settings import Settings
from components.homelab import activator, cold_start, ollama
from tests.conftest import ROOT

from .test_activator_deployment import env_of
from .test_homelab import release


def test_the_default_hold_covers_the_budgets_p99_with_a_minute_to_spare(homelab_plan):
    hold = float(env_of(homelab_plan)["ACTIVATOR_HOLD_SECONDS"])
    p99 = sum(step.p99 for step in cold_start.STEPS)
    assert hold >= p99 + 60
    assert hold == activator.HOLD_SECONDS == Settings(backend="http://x", instance_ids=("i-0",)).hold_seconds


def test_the_readiness_step_is_the_probe_the_chart_gets(homelab_plan):
    probe = release(homelab_plan, ollama.RELEASE)["values"]["readinessProbe"]
    step = next(s for s in cold_start.STEPS if "readiness probe" in s.name)
    assert (step.p50, step.p99) == (probe["initialDelaySeconds"] + probe["periodSeconds"],
                                    probe["initialDelaySeconds"] + 2 * probe["periodSeconds"])


def test_the_readme_shows_this_budget():
    readme = (ROOT / "README.md").read_text()
    for step in cold_start.STEPS:
        assert f"| {step.name} | {step.p50:g} | {step.p99:g} |" in readme, step.name
    assert f"| **total** | **{cold_start.P50:g}** | **{cold_start.P99:g}** |" in readme
    assert f"`ACTIVATOR_HOLD_SECONDS` ({cold_start.hold_seconds()})" in readme
