"""The cold-start budget and the default hold (issue 16, item 3): the hold the
deployment passes covers the budget's p99 for the stack's models with a minute to
spare, the activator's own default agrees for one model, the readiness step is
the probe the chart really gets, the postStart step grows with the models the
chart pulls, and the README's table is the budget."""

from __future__ import annotations

from activator.settings import Settings
from components.homelab import activator, cold_start, ollama
from tests.conftest import ROOT

from .test_activator_deployment import env_of
from .test_homelab import release


def test_the_default_hold_covers_the_budgets_p99_with_a_minute_to_spare(homelab_plan):
    models = release(homelab_plan, ollama.RELEASE)["values"]["ollama"]["models"]["pull"]
    hold = float(env_of(homelab_plan)["ACTIVATOR_HOLD_SECONDS"])
    p99 = sum(step.p99 for step in cold_start.steps(len(models)))
    assert hold >= p99 + 60 and hold - (p99 + 60) < 30
    assert len(models) == 1 and hold == activator.HOLD_SECONDS == \
        Settings(backend="http://x", instance_ids=("i-0",)).hold_seconds


def test_more_models_to_pull_at_start_mean_a_longer_hold():
    assert cold_start.p99(3) - cold_start.p99(1) == 2 * cold_start.PULL_CHECK_P99
    assert cold_start.hold_seconds(3) >= cold_start.p99(3) + 60 > cold_start.hold_seconds(1)


def test_the_readiness_step_is_the_probe_the_chart_gets(homelab_plan):
    probe = release(homelab_plan, ollama.RELEASE)["values"]["readinessProbe"]
    step = next(s for s in cold_start.steps(1) if "readiness probe" in s.name)
    assert (step.p50, step.p99) == (probe["initialDelaySeconds"] + probe["periodSeconds"],
                                    probe["initialDelaySeconds"] + 2 * probe["periodSeconds"])


def test_the_readme_shows_this_budget():
    readme = (ROOT / "README.md").read_text()
    for step in cold_start.steps(1):
        assert f"| {step.name} | {step.p50:g} | {step.p99:g} |" in readme, step.name
    assert f"| **total** | **{cold_start.p50(1):g}** | **{cold_start.p99(1):g}** |" in readme
    assert f"`ACTIVATOR_HOLD_SECONDS` ({cold_start.hold_seconds(1)}" in readme
