"""Time to evaluate the whole program under mocks, against a one-resource pulumi-aws
program in the same run, and their ratio (the ratio is what to compare across
machines). Prints figures; asserts nothing."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import harness  # noqa: E402

RUNS = 5


def median_seconds(fn) -> float:
    samples = []
    for _ in range(RUNS):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def main() -> None:
    config = harness.stack_config("dev")
    baseline_program = Path(__file__).resolve().parent / "programs" / "one_resource.py"
    harness.run(config, program=baseline_program)  # warm imports for both
    plan = harness.run(config)
    whole = median_seconds(lambda: harness.run(config))
    baseline = median_seconds(lambda: harness.run(config, program=baseline_program))
    print(f"whole program:      {whole:.3f} s  ({len(plan.resources)} resources, median of {RUNS})")
    print(f"one-resource program: {baseline:.3f} s  (median of {RUNS})")
    print(f"ratio whole/one:    {whole / baseline:.1f}x")


if __name__ == "__main__":
    main()
