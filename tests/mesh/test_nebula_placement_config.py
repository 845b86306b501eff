"""What each lighthouse placement (`lighthousePlacement`, tests/conftest.py
PLACEMENTS) makes of the Nebula files, read back from the rendered
`nebula/<host>/config.yml` and `host.crt` of the whole program under mocks:

- who runs `am_lighthouse`, and where every other host finds each lighthouse
  (`static_host_map`: the Elastic IP the mocks gave that host, the user's DNS
  endpoint, a homelab lighthouse's LAN address first for homelab nodes);
- listen ports (a lighthouse never on 0: Nebula refuses it) and report intervals;
- every `lighthouse.hosts` entry in `static_host_map` (Nebula 1.6 and 1.10 do not
  start otherwise; tests/mesh/test_nebula_real.py shows both with the real binary);
- certificates and firewall rules the same in every placement, so moving the
  lighthouse re-issues no certificate;
- a homelab lighthouse gets a config of its own, the other nodes share one.
"""

from __future__ import annotations

import ipaddress

import pytest
import yaml

from components.mesh import nebula_cert as nc
from components.mesh.nebula_pki import HostCertProvider
from tests.conftest import PLACEMENTS
from tools import harness

HOMELAB = ["talos-cp-1", "talos-worker-1"]           # Pulumi.dev.yaml
WORKERS = ["gpu-0", "gpu-1"]
LIGHTHOUSES = {"workers": WORKERS, "ec2": ["lighthouse"], "homelab": ["talos-cp-1"]}
HOSTS = {placement: (["lighthouse"] if placement == "ec2" else []) + HOMELAB + WORKERS for placement in PLACEMENTS}
DNS_ENDPOINT = "home.example.net:4242"               # PLACEMENTS["homelab"]
LAN_IP = "192.168.1.20"
DYNAMIC = "pulumi-python:dynamic:Resource"


def config(plan, host: str) -> dict:
    return yaml.safe_load(plan.file(f"nebula/{host}/config.yml").content)


def run(placement: str, **extra: str) -> harness.Plan:
    return harness.run_stack("dev", {**PLACEMENTS[placement], "hybrid-llm:gpuWorkers": "2",
                                     **{f"hybrid-llm:{k}": v for k, v in extra.items()}})


@pytest.fixture(scope="module")
def plans() -> dict[str, harness.Plan]:
    return {placement: run(placement) for placement in PLACEMENTS}


def eip_of(plan, host: str) -> harness.PlannedResource:
    (eip,) = [r for r in plan.of_type("aws:ec2/eip:Eip") if r.plain()["tags"]["NebulaHost"] == host]
    return eip


def public_endpoints(plan, placement: str, port: int = 4242) -> dict[str, str]:
    """Lighthouse -> what hosts outside the home dial: the EIP the mocks gave an
    AWS lighthouse, the user's endpoint for a homelab one."""
    return {h: DNS_ENDPOINT if placement == "homelab" else f"{eip_of(plan, h).state['publicIp']}:{port}"
            for h in LIGHTHOUSES[placement]}


def expected_static_map(plan, placement: str, host: str, port: int = 4242) -> dict[str, list[str]]:
    if host in LIGHTHOUSES[placement]:
        return {}
    ips = plan.outputs["nebulaIps"].value
    lan = placement == "homelab" and host in HOMELAB
    return {ips[lh]: ([f"{LAN_IP}:{port}"] if lan else []) + [endpoint]
            for lh, endpoint in public_endpoints(plan, placement, port).items()}


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_the_hosts_of_each_placement(plans, placement):
    plan = plans[placement]
    assert list(plan.outputs["nebulaIps"].value) == HOSTS[placement]
    assert sorted({f.path.split("/")[1] for f in plan.files if f.path.startswith("nebula/")}) == \
        sorted(HOSTS[placement])
    assert plan.outputs["lighthousePlacement"].value == placement


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_am_lighthouse_on_exactly_the_placements_lighthouses(plans, placement):
    plan = plans[placement]
    running = [h for h in HOSTS[placement] if config(plan, h)["lighthouse"]["am_lighthouse"] is True]
    assert running == LIGHTHOUSES[placement]
    for host in HOSTS[placement]:
        assert config(plan, host)["lighthouse"]["am_lighthouse"] in (True, False), "a YAML boolean"


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_static_host_map_and_lighthouse_hosts(plans, placement):
    """A lighthouse lists nobody; every other host lists every lighthouse, at its
    public endpoint, a homelab node at the LAN address first."""
    plan = plans[placement]
    ips = plan.outputs["nebulaIps"].value
    for host in HOSTS[placement]:
        c = config(plan, host)
        expected = expected_static_map(plan, placement, host)
        assert c["static_host_map"] == expected, host
        assert c["lighthouse"]["hosts"] == [ips[lh] for lh in LIGHTHOUSES[placement] if host not in
                                            LIGHTHOUSES[placement]], host
    assert plan.outputs["lighthouseEndpoints"].value == public_endpoints(plan, placement)


def test_the_endpoints_spelled_out(plans):
    """The same as above without the helper, for one host of each kind."""
    workers, ec2, home = plans["workers"], plans["ec2"], plans["homelab"]
    eips = {h: eip_of(workers, h).state["publicIp"] for h in WORKERS}
    assert config(workers, "talos-cp-1")["static_host_map"] == {
        "10.42.2.1": [f"{eips['gpu-0']}:4242"], "10.42.2.2": [f"{eips['gpu-1']}:4242"]}
    assert config(ec2, "gpu-1")["static_host_map"] == {
        "10.42.0.1": [f"{eip_of(ec2, 'lighthouse').state['publicIp']}:4242"]}
    assert config(home, "talos-worker-1")["static_host_map"] == {
        "10.42.1.1": ["192.168.1.20:4242", "home.example.net:4242"]}
    assert config(home, "gpu-0")["static_host_map"] == {"10.42.1.1": ["home.example.net:4242"]}


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_every_lighthouse_host_is_in_the_static_host_map(plans, placement):
    """Nebula 1.6 and 1.10 refuse to start on a `lighthouse.hosts` entry without
    a `static_host_map` entry; and each entry is the overlay address of a host
    that runs `am_lighthouse`."""
    plan = plans[placement]
    by_ip = {ip: host for host, ip in plan.outputs["nebulaIps"].value.items()}
    for host in HOSTS[placement]:
        c = config(plan, host)
        for entry in c["lighthouse"]["hosts"]:
            assert c["static_host_map"].get(entry), (host, entry)
            assert config(plan, by_ip[entry])["lighthouse"]["am_lighthouse"] is True
        assert set(c["static_host_map"]) == set(c["lighthouse"]["hosts"]), host


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_each_aws_lighthouse_is_found_at_the_eip_on_its_own_instance(plans, placement):
    """The address in the configs is the one associated with that host's instance;
    only AWS lighthouses get an Elastic IP."""
    plan = plans[placement]
    aws_lighthouses = [h for h in LIGHTHOUSES[placement] if h not in HOMELAB]
    assert sorted(r.plain()["tags"]["NebulaHost"] for r in plan.of_type("aws:ec2/eip:Eip")) == sorted(aws_lighthouses)
    assert plan.outputs["elasticIps"].value == {h: eip_of(plan, h).state["publicIp"] for h in aws_lighthouses}
    instances = {r.id: r.plain()["tags"] for r in plan.of_type("aws:ec2/instance:Instance")}
    associations = plan.of_type("aws:ec2/eipAssociation:EipAssociation")
    assert len(associations) == len(aws_lighthouses)
    for host in aws_lighthouses:
        (association,) = [a for a in associations if a.plain()["allocationId"] == eip_of(plan, host).state["allocationId"]]
        tags = instances[association.plain()["instanceId"]]
        assert tags.get("Worker", tags.get("Role")) == host


@pytest.mark.parametrize("placement", list(PLACEMENTS))
def test_listen_ports_and_report_intervals(placement):
    """`nebulaPort` (4343 here) on every lighthouse and every AWS host; 0 on the
    other homelab nodes. AWS hosts report every 10 s, homelab nodes every 60 s.
    An Elastic IP endpoint takes `nebulaPort`; a homelab lighthouse's public
    endpoint is the user's (the router may forward another port), its LAN one
    `nebulaPort`."""
    plan = run(placement, nebulaPort="4343")
    for host in HOSTS[placement]:
        c = config(plan, host)
        lighthouse = host in LIGHTHOUSES[placement]
        port = c["listen"]["port"]
        assert port == (4343 if lighthouse or host not in HOMELAB else 0), host
        if lighthouse:
            assert port != 0, "Nebula refuses am_lighthouse on port 0"
        assert c["lighthouse"]["interval"] == (60 if host in HOMELAB else 10), host
        assert c["static_host_map"] == expected_static_map(plan, placement, host, 4343), host


def _certificate_inputs(plan) -> dict[str, dict]:
    """Host name -> the URN and every input whose change re-issues its certificate,
    but the CA's certificate (a fresh CA each run; its own inputs are compared)."""
    keys = [k for k in HostCertProvider.REPLACE_KEYS if k != "ca_cert_pem"] + ["early_renewal_hours"]
    out = {}
    for r in plan.of_type(DYNAMIC):
        inputs = r.plain()
        if "ca_cert_pem" in inputs:
            out[inputs["name"]] = {"urn": r.urn, **{k: inputs.get(k) for k in keys}}
    return out


def _ca_inputs(plan) -> dict:
    (ca,) = [r for r in plan.of_type(DYNAMIC) if r.name == f"hybrid-llm-{plan.stack}-ca"]
    return {"urn": ca.urn, **{k: ca.plain()[k] for k in ("name", "validity_period_hours", "early_renewal_hours")}}


@pytest.mark.parametrize("placement", [p for p in PLACEMENTS if p != "workers"])
def test_moving_the_lighthouse_reissues_no_certificate(plans, placement):
    """The mocks run the certificate provider's real `create`, with a fresh key and
    the current time, so two runs never give the same PEM: compare instead what
    decides a re-issue (the resource's URN and its replace inputs), and what the
    certificates carry. Only the EC2 lighthouse's own certificate comes and goes."""
    base, other = plans["workers"], plans[placement]
    assert _ca_inputs(base) == _ca_inputs(other)
    before, after = _certificate_inputs(base), _certificate_inputs(other)
    assert set(after) ^ set(before) == ({"lighthouse"} if placement == "ec2" else set())
    shared = set(before) & set(after)
    assert shared == set(HOMELAB + WORKERS)
    for host in shared:
        assert before[host] == after[host], host
        a = nc.Certificate.from_pem(base.file(f"nebula/{host}/host.crt").content).details
        b = nc.Certificate.from_pem(other.file(f"nebula/{host}/host.crt").content).details
        assert (a.name, a.ips, a.groups, a.subnets) == (b.name, b.ips, b.groups, b.subnets), host
        assert a.not_after - a.not_before == b.not_after - b.not_before


@pytest.mark.parametrize("placement", [p for p in PLACEMENTS if p != "workers"])
def test_firewall_and_routes_do_not_depend_on_the_placement(plans, placement):
    for host in HOMELAB + WORKERS:
        a, b = config(plans["workers"], host), config(plans[placement], host)
        assert a["firewall"] == b["firewall"], host
        assert a["tun"] == b["tun"], host
        assert a["lighthouse"].get("local_allow_list") == b["lighthouse"].get("local_allow_list"), host


@pytest.mark.parametrize("placement", ["workers", "ec2"])
def test_without_a_homelab_lighthouse_every_homelab_node_runs_one_config(plans, placement):
    plan = plans[placement]
    assert len({plan.file(f"nebula/{h}/config.yml").content for h in HOMELAB}) == 1


def test_the_homelab_lighthouse_has_its_own_config_and_the_others_share_one():
    """Three homelab nodes, the second one the lighthouse: it runs a config of its
    own; the other two share one that names no node and dials it on the LAN first."""
    nodes = ["talos-cp-1", "talos-worker-1", "talos-worker-2"]
    plan = harness.run_stack("dev", {**PLACEMENTS["homelab"], "hybrid-llm:gpuWorkers": "2",
                                     "hybrid-llm:homelabNodes": str(nodes).replace("'", '"'),
                                     "hybrid-llm:homelabLighthouseNode": "talos-worker-1",
                                     "hybrid-llm:homelabLighthouseLanIp": "192.168.1.21"})
    ips = plan.outputs["nebulaIps"].value
    texts = {h: plan.file(f"nebula/{h}/config.yml").content for h in nodes}
    assert texts["talos-cp-1"] == texts["talos-worker-2"] != texts["talos-worker-1"]
    shared = texts["talos-cp-1"]
    for node in nodes:
        assert node not in shared and ips[node] not in shared.replace(ips["talos-worker-1"], "")
    own = config(plan, "talos-worker-1")
    assert own["lighthouse"] == {"am_lighthouse": True, "interval": 60, "hosts": []}
    assert own["static_host_map"] == {} and own["listen"]["port"] == 4242
    assert own["tun"]["unsafe_routes"] == yaml.safe_load(shared)["tun"]["unsafe_routes"] != []
    assert own["firewall"] == yaml.safe_load(shared)["firewall"]
    assert yaml.safe_load(shared)["static_host_map"] == {
        ips["talos-worker-1"]: ["192.168.1.21:4242", DNS_ENDPOINT]}
    for worker in WORKERS:
        assert config(plan, worker)["static_host_map"] == {ips["talos-worker-1"]: [DNS_ENDPOINT]}
    assert ipaddress.IPv4Address(ips["talos-worker-1"]) == ipaddress.IPv4Address("10.42.1.2"), \
        "the lighthouse keeps its address as a homelab node"
