"""Table tests of the scaler's pure decision function (scaler_lambda/decision.py)."""

from datetime import datetime, timedelta, timezone

import pytest

from scaler_lambda.decision import NONE, STOP, Settings, decide, window

NOW = datetime(2026, 11, 23, 12, 30, 20, tzinfo=timezone.utc)
IDLE = 15
M = timedelta(minutes=1)
SETTINGS = Settings(idle_minutes=IDLE)


def up_for(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def minutes_ago(*offsets: int, value: float = 0.0) -> dict:
    """Buckets `offset` minutes before the current minute's bucket."""
    current = NOW.replace(second=0)
    return {current - k * M: value for k in offsets}


ALL_ZERO = minutes_ago(*range(0, IDLE + 1))
FULL_COMPLETE_ZERO = minutes_ago(*range(1, IDLE + 1))


def test_window_is_idle_minutes_complete_minutes_plus_the_current_one():
    start, end = window(NOW, IDLE)
    assert end == datetime(2026, 11, 23, 12, 31, tzinfo=timezone.utc)
    assert start == datetime(2026, 11, 23, 12, 15, tzinfo=timezone.utc)


@pytest.mark.parametrize("state", ["pending", "stopping", "stopped", "shutting-down", "terminated"])
@pytest.mark.parametrize("activity", [ALL_ZERO, {}, minutes_ago(3, value=2)], ids=["idle", "silent", "active"])
@pytest.mark.parametrize("uptime", [5, 60, 24 * 60])
def test_never_acts_on_a_worker_that_is_not_running(state, activity, uptime):
    decision = decide(state, up_for(uptime), activity, NOW, Settings(IDLE, max_run_hours=1))
    assert decision.action == NONE
    assert state in decision.reason


@pytest.mark.parametrize("uptime, activity, action, reason", [
    # grace: up less than idleMinutes, whatever the metric says
    (0, {}, NONE, "grace"),
    (IDLE - 0.01, {}, NONE, "grace"),
    (IDLE - 1, ALL_ZERO, NONE, "grace"),
    # boundary: exactly idleMinutes up is enough
    (IDLE, FULL_COMPLETE_ZERO, STOP, "idle"),
    (IDLE, {}, STOP, "agent-silent"),
    (IDLE + 0.01, ALL_ZERO, STOP, "idle"),
    (180, ALL_ZERO, STOP, "idle"),
    (180, {}, STOP, "agent-silent"),
    # any activity in the window keeps it
    (180, {**ALL_ZERO, **minutes_ago(0, value=1)}, NONE, "active"),
    (180, {**ALL_ZERO, **minutes_ago(7, value=3)}, NONE, "active"),
    (180, {**ALL_ZERO, **minutes_ago(IDLE, value=1)}, NONE, "active"),      # oldest bucket: the window's edge
    (180, {**ALL_ZERO, **minutes_ago(IDLE + 1, value=1)}, STOP, "idle"),    # just outside the window
    (180, {**ALL_ZERO, **minutes_ago(5, value=0.5)}, NONE, "active"),
    # partial data: gaps are not activity, but the newest point must be fresh
    (180, minutes_ago(1, 2, 9, 14), STOP, "idle"),
    (180, minutes_ago(2, 3, 4), STOP, "idle"),
    (180, minutes_ago(3, 4, 5, 6), NONE, "waiting"),
    (180, minutes_ago(IDLE), NONE, "waiting"),
    (180, minutes_ago(0), STOP, "idle"),
    # points from before the last start belong to an earlier run
    (IDLE, {**FULL_COMPLETE_ZERO, **minutes_ago(IDLE + 1, value=4)}, STOP, "idle"),
])
def test_running_worker(uptime, activity, action, reason):
    decision = decide("running", up_for(uptime), activity, NOW, SETTINGS)
    assert (decision.action, decision.reason.split(":")[0]) == (action, reason), decision.reason


def test_activity_before_the_last_start_is_ignored_even_inside_the_window():
    launch = up_for(IDLE)  # 12:15:20, so the 12:14 bucket and earlier are another run
    activity = {**FULL_COMPLETE_ZERO, launch.replace(second=0) - M: 5.0}
    assert decide("running", launch, activity, NOW, SETTINGS).action == STOP


def test_agent_silent_names_the_window():
    decision = decide("running", up_for(60), {}, NOW, SETTINGS)
    assert decision.reason.startswith("agent-silent")
    assert f"{IDLE + 1} minutes" in decision.reason


def test_active_reason_names_the_newest_busy_minute():
    activity = {**ALL_ZERO, **minutes_ago(9, value=1), **minutes_ago(4, value=2)}
    assert decide("running", up_for(60), activity, NOW, SETTINGS).reason == "active: Activity 2 at 12:26Z"


@pytest.mark.parametrize("max_run_hours, uptime_hours, activity, action, reason", [
    (0, 500, minutes_ago(0, value=1), NONE, "active"),        # 0 = off
    (4, 3.99, minutes_ago(0, value=1), NONE, "active"),
    (4, 4, minutes_ago(0, value=1), STOP, "max-run"),         # boundary: exactly maxRunHours
    (4, 9, minutes_ago(0, value=3), STOP, "max-run"),
    (4, 9, ALL_ZERO, STOP, "max-run"),
    (4, 9, {}, STOP, "max-run"),
])
def test_max_run_backstop(max_run_hours, uptime_hours, activity, action, reason):
    launch = NOW - timedelta(hours=uptime_hours)
    decision = decide("running", launch, activity, NOW, Settings(IDLE, max_run_hours=max_run_hours))
    assert (decision.action, decision.reason.split(":")[0]) == (action, reason)
    if action == STOP:
        assert "whatever its activity" in decision.reason and f"maxRunHours={max_run_hours}" in decision.reason


@pytest.mark.parametrize("idle_minutes", [1, 5, 30])
def test_one_active_minute_anywhere_in_the_window_keeps_it(idle_minutes):
    settings = Settings(idle_minutes)
    for k in range(idle_minutes + 1):
        activity = {**minutes_ago(*range(idle_minutes + 1)), **minutes_ago(k, value=1)}
        assert decide("running", up_for(120), activity, NOW, settings).action == NONE, k
    outside = {**minutes_ago(*range(idle_minutes + 1)), **minutes_ago(idle_minutes + 1, value=1)}
    assert decide("running", up_for(120), outside, NOW, settings).action == STOP
