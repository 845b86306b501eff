"""Seconds from starting every nebula process of the dev stack's mesh (one GPU
worker, two homelab nodes behind a NAT'd home router, and the lighthouse where
the placement puts it: tools/placement_lab.py) to the first overlay ping from the
homelab node to the worker that gets an answer, for each lighthouse placement.
Median of 5 runs, each on fresh namespaces. Prints figures; asserts nothing.
Needs root, Debian's nebula and iptables-nft."""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import placement_lab  # noqa: E402
from tools.harness import PLACEMENTS  # noqa: E402
from tools.netns import NebulaLab, why_no_lab  # noqa: E402
from tools.placement_lab import HOMELAB  # noqa: E402

RUNS = 5
WORKER = "gpu-0"


def one_run(placement: str) -> float:
    with NebulaLab() as lab:
        mesh = placement_lab.build(lab, placement, workers=1, start=False)
        start = time.monotonic()
        for name in lab.hosts:
            lab.start(name)
        while True:
            if lab.ping(HOMELAB, mesh.ips[WORKER], wait=0.2):
                return time.monotonic() - start
            if time.monotonic() - start > 30:
                raise TimeoutError(f"{placement}: no overlay ping after 30s\n{lab.logs()}")


def main() -> int:
    reason = why_no_lab(router=True)
    if reason:
        print(f"mesh_up: {reason}; skipped")
        return 0
    for placement in PLACEMENTS:
        samples = [one_run(placement) for _ in range(RUNS)]
        print(f"lighthousePlacement {placement}: nebula mesh up (every process to the first overlay ping), "
              f"{RUNS} runs: median {statistics.median(samples):.2f}s, min {min(samples):.2f}s, "
              f"max {max(samples):.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
