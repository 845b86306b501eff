"""The dev stack's rendered mesh in a NebulaLab (tools/netns.py), for one
lighthouse placement: homelab nodes behind a home router that NATs, GPU workers
and an EC2 lighthouse on the "internet" bridge.

Only what the lab cannot have is rewritten: an Elastic IP becomes its host's lab
address, the homelab lighthouse's configured LAN address its lab LAN address. The
homelab lighthouse's DNS endpoint stays a name, resolved in every namespace
through its hosts file to the router's WAN address, where a UDP forward (and
nothing else) leads to the lighthouse node.
"""

from __future__ import annotations

from dataclasses import dataclass

from tools import harness
from tools.harness import PLACEMENTS
from tools.netns import NebulaLab, lab_files, rewrite_endpoints

# The dev stack's homelab nodes: with the lighthouse in the homelab it is the first.
LIGHTHOUSE_NODE, HOMELAB = "talos-cp-1", "talos-worker-1"
ROUTER = "home"


@dataclass
class Mesh:
    lab: NebulaLab
    plan: harness.Plan
    ips: dict[str, str]
    placement: str


def _endpoint_host(endpoint: str) -> tuple[str, int]:
    host, _, port = endpoint.rpartition(":")
    return host, int(port)


def build(lab: NebulaLab, placement: str, workers: int = 2, start: bool = True, **overrides: str) -> Mesh:
    """Add (and start, unless `start` is false) every host of the placement's mesh."""
    plan = harness.run_stack("dev", {**PLACEMENTS[placement], "hybrid-llm:gpuWorkers": str(workers), **overrides})
    ips = plan.outputs["nebulaIps"].value
    elastic = plan.outputs["elasticIps"].value               # host -> the Elastic IP the mocks gave
    endpoints = plan.outputs["lighthouseEndpoints"].value    # lighthouse -> addr:port as rendered
    router = lab.add_router(ROUTER)
    homelab = [LIGHTHOUSE_NODE, HOMELAB]
    internet = [name for name in ips if name not in homelab]
    lab_addresses: dict[str, str] = {}
    # The EC2 lighthouse first: the others' maps name it.
    for name in sorted(internet, key=lambda n: n != "lighthouse"):
        lab.add_host(name, lab_files(plan, name),
                     endpoints={elastic[n]: lab_addresses[n] for n in elastic if n in lab_addresses})
        lab_addresses[name] = str(lab.hosts[name].address)
    rewritten = {elastic[n]: lab_addresses[n] for n in elastic}
    lan_ip = plan.config.get("hybrid-llm:homelabLighthouseLanIp")
    for name in homelab:
        lab.add_host(name, lab_files(plan, name), behind=ROUTER, endpoints=rewritten or None)
        if name == LIGHTHOUSE_NODE and lan_ip:
            rewritten[lan_ip] = str(lab.hosts[name].address)
    if placement == "homelab":
        dns_name, port = _endpoint_host(endpoints[LIGHTHOUSE_NODE])
        lab.forward_udp(ROUTER, port, LIGHTHOUSE_NODE, int(plan.config["hybrid-llm:nebulaPort"]))
        for name in lab.hosts:
            lab.add_hosts_entry(name, dns_name, str(router.wan_address))
        # The plain node's map names the LAN address; it was added before it was known.
        config = lab.hosts[HOMELAB].directory / "config.yml"
        config.write_text(rewrite_endpoints(config.read_text(), rewritten))
    if start:
        for name in lab.hosts:
            lab.start(name)
        for name in lab.hosts:
            lab.wait_for_interface(name, ips[name])
    return Mesh(lab, plan, ips, placement)
