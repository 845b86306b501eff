"""The Nebula part of a cold start, measured: a GPU worker that was stopped comes
back on a new underlay address (a stopped EC2 instance gets a new public IP) and
a homelab node that kept sending to it all along reaches it again. Prints, from
the worker's `nebula` start, the seconds until `nebula1` carries the overlay
address (what `hybrid-llm-wait-nebula` waits for before k3s) and until the
homelab node's overlay ping is answered. The stack's own rendered configs, in
network namespaces; median and max of a few runs. Prints figures; asserts
nothing. Needs root and Debian's nebula (otherwise says it skipped)."""

from __future__ import annotations

import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tools import harness  # noqa: E402
from tools.netns import NebulaLab, lab_files, why_no_lab  # noqa: E402

RUNS = 3
DOWN_SECONDS = 20.0
"""How long the worker stays stopped: long enough for the homelab's tunnel to it to
have been tried and failed while it was away."""
HOMELAB, WORKER = "talos-cp-1", "gpu-0"


def one_run(plan: harness.Plan) -> tuple[float, float]:
    worker_ip = plan.outputs["nebulaIps"].value[WORKER]
    with NebulaLab() as lab:
        lighthouse = lab.add_host("lighthouse", lab_files(plan, "lighthouse"))
        lab.add_host(HOMELAB, lab_files(plan, HOMELAB), str(lighthouse.address))
        lab.add_host(WORKER, lab_files(plan, WORKER), str(lighthouse.address))
        for name in ("lighthouse", HOMELAB, WORKER):
            lab.start(name)
        lab.wait_for_ping(HOMELAB, worker_ip, timeout=30)
        stopped = lab.hosts[WORKER].process
        stopped.terminate()
        stopped.wait(5)
        done = threading.Event()

        def keep_sending() -> None:  # requests keep arriving while the worker is away
            while not done.is_set():
                lab.ping(HOMELAB, worker_ip, wait=0.2)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        time.sleep(DOWN_SECONDS)
        lab.add_host(f"{WORKER}-restarted", lab_files(plan, WORKER), str(lighthouse.address))
        start = time.monotonic()
        lab.start(f"{WORKER}-restarted")
        lab.wait_for_interface(f"{WORKER}-restarted", worker_ip, timeout=20)
        address = time.monotonic() - start
        done.set()
        sender.join()
        while not lab.ping(HOMELAB, worker_ip, wait=0.2):
            if time.monotonic() - start > 60:
                raise TimeoutError(f"no overlay ping 60s after the restart\n{lab.logs()}")
        return address, time.monotonic() - start


def main() -> int:
    reason = why_no_lab()
    if reason:
        print(f"worker_restart_mesh: {reason}; skipped")
        return 0
    plan = harness.run_stack("dev")
    runs = [one_run(plan) for _ in range(RUNS)]
    for label, samples in (("nebula1 has its address", [a for a, _ in runs]),
                           ("homelab node's overlay ping answered", [p for _, p in runs])):
        print(f"worker restarted on a new address, {label}: median {statistics.median(samples):.2f}s, "
              f"max {max(samples):.2f}s ({RUNS} runs, down {DOWN_SECONDS:g}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
