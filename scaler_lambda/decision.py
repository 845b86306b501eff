"""Whether a GPU worker should be stopped now: a pure function of what the handler
gathered, so every rule is tested on tables without AWS.

The rules (issue 5):
- Only a `running` worker is ever acted on.
- `maxRunHours` (0 = off) stops a worker up that long since its last start,
  whatever its activity: the cost backstop.
- A worker up less than `idleMinutes` since its last start is kept (grace: the
  agent needs minutes to boot and publish).
- The window is the last `idleMinutes` complete minutes plus the current one. Any
  datapoint above 0 in it keeps the worker.
- No datapoint in the whole window after the grace: stopped, `agent-silent` (a
  broken agent must never keep a GPU billing).
- Some minutes missing, the rest 0: a missing minute is not activity, and the
  agent's metric is sticky (Ollama keeps a model loaded for OLLAMA_KEEP_ALIVE
  after each request), so a request cannot hide in one gap. The one gap that could
  hide fresh use is at the end of the window (CloudWatch not yet showing the
  newest points), so the newest datapoint must be at most `freshMinutes` old;
  otherwise the worker is kept for now. If the agent really died, the window
  empties within `idleMinutes` and the agent-silent rule stops the worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Mapping

STOP = "stop"
NONE = "none"
MINUTE = timedelta(minutes=1)


@dataclass(frozen=True)
class Settings:
    idle_minutes: int
    max_run_hours: int = 0
    """0 turns the backstop off."""
    fresh_minutes: int = 2
    """Complete minutes the newest datapoint may lag before a partly empty window
    stops counting as idle."""


@dataclass(frozen=True)
class Decision:
    action: str  # STOP or NONE
    reason: str


def floor_minute(moment: datetime) -> datetime:
    return moment.replace(second=0, microsecond=0)


def window(now: datetime, idle_minutes: int) -> tuple[datetime, datetime]:
    """[start, end) of the per-minute buckets looked at: `idle_minutes` complete
    minutes and the current, partial one."""
    end = floor_minute(now) + MINUTE
    return end - (idle_minutes + 1) * MINUTE, end


def _minutes(delta: timedelta) -> str:
    return f"{delta.total_seconds() / 60:.0f}m"


def decide(
    state: str,
    launch_time: datetime,
    activity: Mapping[datetime, float],
    now: datetime,
    settings: Settings,
) -> Decision:
    """`activity` maps each minute's bucket start to its largest value; minutes
    without data are simply absent. Datetimes must all be timezone-aware."""
    if state != "running":
        return Decision(NONE, f"state {state}: only a running worker is acted on")

    up = now - launch_time
    if settings.max_run_hours and up >= timedelta(hours=settings.max_run_hours):
        return Decision(STOP, f"max-run: up {_minutes(up)} since its last start, "
                              f"maxRunHours={settings.max_run_hours} stops it whatever its activity")
    if up < timedelta(minutes=settings.idle_minutes):
        return Decision(NONE, f"grace: up {_minutes(up)} < idleMinutes={settings.idle_minutes}")

    start, end = window(now, settings.idle_minutes)
    # Points from before the last start belong to an earlier run.
    since = max(start, floor_minute(launch_time))
    seen = {t: v for t, v in activity.items() if since <= t < end}
    busy = sorted(t for t, v in seen.items() if v > 0)
    if busy:
        return Decision(NONE, f"active: Activity {seen[busy[-1]]:g} at {busy[-1]:%H:%M}Z")
    buckets = round((end - start) / MINUTE)
    if not seen:
        return Decision(STOP, f"agent-silent: no Activity datapoint in the last {buckets} minutes, "
                              f"up {_minutes(up)}")
    newest = max(seen)
    lag = round((floor_minute(now) - newest) / MINUTE)
    if lag > settings.fresh_minutes:
        return Decision(NONE, f"waiting: newest Activity datapoint is {lag} minutes old "
                              f"(agent-silent after {buckets} empty minutes)")
    return Decision(STOP, f"idle: Activity 0 in {len(seen)} of {buckets} minutes "
                          f"({buckets - len(seen)} without data), up {_minutes(up)}")
