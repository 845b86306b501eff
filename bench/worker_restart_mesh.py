"""The Nebula part of a cold start, measured for each lighthouse placement: a GPU
worker that was stopped starts again and a homelab node that kept sending to it
all along reaches it again. The homelab nodes sit behind a NAT'd home router
(tools/placement_lab.py), as at home.

Where the worker comes back: on the same address with `workers` (its Elastic IP
stays with it), on a new one with `ec2` and `homelab` (a stopped instance without
an Elastic IP gets a new public IP at each start). With `homelab` the homelab
node has no address for the worker at all: it learns the new one from the
lighthouse node, which learns it from the worker's first report (sent at start).

Prints, from the worker's `nebula` start, the seconds until `nebula1` carries the
overlay address (what `hybrid-llm-wait-nebula` waits for before k3s) and until the
homelab node's overlay ping is answered; median and max of a few runs. Prints
figures; asserts nothing. Needs root, Debian's nebula and iptables-nft
(otherwise says it skipped)."""

from __future__ import annotations

import ipaddress
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import placement_lab  # noqa: E402
from tools.harness import PLACEMENTS  # noqa: E402
from tools.netns import NebulaLab, why_no_lab  # noqa: E402
from tools.placement_lab import HOMELAB  # noqa: E402

RUNS = 3
DOWN_SECONDS = 20.0
"""How long the worker stays stopped: long enough for the homelab's tunnel to it to
have been tried and failed while it was away."""
WORKER = "gpu-0"
NEW_ADDRESS_OFFSET = 100
"""A restarted worker without an Elastic IP comes back this far up the lab's underlay."""


def one_run(placement: str) -> tuple[float, float]:
    with NebulaLab() as lab:
        mesh = placement_lab.build(lab, placement, workers=1)
        worker_ip = mesh.ips[WORKER]
        lab.wait_for_ping(HOMELAB, worker_ip, timeout=30)
        worker = lab.hosts[WORKER]
        worker.process.terminate()
        worker.process.wait(5)
        if placement != "workers":       # no Elastic IP: a new public address at the start
            old = ipaddress.IPv4Interface(
                lab.exec(WORKER, "ip", "-4", "-o", "addr", "show", "dev", "eth0").stdout.split()[3])
            new = ipaddress.IPv4Interface(f"{old.ip + NEW_ADDRESS_OFFSET}/{old.network.prefixlen}")
            lab.exec(WORKER, "ip", "addr", "flush", "dev", "eth0")
            lab.exec(WORKER, "ip", "addr", "add", str(new), "dev", "eth0")
        done = threading.Event()

        def keep_sending() -> None:  # requests keep arriving while the worker is away
            while not done.is_set():
                lab.ping(HOMELAB, worker_ip, wait=0.2)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        time.sleep(DOWN_SECONDS)
        start = time.monotonic()
        lab.start(WORKER)
        lab.wait_for_interface(WORKER, worker_ip, timeout=20)
        address = time.monotonic() - start
        done.set()
        sender.join()
        while not lab.ping(HOMELAB, worker_ip, wait=0.2):
            if time.monotonic() - start > 60:
                raise TimeoutError(f"{placement}: no overlay ping 60s after the restart\n{lab.logs()}")
        return address, time.monotonic() - start


def main() -> int:
    reason = why_no_lab(router=True)
    if reason:
        print(f"worker_restart_mesh: {reason}; skipped")
        return 0
    for placement in PLACEMENTS:
        runs = [one_run(placement) for _ in range(RUNS)]
        for label, samples in (("nebula1 has its address", [a for a, _ in runs]),
                               ("homelab node's overlay ping answered", [p for _, p in runs])):
            print(f"lighthousePlacement {placement}: worker restarted, {label}: median "
                  f"{statistics.median(samples):.2f}s, max {max(samples):.2f}s ({RUNS} runs, down {DOWN_SECONDS:g}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
