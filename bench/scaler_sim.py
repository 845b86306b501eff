"""Replays month-long usage traces through the scaler's real decision function
(scaler_lambda/decision.py), one minute at a time, and prints what the GPU would
cost at several idle timeouts, against always-on and a clairvoyant oracle.
Prints figures; asserts nothing.

Model (all assumptions, stated so the figures can be argued with):
- Usage: every day, sessions of 20-100 min between 07:00 and 24:00 until the day's
  target (the level, scaled by 0.5-1.5 at random) is reached. Inside a session a
  request arrives every ~1.5 min (exponential), with an 8 % chance of a 6-20 min
  pause. Each request occupies its minute ("busy" minutes).
- Activity signal, as the worker's agent publishes it: Ollama keeps a model loaded
  OLLAMA_KEEP_ALIVE = 5 min after the last request, so Activity is 1 in each minute
  within 5 min of a request. The agent publishes at :30 of each minute; the Lambda
  runs at :05, so it sees every complete minute and never the current one.
- Start: a request to a stopped worker starts it. pending 1 min (not billed), then
  2-4 min boot (Nebula, k3s) + 1 min model load, billed but not serving; held
  requests are served once ready. The agent publishes 0 from 2 min after the start
  until the model is loaded (it cannot see requests held by the activator).
  Stopping takes 1 min (not billed); a request in that minute starts the worker
  once it is stopped.
- Prices (DESIGN.md, us-east-1): g4dn.xlarge spot $0.20/h (the middle of the
  $0.16-0.22 seen), on-demand $0.526/h. Per-second billing, so per minute here.
- Oracle: knows every request in advance, has the GPU ready at each busy minute
  and stops in a gap exactly when staying up costs more than a restart. Restart
  cost = the billed boot-and-load minutes (mean 4 min of GPU time); the user's
  wait is not priced (the oracle never makes anyone wait).
- Always-on: no scaler, the worker runs all month.
"""

from __future__ import annotations

import random
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from scaler_lambda.decision import STOP, Settings, decide  # noqa: E402

DAYS = 30
MINUTES = DAYS * 24 * 60
LEVELS_HOURS = (2, 4, 8)
TIMEOUTS = (5, 10, 15, 30)
KEEP_ALIVE = 5
PENDING = 1
BOOT = (2, 4)
MODEL_LOAD = 1
AGENT_FIRST = 2
STOPPING = 1
SPOT, ON_DEMAND = 0.20, 0.526
ORACLE_RESTART = (BOOT[0] + BOOT[1]) / 2 + MODEL_LOAD
SEED = 20261123
T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
STAMPS = [T0 + timedelta(minutes=m) for m in range(MINUTES + 1)]
LAMBDA_OFFSET = timedelta(seconds=5)


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


@dataclass
class Result:
    billed: int = 0          # GPU minutes billed
    busy: int = 0            # minutes with a request
    starts: int = 0
    start_wait: int = 0      # minutes from the request that started the worker to ready
    delayed: int = 0         # requests that waited for a start
    cut: int = 0             # stops of a worker still booting for held requests

    def row(self, label: str, usage: str, oracle: float) -> str:
        hours = self.billed / 60
        wait = f"{self.start_wait / self.starts:4.1f}" if self.starts and self.start_wait else "-"
        return (f"{usage:>6} {label:<14} {hours:8.1f} {(self.billed - self.busy) / 60:8.1f} "
                f"{self.starts:7d} {self.cut:4d} {self.delayed:8d} {wait:>6} {hours * SPOT:9.2f} {hours * ON_DEMAND:10.2f} "
                f"{self.billed / oracle:8.2f}")


def simulate(request: list[bool], idle_minutes: int, rng: random.Random) -> Result:
    """The worker's life under the scaler, minute by minute."""
    settings = Settings(idle_minutes)
    result = Result()
    state, until = "stopped", 0         # until: minute the current transition ends
    launch = ready = 0
    last_request = -10**9
    held: list[int] = []
    activity: list = [None] * MINUTES
    start_wanted = False
    for m in range(MINUTES):
        if state == "pending" and m >= until:
            state, launch = "running", m
            ready = m + rng.randint(*BOOT) + MODEL_LOAD
        if state == "stopping" and m >= until:
            state = "stopped"
        if request[m]:
            result.busy += 1
            if state == "running" and m >= ready:
                last_request = m
            else:
                held.append(m)
                start_wanted = True
        if start_wanted and state == "stopped":
            state, until, start_wanted = "pending", m + PENDING, False
            result.starts += 1
        if state == "running":
            result.billed += 1
            if m >= ready:
                if held:
                    result.start_wait += m - held[0]
                    result.delayed += len(held)
                    held, last_request, start_wanted = [], m, False
                activity[m] = 1.0 if m - last_request < KEEP_ALIVE else 0.0
            elif m >= launch + AGENT_FIRST:
                activity[m] = 0.0
        # The Lambda at :05 of the next minute sees every complete minute up to m.
        now = STAMPS[m + 1] + LAMBDA_OFFSET
        first = max(0, m - idle_minutes - 1)
        seen = {STAMPS[k]: activity[k] for k in range(first, m + 1) if activity[k] is not None}
        if decide(state, STAMPS[launch], seen, now, settings).action == STOP:
            result.cut += m < ready
            state, until = "stopping", m + 1 + STOPPING
    return result


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


def main() -> None:
    began = time.perf_counter()
    print(__doc__.split("\n\n")[0].replace("\n", " "))
    print(f"{DAYS} days, seed {SEED}; spot ${SPOT}/h, on-demand ${ON_DEMAND}/h; oracle restart cost "
          f"{ORACLE_RESTART:g} GPU-minutes; keep-alive {KEEP_ALIVE} min")
    print(f"{'usage':>6} {'policy':<14} {'GPU h':>8} {'idle h':>8} {'starts':>7} {'cut':>4} {'delayed':>8} {'wait':>6} "
          f"{'$ spot':>9} {'$ on-dem.':>10} {'x oracle':>8}")
    for level in LEVELS_HOURS:
        rng = random.Random(f"{SEED}-{level}")
        request = usage_trace(level, rng)
        best = oracle(request)
        usage = f"{level}h/d"
        always = Result(billed=MINUTES, busy=best.busy)
        print(always.row("always-on", usage, best.billed))
        for idle in TIMEOUTS:
            result = simulate(request, idle, random.Random(f"{SEED}-{level}-boot"))
            print(result.row(f"idle {idle} min", usage, best.billed))
        print(best.row("oracle", usage, best.billed))
    print("idle h: billed minutes without a request (keep-alive, timeout, boot); delayed: requests held "
          "by a cold start; cut: stopped before the model was loaded; wait: mean minutes from the first held request to ready")
    print(f"ran in {time.perf_counter() - began:.1f} s")


if __name__ == "__main__":
    main()
