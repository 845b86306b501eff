"""Seconds from starting the three nebula processes (lighthouse, homelab node, GPU
worker, each in its own network namespace) to the first overlay ping from the
homelab node to the worker that gets an answer. Median of 5 runs, each on fresh
namespaces. Prints figures; asserts nothing. Needs root and Debian's nebula."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import harness  # noqa: E402
from tools.netns import NebulaLab, lab_files, why_no_lab  # noqa: E402

RUNS = 5
HOSTS = ("lighthouse", "talos-cp-1", "gpu-0")


def one_run(plan: harness.Plan) -> float:
    ips = plan.outputs["nebulaIps"].value
    with NebulaLab() as lab:
        lighthouse = lab.add_host("lighthouse", lab_files(plan, "lighthouse"))
        for name in HOSTS[1:]:
            lab.add_host(name, lab_files(plan, name), str(lighthouse.address))
        start = time.monotonic()
        for name in HOSTS:
            lab.start(name)
        while True:
            if lab.ping(HOSTS[1], ips[HOSTS[2]], wait=0.2):
                return time.monotonic() - start
            if time.monotonic() - start > 30:
                raise TimeoutError(f"no overlay ping after 30s\n{lab.logs()}")


def main() -> int:
    reason = why_no_lab()
    if reason:
        print(f"mesh_up: {reason}; skipped")
        return 0
    plan = harness.run_stack("dev")
    samples = [one_run(plan) for _ in range(RUNS)]
    print(f"nebula mesh up (3 processes to first overlay ping), {RUNS} runs: "
          f"median {statistics.median(samples):.2f}s, min {min(samples):.2f}s, max {max(samples):.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
