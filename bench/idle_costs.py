"""What the stack costs by lighthouse placement and number of workers, from the
same bill the plan prints (components/costs.py): the idle month, the month at
4 h a day per worker, and from how many hours a day per worker `workers` (an
Elastic IP each) costs no more than an EC2 lighthouse. The rest of the stack is the dev
stack's defaults. Prints figures; asserts nothing."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from components import costs  # noqa: E402
from components.config import parse  # noqa: E402
from tools import harness  # noqa: E402

WORKERS = (1, 2, 3, 4)
HOURS_A_DAY = 4


def bill(placement: str, workers: int) -> costs.Bill:
    raw = harness.stack_config("dev", {**harness.PLACEMENTS[placement], "hybrid-llm:gpuWorkers": str(workers)})
    return costs.bill(parse(raw, project=harness.PROJECT, stack="dev"))


def crossover_hours(workers: int) -> float:
    """Hours a day per worker from which `workers` costs no more than `ec2`: 0 when
    it is cheaper even idle. An Elastic IP bills idle; an EC2 lighthouse's workers
    pay for their own address by the running hour instead."""
    ours, theirs = bill("workers", workers), bill("ec2", workers)
    idle_gap = theirs.idle_monthly_usd - ours.idle_monthly_usd
    hourly_gap = workers * costs.DAYS_PER_MONTH * (theirs.active_hourly_usd - ours.active_hourly_usd)
    return 0.0 if idle_gap >= 0 else -idle_gap / hourly_gap


def main() -> int:
    placements = list(harness.PLACEMENTS)
    print(f"idle USD a month (and at {HOURS_A_DAY} h/day per worker), dev stack defaults, prices as of "
          f"{costs.PRICES_AS_OF}")
    print("workers  " + "  ".join(f"{p:>20}" for p in placements) + "  workers cheaper than ec2")
    for n in WORKERS:
        cells = []
        for placement in placements:
            b = bill(placement, n)
            cells.append(f"{b.idle_monthly_usd:7.2f} ({b.monthly_at(HOURS_A_DAY):7.2f})")
        hours = crossover_hours(n)
        verdict = "always" if hours == 0 else \
            ("never" if hours > 24 else f"from {hours:.1f} h/day per worker")
        print(f"{n:>7}  " + "  ".join(f"{c:>20}" for c in cells) + f"  {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
