"""Table tests of the scaler's pure decision function (scaler_lambda/decision.py)."""

from datetime import datetime, timedelta, timezone

import pytest

from scaler_lambda.decision import NONE, STOP, Settings, decide, ready_minute, window

NOW = datetime(2026, 11, 23, 12, 30, 20, tzinfo=timezone.utc)
CURRENT = NOW.replace(second=0)
IDLE = 15
M = timedelta(minutes=1)
SETTINGS = Settings(idle_minutes=IDLE)


def up_for(minutes: float) -> datetime:
    return NOW - timedelta(minutes=minutes)


def minutes_ago(*offsets: int, value: float = 0.0) -> dict:
    """Buckets `offset` minutes before the current minute's bucket."""
    return {CURRENT - k * M: value for k in offsets}


ALL_ZERO = minutes_ago(*range(0, IDLE + 1))
FULL_COMPLETE_ZERO = minutes_ago(*range(1, IDLE + 1))
LONG_READY = minutes_ago(*range(0, 170), value=1)
"""Ready every minute for the last 170 minutes: ready long before any window here."""


def reason(decision) -> tuple[str, str]:
    return decision.action, decision.reason.split(":")[0]


def test_window_is_idle_minutes_complete_minutes_plus_the_current_one():
    start, end = window(NOW, IDLE)
    assert end == datetime(2026, 11, 23, 12, 31, tzinfo=timezone.utc)
    assert start == datetime(2026, 11, 23, 12, 15, tzinfo=timezone.utc)


@pytest.mark.parametrize("state", ["pending", "stopping", "stopped", "shutting-down", "terminated"])
@pytest.mark.parametrize("activity", [ALL_ZERO, {}, minutes_ago(3, value=2)], ids=["idle", "silent", "active"])
@pytest.mark.parametrize("uptime", [5, 60, 24 * 60])
def test_never_acts_on_a_worker_that_is_not_running(state, activity, uptime):
    decision = decide(state, up_for(uptime), activity, {}, NOW, Settings(IDLE, max_run_hours=1))
    assert decision.action == NONE
    assert state in decision.reason


@pytest.mark.parametrize("activity, action, why", [
    (ALL_ZERO, STOP, "idle"),
    ({}, STOP, "agent-silent"),
    # any activity in the window keeps it
    ({**ALL_ZERO, **minutes_ago(0, value=1)}, NONE, "active"),
    ({**ALL_ZERO, **minutes_ago(7, value=3)}, NONE, "active"),
    ({**ALL_ZERO, **minutes_ago(IDLE, value=1)}, NONE, "active"),      # oldest bucket: the window's edge
    ({**ALL_ZERO, **minutes_ago(IDLE + 1, value=1)}, STOP, "idle"),    # just outside the window
    ({**ALL_ZERO, **minutes_ago(5, value=0.5)}, NONE, "active"),
    # partial data: gaps are not activity
    (minutes_ago(1, 2, 9, 14), STOP, "idle"),
    (minutes_ago(2, 3, 4), STOP, "idle"),
    (minutes_ago(0), STOP, "idle"),
    # a late end (newest point more than 2 minutes old): the window reaches back as far
    (minutes_ago(3, 4, 5, 6), STOP, "idle"),
    (minutes_ago(IDLE), STOP, "idle"),
    ({**minutes_ago(*range(3, IDLE + 1)), **minutes_ago(IDLE + 1, value=1)}, NONE, "waiting"),
    ({**minutes_ago(*range(5, IDLE + 1)), **minutes_ago(IDLE + 3, value=1)}, NONE, "waiting"),
    ({**minutes_ago(*range(5, IDLE + 1)), **minutes_ago(IDLE + 4, value=1)}, STOP, "idle"),
])
def test_ready_worker_past_its_grace(activity, action, why):
    decision = decide("running", up_for(180), activity, LONG_READY, NOW, SETTINGS)
    assert reason(decision) == (action, why), decision.reason


def test_points_of_an_earlier_run_never_count():
    """A worker stopped busy and started again: the earlier run's Activity and Ready
    points are older than this start, so it is neither ready nor active."""
    launch = up_for(IDLE + 3)  # 12:12:20: the 12:11 bucket and earlier are the earlier run
    earlier = {launch.replace(second=0) - k * M: 1.0 for k in range(1, 30)}
    zeros = {launch.replace(second=0) + k * M: 0.0 for k in range(1, IDLE + 4)}
    decision = decide("running", launch, {**earlier, **zeros}, {**earlier, **zeros}, NOW, Settings(IDLE + 4))
    assert reason(decision) == (NONE, "starting")
    ready = {**zeros, launch.replace(second=0) + M: 1.0}
    assert reason(decide("running", launch, {**earlier, **zeros}, ready, NOW, Settings(2))) == (STOP, "idle")


@pytest.mark.parametrize("idle_minutes, lag", [(i, lag) for i in (5, 10) for lag in (0, 1, 2, 3, 5, 8) if lag <= i])
def test_a_steady_lag_delays_the_stop_and_never_blocks_it(idle_minutes, lag):
    """Every point reaches GetMetricData `lag` minutes late. The former rule kept the
    worker for good once the lag passed freshMinutes (2); now the stop comes late by
    the lag beyond it. (A lag above idleMinutes empties the window: agent-silent.)"""
    launch = datetime(2026, 11, 23, 8, 0, 30, tzinfo=timezone.utc)
    origin = launch.replace(second=0)
    last_work = origin + 20 * M
    stop = None
    for tick in range(1, 120):
        now = launch + tick * M
        visible = [origin + k * M for k in range(0, tick + 1 - lag)]
        activity = {t: float(origin + 3 * M <= t <= last_work and t.minute % 4 == 0) for t in visible}
        ready = {t: 1.0 for t in visible if t >= origin + 3 * M}
        if decide("running", launch, activity, ready, now, Settings(idle_minutes)).action == STOP:
            stop = now.replace(second=0)
            break
    assert stop == last_work + (idle_minutes + 1 + max(0, lag - 2)) * M


def test_a_dead_agent_is_stopped_once_its_points_leave_the_window():
    """The agent's last point is 12:20 and work at 12:19: kept while the window
    reaches it, stopped as agent-silent when 12:20 leaves the plain window."""
    activity = {CURRENT - k * M: 0.0 for k in range(10, 40)}
    activity[CURRENT - 11 * M] = 1.0
    settings = Settings(12)
    assert reason(decide("running", up_for(60), activity, LONG_READY, NOW, settings)) == (NONE, "active")
    later = NOW + 3 * M
    assert reason(decide("running", up_for(63), activity, LONG_READY, later, settings)) == (STOP, "agent-silent")
    assert reason(decide("running", up_for(62), activity, LONG_READY, later - M, settings)) == (NONE, "waiting")


def test_agent_silent_names_the_window():
    decision = decide("running", up_for(60), {}, LONG_READY, NOW, SETTINGS)
    assert decision.reason.startswith("agent-silent")
    assert f"{IDLE + 1} minutes" in decision.reason


def test_active_reason_names_the_newest_busy_minute():
    activity = {**ALL_ZERO, **minutes_ago(9, value=1), **minutes_ago(4, value=2)}
    assert decide("running", up_for(60), activity, LONG_READY, NOW, SETTINGS).reason == "active: Activity 2 at 12:26Z"


# --- ready and its grace (issue 15, fault 3: a grace counted from launch cut slow starts) ---

@pytest.mark.parametrize("ready_minutes_ago, action, why", [
    (0, NONE, "grace"),             # ready in the current minute
    (IDLE - 1, NONE, "grace"),
    (IDLE, NONE, "grace"),          # the ready minute is the window's oldest: still kept
    (IDLE + 1, STOP, "idle"),       # idleMinutes complete minutes after the ready minute
    (IDLE + 20, STOP, "idle"),
])
def test_grace_counts_from_the_ready_minute(ready_minutes_ago, action, why):
    ready = {**minutes_ago(*range(ready_minutes_ago + 1, 40)), **minutes_ago(*range(0, ready_minutes_ago + 1), value=1)}
    decision = decide("running", up_for(40), ALL_ZERO, ready, NOW, SETTINGS)
    assert reason(decision) == (action, why), decision.reason
    assert decision.ready_at == CURRENT - ready_minutes_ago * M


@pytest.mark.parametrize("idle_minutes", [1, 5, 10, 30])
def test_no_stop_before_ready_plus_idle_minutes_and_a_stop_in_the_minute_after(idle_minutes):
    """Replayed minute by minute: Ollama answers in minute R, nothing else happens."""
    launch = datetime(2026, 11, 23, 9, 0, 40, tzinfo=timezone.utc)
    ready_at = launch.replace(second=0) + 6 * M
    first_stop = None
    for tick in range(0, 120):
        now = launch + tick * M
        minutes = range(0, int((now - launch) / M) + 1)
        activity = {launch.replace(second=0) + k * M: 0.0 for k in minutes}
        ready = {t: float(t >= ready_at) for t in activity}
        if decide("running", launch, activity, ready, now, Settings(idle_minutes)).action == STOP:
            first_stop = now
            break
    assert first_stop is not None
    assert first_stop >= ready_at + idle_minutes * M + M  # no moment of the ready minute + idle is cut
    assert first_stop - (ready_at + idle_minutes * M) < 2 * M


def test_a_slow_start_cut_by_the_launch_based_grace_is_now_kept():
    """idleMinutes 5, a start that took 8 minutes: the old rule (up >= idleMinutes and
    Activity 0) stopped it before Ollama had answered; now it is kept to ready + 5."""
    launch = up_for(8.5)                                   # 12:21:50
    zeros = {launch.replace(second=0) + k * M: 0.0 for k in range(2, 9)}
    settings = Settings(5)
    assert reason(decide("running", launch, zeros, zeros, NOW, settings)) == (NONE, "starting")
    ready = {**zeros, CURRENT: 1.0}                        # Ollama answers at 12:30
    decision = decide("running", launch, zeros, ready, NOW, settings)
    assert reason(decision) == (NONE, "grace") and "12:36Z" in decision.reason
    later = NOW + 5 * M
    zeros_later = {**zeros, **{CURRENT + k * M: 0.0 for k in range(1, 6)}}
    ready_later = {**ready, **{CURRENT + k * M: 1.0 for k in range(1, 6)}}
    assert reason(decide("running", launch, zeros_later, ready_later, later, settings)) == (NONE, "grace")
    assert reason(decide("running", launch, zeros_later, ready_later, later + M, settings)) == (STOP, "idle")


@pytest.mark.parametrize("uptime, activity, ready, settings, action, why", [
    (5, {}, {}, SETTINGS, NONE, "starting"),
    (29.9, ALL_ZERO, minutes_ago(*range(0, 28)), SETTINGS, NONE, "starting"),     # Ready 0 every minute
    (30, ALL_ZERO, minutes_ago(*range(0, 28)), SETTINGS, STOP, "never-ready"),
    (30, {}, {}, SETTINGS, STOP, "never-ready"),                                  # nothing published at all
    # held requests counted as work on a broken worker (fault 4) do not keep it
    (30, minutes_ago(*range(0, 29), value=3), {}, SETTINGS, STOP, "never-ready"),
    (300, minutes_ago(*range(0, 29), value=1), minutes_ago(*range(0, 28)), SETTINGS, STOP, "never-ready"),
    (40, ALL_ZERO, {}, Settings(IDLE, not_ready_minutes=45), NONE, "starting"),
    (45, ALL_ZERO, {}, Settings(IDLE, not_ready_minutes=45), STOP, "never-ready"),
    # a Ready point from before the last start is another run's
    (31, ALL_ZERO, minutes_ago(32, value=1), SETTINGS, STOP, "never-ready"),
])
def test_never_ready(uptime, activity, ready, settings, action, why):
    decision = decide("running", up_for(uptime), activity, ready, NOW, settings)
    assert reason(decision) == (action, why), decision.reason
    assert decision.ready_at is None
    if action == STOP:
        assert f"notReadyMinutes={settings.not_ready_minutes}" in decision.reason
        assert "Ollama has not answered" in decision.reason


def test_ready_minute_is_the_first_one_since_the_last_start():
    launch = datetime(2026, 11, 23, 10, 4, 50, tzinfo=timezone.utc)
    start = launch.replace(second=0)
    ready = {start - M: 1.0, start: 0.0, start + M: 0.0, start + 2 * M: 1.0, start + 3 * M: 1.0}
    assert ready_minute(ready, launch) == start + 2 * M
    # The launch minute itself may carry the previous run's point (stopped and started
    # within a minute): it does not count; the new boot publishes for a later minute.
    assert ready_minute({start: 1.0}, launch) is None
    assert ready_minute({start + M: 0.5}, launch) is None


# --- maxRunHours ---

@pytest.mark.parametrize("max_run_hours, uptime_hours, activity, action, why", [
    (0, 500, minutes_ago(0, value=1), NONE, "active"),        # 0 = off
    (4, 3.99, minutes_ago(0, value=1), NONE, "active"),
    (4, 4, minutes_ago(0, value=1), STOP, "max-run"),         # boundary: exactly maxRunHours
    (4, 9, minutes_ago(0, value=3), STOP, "max-run"),
    (4, 9, ALL_ZERO, STOP, "max-run"),
    (4, 9, {}, STOP, "max-run"),
])
def test_max_run_backstop(max_run_hours, uptime_hours, activity, action, why):
    launch = NOW - timedelta(hours=uptime_hours)
    decision = decide("running", launch, activity, LONG_READY, NOW, Settings(IDLE, max_run_hours=max_run_hours))
    assert reason(decision) == (action, why)
    if action == STOP:
        assert "whatever its activity" in decision.reason and f"maxRunHours={max_run_hours}" in decision.reason


@pytest.mark.parametrize("uptime_hours, action, why", [
    (23.99, NONE, "active"),
    (24, STOP, "max-run"),
    (24 * 7, STOP, "max-run"),
])
def test_default_max_run_hours_stops_a_worker_busy_for_a_day(uptime_hours, action, why):
    """Fault 1: a client polling forever kept a GPU billing because the backstop was off."""
    busy = minutes_ago(*range(0, IDLE + 1), value=1)
    decision = decide("running", NOW - timedelta(hours=uptime_hours), busy, LONG_READY, NOW, Settings(IDLE))
    assert reason(decision) == (action, why)


# --- the window ---

@pytest.mark.parametrize("idle_minutes", [1, 5, 30])
def test_one_active_minute_anywhere_in_the_window_keeps_it(idle_minutes):
    settings = Settings(idle_minutes)
    for k in range(idle_minutes + 1):
        activity = {**minutes_ago(*range(idle_minutes + 1)), **minutes_ago(k, value=1)}
        assert decide("running", up_for(120), activity, LONG_READY, NOW, settings).action == NONE, k
    outside = {**minutes_ago(*range(idle_minutes + 1)), **minutes_ago(idle_minutes + 1, value=1)}
    assert decide("running", up_for(120), outside, LONG_READY, NOW, settings).action == STOP


@pytest.mark.parametrize("idle_minutes", [5, 10, 15])
def test_a_model_kept_loaded_is_not_work_the_stop_follows_the_last_request(idle_minutes):
    """Fault 2: Ollama keeps the model loaded for an hour after the last request at
    10:07; the agent publishes 0 every minute (a loaded model is not work), the
    activator 1 for the request's minute. The stop comes in the minute that ends
    idleMinutes complete minutes after the request's minute, not keep-alive later."""
    launch = datetime(2026, 11, 23, 10, 0, 10, tzinfo=timezone.utc)
    last_request = launch.replace(second=0) + 7 * M
    stops = []
    for tick in range(1, 90):
        now = launch + tick * M
        minutes = [launch.replace(second=0) + k * M for k in range(0, tick + 1)]
        activity = {t: float(t == last_request) for t in minutes}
        ready = {t: 1.0 for t in minutes if t >= launch.replace(second=0) + 3 * M}
        if decide("running", launch, activity, ready, now, Settings(idle_minutes)).action == STOP:
            stops.append(now)
    assert stops, "never stopped"
    assert stops[0].replace(second=0) == last_request + (idle_minutes + 1) * M
