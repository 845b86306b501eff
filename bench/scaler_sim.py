"""Replays month-long usage traces through the deployed scale-to-zero rules (the
real `decide` of scaler_lambda/decision.py, fed the Activity and Ready points the
activator and the agent publish, as CloudWatch would show them at each tick) and
prints what the GPU would cost at several idle timeouts, against always-on and a
clairvoyant oracle, with the minutes from the last work to the stop and the cold
starts a user feels. Prints figures; asserts nothing.

Model (all assumptions, stated so the figures can be argued with):
- Usage: every day, sessions of 20-100 min between 07:00 and 24:00 until the day's
  target (the level, scaled by 0.5-1.5 at random) is reached. Inside a session a
  request arrives every ~1.5 min (exponential), with an 8 % chance of a 6-20 min
  pause. A request arrives at a random second of its minute and occupies the rest
  of it ("busy" minutes).
- Activity: the activator publishes a point for each minute with a request in
  flight at the moment the first one begins (held requests are not work). The
  agent (userdata/activity-agent.sh) runs at second 0 of every minute from 2 min
  after the instance is running, probes Ollama at once, samples the GPU until
  second 40 and publishes at second AGENT_PUBLISH, stamped with that minute: 0
  for a minute without a request (in a minute with one it adds nothing to the
  activator's earlier point). Ollama's keep-alive does not touch Activity: the
  model stays loaded until the worker stops, so a warm worker answers at once.
- Ready: Ollama answers (model loaded) after the boot; the first agent run that
  probes after that marks its minute Ready.
- CloudWatch: a point is visible to GetMetricData VISIBLE_AFTER seconds after it
  is published (see that constant). The Lambda runs every SCHEDULE minutes at
  TICK_OFFSET seconds into the minute and decides each running worker with the
  deployed defaults (maxRunHours, notReadyMinutes).
- Start: a request to a stopped worker starts it (LaunchTime = that moment).
  Pending 1 min (not billed), then 2-4 min boot (Nebula, k3s) + 1 min model load,
  billed but not serving; once ready, held requests are served one a minute (each
  still occupies a minute of GPU, as it would have on a warm worker). Stopping
  takes 1 min (not billed); a request in that minute starts the worker once stopped.
- Prices (DESIGN.md, us-east-1): g4dn.xlarge spot $0.20/h (the middle of the
  $0.16-0.22 seen), on-demand $0.526/h. Per-second billing.
- Oracle: knows every request in advance, has the GPU ready at each busy minute
  and stops in a gap exactly when staying up costs more than a restart. Restart
  cost = the billed boot-and-load minutes (mean 4 min of GPU time); the user's
  wait is not priced (the oracle never makes anyone wait).
- Always-on: no scaler, the worker runs all month.
"""

from __future__ import annotations

import math
import random
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scaler_lambda.decision import STOP, Settings, decide  # noqa: E402

DAYS = 30
MINUTES = DAYS * 24 * 60
LEVELS_HOURS = (2, 4, 8)
TIMEOUTS = (5, 10, 15, 30)
SCHEDULES = (1, 2, 5)
"""Minutes between the Lambda's runs: rate(1 minute) is the default scalerSchedule."""
PENDING = 1
BOOT = (2, 4)
MODEL_LOAD = 1
AGENT_FIRST = 2
AGENT_PROBE, AGENT_PUBLISH = 5, 45
"""Seconds into its minute at which the agent probes Ollama and publishes."""
STOPPING = 1
SPOT, ON_DEMAND = 0.20, 0.526
ORACLE_RESTART = (BOOT[0] + BOOT[1]) / 2 + MODEL_LOAD
SEED = 20261123
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
TICK_OFFSET = 30
"""Seconds into the minute at which the Lambda runs. A rate rule fires at a second
fixed by when it was created, which no one chooses: 30 s is its mean."""
VISIBLE_AFTER = 30
"""Seconds from PutMetricData to the point answering GetMetricData. PutMetricData
returns once CloudWatch has the point, and CloudWatch evaluates alarms on 10-second
periods of points published the same way, so fresh points are normally queryable
within seconds; AWS documents delays of hours only for points stamped 3 h or more
in the past, which these never are. 30 s is a pessimistic figure for the normal
case; the sensitivity table shows 0 and 90 s."""


def usage_trace(hours_per_day: float, rng: random.Random) -> list[bool]:
    """request[m]: a request arrives in minute m."""
    request = [False] * MINUTES
    for day in range(DAYS):
        target = hours_per_day * 60 * rng.uniform(0.5, 1.5)
        taken: list[tuple[int, int]] = []
        total, tries = 0.0, 0
        while total < target and tries < 1000:
            tries += 1
            length = min(rng.uniform(20, 100), target - total)
            start = rng.uniform(7 * 60, 24 * 60 - length)
            if any(start < b + 5 and a < start + length + 5 for a, b in taken):
                continue
            taken.append((start, start + length))
            total += length
            t = start
            while t < start + length:
                request[day * 1440 + int(t)] = True
                pause = rng.random() < 0.08
                t += rng.uniform(6, 20) if pause else max(1.0, rng.expovariate(1 / 1.5))
    return request


def arrivals(request: list[bool], rng: random.Random) -> list[float]:
    """The moment (in minutes) each request arrives: a random second of its minute."""
    return [m + rng.random() for m, busy in enumerate(request) if busy]


@dataclass
class Result:
    billed: float = 0.0      # GPU minutes billed
    busy: int = 0            # minutes with a request
    starts: int = 0
    start_wait: float = 0.0  # minutes from the request that started the worker to ready
    delayed: int = 0         # requests that waited for a start
    cut: int = 0             # stops before Ollama was ready
    early: int = 0           # stops less than idleMinutes after the last work (a point not yet visible)
    broken: int = 0          # requests in flight when their worker was stopped
    active_days: int = 0
    effective: list[float] = field(default_factory=list)   # end of the last work -> stop, per stop
    reasons: Counter = field(default_factory=Counter)

    def row(self, label: str, usage: str, oracle: float) -> str:
        hours = self.billed / 60
        wait = f"{self.start_wait / self.starts:4.1f}" if self.starts and self.start_wait else "-"
        eff = (f"{sum(self.effective) / len(self.effective):5.1f} {max(self.effective):5.1f}"
               if self.effective else f"{'-':>5} {'-':>5}")
        per_day = f"{self.starts / self.active_days:6.1f}" if self.active_days else f"{'-':>6}"
        return (f"{usage:>6} {label:<14} {hours:7.1f} {(self.billed - self.busy) / 60:7.1f} {self.starts:6d} "
                f"{per_day} {self.cut:4d} {self.early:5d} {self.broken:6d} {self.delayed:7d} {wait:>5} {eff} "
                f"{hours * SPOT:8.2f} {hours * ON_DEMAND:9.2f} {self.billed / oracle:8.2f}")


class Worker:
    """One GPU worker under the scaler, event by event (times in minutes)."""

    def __init__(self, idle_minutes: int, boot_rng: random.Random, visible_after: float):
        self.settings = Settings(idle_minutes)
        self.boot_rng = boot_rng
        self.lag = visible_after / 60
        self.result = Result()
        self.state = "stopped"
        self.held: list[float] = []
        self.transition = math.inf  # when pending, booting or stopping ends

    # --- what happens to the instance -------------------------------------------
    def start(self, t: float) -> None:
        self.state, self.launch, self.transition = "pending", t, t + PENDING
        self.result.starts += 1
        self.work: dict[int, float] = {}       # minute -> when its Activity point was published
        self.served: dict[int, int] = {}       # minute -> requests served in it
        self.last_work_end = None

    def advance(self, t: float) -> None:
        """Run the instance's own transitions due by `t`."""
        while self.transition <= t:
            at = self.transition
            if self.state == "pending":
                self.state, self.running_at = "running", at
                self.ready_time = at + self.boot_rng.randint(*BOOT) + MODEL_LOAD
                self.first_run = math.ceil(at + AGENT_FIRST)
                self.ready_minute = max(self.first_run, math.ceil(self.ready_time - AGENT_PROBE / 60))
                self.ready_visible = self.ready_minute + AGENT_PUBLISH / 60 + self.lag
                self.transition = self.ready_time
            elif self.state == "running":
                self.result.start_wait += at - self.held[0]
                self.result.delayed += len(self.held)
                for k in range(len(self.held)):
                    self.do_work(at + k)
                self.held, self.transition = [], math.inf
            elif self.state == "stopping":
                self.state, self.transition = "stopped", math.inf
                if self.held:
                    self.start(at)

    def do_work(self, t: float) -> None:
        minute = math.floor(t)
        self.work.setdefault(minute, t)
        self.served[minute] = self.served.get(minute, 0) + 1
        self.last_work_end = max(self.last_work_end or 0, minute + 1)

    def request(self, t: float) -> None:
        self.result.busy += 1
        if self.state == "running" and t >= self.ready_time:
            self.do_work(t)
            return
        self.held.append(t)
        if self.state == "stopped":
            self.start(t)

    # --- what the Lambda sees and does ----------------------------------------------
    def tick(self, t: float) -> None:
        if self.state != "running":
            return  # rule 1: decide answers "none" without looking further
        now_minute = math.floor(t)
        ready = {}
        if self.ready_visible <= t:
            ready[T0 + timedelta(minutes=self.ready_minute)] = 1.0
        activity = {}
        # Two windows back: as far as `decide` looks when the newest points are late.
        for minute in range(max(now_minute - 2 * self.settings.idle_minutes, math.floor(self.launch)),
                            now_minute + 1):
            published = self.work.get(minute)
            if published is not None and published + self.lag <= t:
                activity[T0 + timedelta(minutes=minute)] = 1.0
            elif minute >= self.first_run and minute + AGENT_PUBLISH / 60 + self.lag <= t:
                activity[T0 + timedelta(minutes=minute)] = 0.0
        decision = decide("running", T0 + timedelta(minutes=self.launch), activity, ready,
                          T0 + timedelta(minutes=t), self.settings)
        if decision.action == STOP:
            self.stop(t, decision.reason.split(":")[0])

    def stop(self, t: float, reason: str) -> None:
        r = self.result
        r.billed += t - self.running_at
        r.reasons[reason] += 1
        if t < self.ready_time:
            r.cut += 1
        if self.last_work_end is not None:
            effective = t - self.last_work_end
            if -1 < effective < self.settings.idle_minutes:
                r.early += 1
            if effective < 0:
                r.broken += self.served.get(math.floor(t), 0)
            r.effective.append(max(effective, 0.0))
        self.state, self.transition = "stopping", t + STOPPING

    def finish(self) -> None:
        if self.state == "running":
            self.result.billed += MINUTES - self.running_at


def simulate(times: list[float], idle_minutes: int, seed: str, *, schedule: int = 1,
             offset: float = TICK_OFFSET, visible_after: float = VISIBLE_AFTER) -> Result:
    """The worker's month under the scaler: requests and Lambda ticks in time order."""
    worker = Worker(idle_minutes, random.Random(seed), visible_after)
    worker.result.active_days = len({math.floor(t) // 1440 for t in times})
    ticks = [k * schedule + offset / 60 for k in range(MINUTES // schedule)]
    i = 0
    for tick in ticks:
        while i < len(times) and times[i] < tick:
            worker.advance(times[i])
            worker.request(times[i])
            i += 1
        worker.advance(tick)
        worker.tick(tick)
    worker.advance(MINUTES)
    worker.finish()
    return worker.result


def oracle(request: list[bool]) -> Result:
    minutes = [m for m, r in enumerate(request) if r]
    result = Result(busy=len(minutes))
    if not minutes:
        return result
    result.billed, result.starts = ORACLE_RESTART + 1, 1
    for before, after in zip(minutes, minutes[1:]):
        gap = after - before - 1
        if gap > ORACLE_RESTART:
            result.billed += ORACLE_RESTART + 1
            result.starts += 1
        else:
            result.billed += gap + 1
    return result


def traces() -> list[tuple[int, list[bool], list[float]]]:
    out = []
    for level in LEVELS_HOURS:
        request = usage_trace(level, random.Random(f"{SEED}-{level}"))
        out.append((level, request, arrivals(request, random.Random(f"{SEED}-{level}-arrivals"))))
    return out


def main() -> None:
    began = time.perf_counter()
    print(__doc__.split("\n\n")[0].replace("\n", " "))
    defaults = Settings(1)
    print(f"{DAYS} days, seed {SEED}; spot ${SPOT}/h, on-demand ${ON_DEMAND}/h; oracle restart cost "
          f"{ORACLE_RESTART:g} GPU-minutes; Lambda every minute at :{TICK_OFFSET:02d}; points visible "
          f"{VISIBLE_AFTER} s after publishing; maxRunHours {defaults.max_run_hours}, "
          f"notReadyMinutes {defaults.not_ready_minutes}")
    print(f"{'usage':>6} {'policy':<14} {'GPU h':>7} {'idle h':>7} {'starts':>6} {'/day':>6} {'cut':>4} "
          f"{'early':>5} {'broken':>6} {'delayed':>7} {'wait':>5} {'eff.idle':>11} {'$ spot':>8} {'$ on-dem.':>9} {'x oracle':>8}")
    all_traces = traces()
    reasons: Counter = Counter()
    for level, request, times in all_traces:
        best = oracle(request)
        usage = f"{level}h/d"
        always = Result(billed=MINUTES, busy=best.busy)
        print(always.row("always-on", usage, best.billed))
        for idle in TIMEOUTS:
            result = simulate(times, idle, f"{SEED}-{level}-boot")
            reasons += result.reasons
            print(result.row(f"idle {idle} min", usage, best.billed))
        print(best.row("oracle", usage, best.billed))
    print("idle h: billed hours without a request (timeout, boot); /day: cold starts a user feels per active day\n"
          "cut: stops before Ollama was ready; early: stops less than idleMinutes after the last work (a point\n"
          "not visible yet); broken: requests in flight when their worker was stopped; delayed: requests held by\n"
          "a cold start; wait: mean minutes from the first held request to ready; eff.idle: mean and max minutes\n"
          "from the end of the last work (a request occupies its minute) to the stop")
    print("stops by reason, all rows above: " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())))

    print("\nEffective idle (mean / max minutes, all usage levels) and x oracle (4h/d) by scaler schedule:")
    print(f"{'idle':>6} " + " ".join(f"{f'rate({s} min)':>24}" for s in SCHEDULES))
    oracle_4h = oracle(all_traces[1][1]).billed
    for idle in TIMEOUTS:
        cells = []
        for schedule in SCHEDULES:
            effective, ratio = [], 0.0
            for level, request, times in all_traces:
                result = simulate(times, idle, f"{SEED}-{level}-boot", schedule=schedule)
                effective += result.effective
                if level == LEVELS_HOURS[1]:
                    ratio = result.billed / oracle_4h
            cells.append(f"{sum(effective) / len(effective):6.1f} / {max(effective):5.1f}  {ratio:5.2f}x")
        print(f"{idle:>6} " + " ".join(f"{c:>24}" for c in cells))

    print("\nSensitivity (idle 10, rate(1 minute), 4h/d): CloudWatch lag and the Lambda's second in the minute")
    print(f"{'lag s':>6} {'tick s':>7} {'eff. mean':>10} {'eff. max':>9} {'early':>6} {'broken':>7} {'x oracle':>9}")
    level, request, times = all_traces[1]
    for lag in (0, VISIBLE_AFTER, 90):
        for offset in (5, TICK_OFFSET, 55):
            result = simulate(times, 10, f"{SEED}-{level}-boot", offset=offset, visible_after=lag)
            print(f"{lag:>6} {offset:>7} {sum(result.effective) / len(result.effective):10.2f} "
                  f"{max(result.effective):9.2f} {result.early:6d} {result.broken:7d} "
                  f"{result.billed / oracle_4h:9.2f}")
    print(f"ran in {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
