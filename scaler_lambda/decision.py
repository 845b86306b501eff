"""Whether a GPU worker should be stopped now: a pure function of what the handler
gathered, so every rule is tested on tables without AWS.

Inputs are per-minute series (minute start -> Maximum) of two metrics that the
publishers stamp with the start of the minute they describe:
- `Activity` > 0 means real GPU work in that minute (an activator request in
  flight, GPU use, a GPU pod other than Ollama's). A model Ollama merely keeps
  loaded is not work, so the last work is followed by `idleMinutes` of billing,
  whatever OLLAMA_KEEP_ALIVE is.
- `Ready` >= 1 means Ollama has answered since this boot (the agent, every minute).

The rules, in order (issue 15):
1. Only a `running` worker is ever acted on.
2. `maxRunHours` (0 = off) stops a worker up that long since its last start,
   whatever it reports.
3. Ready is the first minute since the last start with Ready >= 1. A worker never
   ready `notReadyMinutes` after its last start is stopped (`never-ready`),
   whatever its Activity: requests held for a broken Ollama must not keep a GPU.
   Before that it is kept (`starting`): a slow cold start is never cut.
4. Grace: the ready minute counts as a minute of work, so no stop comes before
   ready + `idleMinutes` (counted from launch it cut slow starts).
5. The window is the last `idleMinutes` complete minutes plus the current one;
   past the grace it begins after the ready minute, so after the last start. Any
   Activity above 0 in it keeps the worker.
6. No Activity point in the whole window: stopped, `agent-silent`. The agent
   publishes every minute while it runs, so an empty window means it is broken,
   and a broken agent must never keep a GPU billing.
7. Some minutes missing, the rest 0: a missing minute is not work. The activator
   publishes its own point for every minute with a request in flight, so a failed
   agent put cannot hide a request, and GPU work without a request (a GPU pod)
   lasts for many minutes of the agent's points. What may be missing is the end
   of the window (CloudWatch not showing the newest points yet): when the newest
   point is more than `freshMinutes` old, the idle minutes are counted up to it
   plus `freshMinutes`, so the window reaches back as many minutes as are late,
   and work (or the ready minute) there keeps the worker (`waiting`). A late
   point delays the stop by its lag and never blocks it: the former rule (keep
   while the newest point is stale) kept a worker for good under a steady lag
   above `freshMinutes`, and points stamped with the start of their minute look a
   minute older than points stamped when sent. If the agent really died, its
   points leave the window and rule 6 stops the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping, Optional

STOP = "stop"
NONE = "none"
MINUTE = timedelta(minutes=1)

MAX_RUN_HOURS = 24
"""Default backstop. A day of real use never keeps a worker up that long without
an idle gap; what does is a fault: a GPU pod that never ends, a client that never
stops sending work, an Activity publisher stuck at 1."""
NOT_READY_MINUTES = 30
"""Default limit for a start whose Ollama never answers. A slow cold start (1 min
pending, 2-4 min boot, k3s, Liqo, Ollama's image and a model load) takes well
under 15 minutes; twice that is a broken worker, not a slow one."""


@dataclass(frozen=True)
class Settings:
    idle_minutes: int
    max_run_hours: int = MAX_RUN_HOURS
    """0 turns the backstop off."""
    not_ready_minutes: int = NOT_READY_MINUTES
    """Minutes after the last start by which Ollama must have answered once."""
    fresh_minutes: int = 2
    """Complete minutes the newest Activity point may lag before a partly empty
    window stops counting as idle."""


@dataclass(frozen=True)
class Decision:
    action: str  # STOP or NONE
    reason: str
    ready_at: Optional[datetime] = None
    """The ready minute, when one was seen: logged with every decision."""


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def window(now: datetime, idle_minutes: int) -> tuple[datetime, datetime]:
    """[start, end) of the per-minute buckets looked at: `idle_minutes` complete
    minutes and the current, partial one."""
    end = floor_minute(now) + MINUTE
    return end - (idle_minutes + 1) * MINUTE, end


def ready_minute(ready: Mapping[datetime, float], launch_time: datetime) -> Optional[datetime]:
    """The first minute after the one of the last start with Ready >= 1. The start's
    own minute may hold the previous run's point (a stop and a start within a
    minute); the new boot's agent first publishes for a later minute anyway."""
    since = floor_minute(launch_time)
    return min((t for t, v in ready.items() if t > since and v >= 1), default=None)


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:.0f}m"


def decide(
    state: str,
    launch_time: datetime,
    activity: Mapping[datetime, float],
    ready: Mapping[datetime, float],
    now: datetime,
    settings: Settings,
) -> Decision:
    """`activity` and `ready` map each minute's bucket start to its largest value;
    minutes without data are simply absent. Datetimes must all be timezone-aware."""
    if state != "running":
        return Decision(NONE, f"state {state}: only a running worker is acted on")

    up = now - launch_time
    ready_at = ready_minute(ready, launch_time)
    if settings.max_run_hours and up >= timedelta(hours=settings.max_run_hours):
        return Decision(STOP, f"max-run: up {_minutes(up)} since its last start, "
                              f"maxRunHours={settings.max_run_hours} stops it whatever its activity", ready_at)
    if ready_at is None:
        if up >= timedelta(minutes=settings.not_ready_minutes):
            return Decision(STOP, f"never-ready: Ollama has not answered since the start at "
                                  f"{launch_time:%H:%M}Z (no Ready point >= 1), up {_minutes(up)} >= "
                                  f"notReadyMinutes={settings.not_ready_minutes}; stopped whatever its activity")
        return Decision(NONE, f"starting: not ready yet, up {_minutes(up)} < "
                              f"notReadyMinutes={settings.not_ready_minutes}")

    start, end = window(now, settings.idle_minutes)
    if ready_at >= start:
        return Decision(NONE, f"grace: ready at {ready_at:%H:%M}Z, kept until "
                              f"{ready_at + (settings.idle_minutes + 1) * MINUTE:%H:%M}Z "
                              f"(idleMinutes={settings.idle_minutes})", ready_at)

    # The window starts after the ready minute, so after the last start: points of
    # an earlier run never fall in it.
    seen = {t: v for t, v in activity.items() if start <= t < end}
    busy = sorted(t for t, v in seen.items() if v > 0)
    if busy:
        return Decision(NONE, f"active: Activity {seen[busy[-1]]:g} at {busy[-1]:%H:%M}Z", ready_at)
    buckets = round((end - start) / MINUTE)
    if not seen:
        return Decision(STOP, f"agent-silent: no Activity datapoint in the last {buckets} minutes, "
                              f"up {_minutes(up)}", ready_at)
    newest = max(seen)
    late = round((floor_minute(now) - newest) / MINUTE) - settings.fresh_minutes
    if late > 0:
        # The newest minutes are not visible yet: count the idle minutes up to the
        # newest point plus freshMinutes, so the window reaches back `late` minutes.
        reach = start - late * MINUTE
        earlier = sorted(t for t, v in activity.items()
                         if v > 0 and max(reach, floor_minute(launch_time)) <= t < start)
        if earlier or ready_at >= reach:
            what = f"Activity at {earlier[-1]:%H:%M}Z" if earlier else f"ready at {ready_at:%H:%M}Z"
            return Decision(NONE, f"waiting: newest Activity datapoint is {late + settings.fresh_minutes} "
                                  f"minutes old, so the window reaches back to {reach:%H:%M}Z: {what}", ready_at)
    return Decision(STOP, f"idle: Activity 0 in {len(seen)} of {buckets} minutes "
                          f"({buckets - len(seen)} without data), up {_minutes(up)}", ready_at)
