"""The NebulaMesh component through the whole program under mocks: hosts and
addresses, certificates, SSM parameters, configs and firewall.

Most tests run the EC2-lighthouse placement (`lighthousePlacement: ec2`), the one
with a host of every role; what each placement makes of the lighthouse is
tests/mesh/test_nebula_placement_config.py."""

from __future__ import annotations

import hashlib
import ipaddress
import json

import pytest
import yaml
from pulumi.runtime import rpc

from components.mesh import nebula_cert as nc
from components.config import ConfigError
from components.inventory import Host
from components.mesh.nebula import NebulaMeshArgs, _check_hosts
from tests.conftest import PLACEMENTS
from tools import harness

PARAMETER = "aws:ssm/parameter:Parameter"
FILES = ("ca.crt", "host.crt", "host.key", "config.yml")
DEV_HOMELAB = ["talos-cp-1", "talos-worker-1"]        # Pulumi.dev.yaml


def config(plan, host: str) -> dict:
    return yaml.safe_load(plan.file(f"nebula/{host}/config.yml").content)


def cert(plan, host: str) -> nc.Certificate:
    return nc.Certificate.from_pem(plan.file(f"nebula/{host}/host.crt").content)


@pytest.fixture(scope="module")
def two_workers():
    """Two workers and an EC2 lighthouse."""
    return harness.run_stack("dev", {**PLACEMENTS["ec2"], "hybrid-llm:gpuWorkers": "2"})


def test_hosts_and_addresses_follow_the_config(two_workers):
    ips = two_workers.outputs["nebulaIps"].value
    assert list(ips) == ["lighthouse", *DEV_HOMELAB, "gpu-0", "gpu-1"]
    mesh = ipaddress.ip_network(two_workers.config["hybrid-llm:nebulaCidr"])
    assert ips["lighthouse"] == str(next(mesh.hosts()))
    assert len(set(ips.values())) == len(ips), "two hosts share an address"
    assert all(ipaddress.ip_address(ip) in mesh for ip in ips.values())


def test_every_host_has_its_own_certificate_with_its_name_address_and_groups(two_workers):
    ips = two_workers.outputs["nebulaIps"].value
    prefix = ipaddress.ip_network(two_workers.config["hybrid-llm:nebulaCidr"]).prefixlen
    expected_groups = {"lighthouse": ("lighthouse",), "talos-cp-1": ("homelab", "kubernetes"),
                       "talos-worker-1": ("homelab", "kubernetes"), "gpu-0": ("aws", "gpu", "kubernetes"),
                       "gpu-1": ("aws", "gpu", "kubernetes")}
    ca_pem = two_workers.outputs["nebulaCaCert"].value
    ca = nc.Certificate.from_pem(ca_pem)
    ca_fingerprint = hashlib.sha256(nc.pem_decode(ca_pem, "NEBULA CERTIFICATE")).hexdigest()
    seen_keys = set()
    for host, groups in expected_groups.items():
        c = cert(two_workers, host)
        assert c.details.name == host
        assert [str(i) for i in c.details.ips] == [f"{ips[host]}/{prefix}"]
        assert c.details.groups == groups
        assert c.details.issuer == ca_fingerprint
        nc.verify(c, ca)
        assert two_workers.file(f"nebula/{host}/ca.crt").content == ca_pem
        assert nc.host_public_key(two_workers.file(f"nebula/{host}/host.key").content) == c.details.public_key
        seen_keys.add(c.details.public_key)
    assert len(seen_keys) == len(expected_groups), "hosts share a key"


def test_validity_comes_from_config(run_program):
    plan = run_program({"hybrid-llm:nebulaCaValidityHours": "500", "hybrid-llm:nebulaCertValidityHours": "50",
                        "hybrid-llm:nebulaEarlyRenewalHours": "5"})
    ca = nc.Certificate.from_pem(plan.outputs["nebulaCaCert"].value)
    host = cert(plan, "gpu-0")
    assert ca.details.not_after - ca.details.not_before == 500 * 3600 + 60
    assert host.details.not_after - host.details.not_before == 50 * 3600 + 60
    (resource,) = [r for r in plan.of_type("pulumi-python:dynamic:Resource") if r.name.endswith("-gpu-0")]
    assert resource.inputs["early_renewal_hours"] == 5 and resource.inputs["validity_period_hours"] == 50


def test_aws_hosts_get_four_parameters_below_their_prefix_the_key_as_securestring(two_workers):
    params = {r.inputs["name"]: r for r in two_workers.of_type(PARAMETER) if "/nebula/" in r.inputs["name"]}
    expected = {f"/hybrid-llm/dev/hosts/{h}/nebula/{f}" for h in ("lighthouse", "gpu-0", "gpu-1") for f in FILES}
    assert set(params) == expected, "homelab nodes get no parameters; AWS hosts exactly four"
    for name, resource in params.items():
        host, file_name = name.split("/")[4], name.rsplit("/", 1)[1]
        assert resource.inputs["type"] == ("SecureString" if file_name == "host.key" else "String")
        assert rpc.is_rpc_secret(resource.inputs["value"]), "a parameter value is secret in state"
        assert resource.plain()["value"] == two_workers.file(f"nebula/{host}/{file_name}").content


def test_static_host_map_names_the_lighthouse_eip_the_mocks_gave(two_workers):
    (eip,) = two_workers.of_type("aws:ec2/eip:Eip")
    assert eip.plain()["tags"]["NebulaHost"] == "lighthouse"
    public_ip = eip.state["publicIp"]
    assert two_workers.outputs["lighthouseEndpoints"].value == {"lighthouse": f"{public_ip}:4242"}
    assert two_workers.outputs["elasticIps"].value == {"lighthouse": public_ip}
    lighthouse_ip = two_workers.outputs["nebulaIps"].value["lighthouse"]
    for host, interval in [*((h, 60) for h in DEV_HOMELAB), ("gpu-0", 10), ("gpu-1", 10)]:
        c = config(two_workers, host)
        assert c["static_host_map"] == {lighthouse_ip: [f"{public_ip}:4242"]}
        c["lighthouse"].pop("local_allow_list", None)     # workers' own, tested below
        assert c["lighthouse"] == {"am_lighthouse": False, "interval": interval, "hosts": [lighthouse_ip]}, host
    lh = config(two_workers, "lighthouse")
    assert lh["lighthouse"]["am_lighthouse"] is True and lh["lighthouse"]["hosts"] == []
    assert lh["static_host_map"] == {}


def test_listen_ports_pki_paths_tun_and_punchy(run_program):
    plan = run_program({**PLACEMENTS["ec2"], "hybrid-llm:nebulaPort": "4343"})
    for host, port in (("lighthouse", 4343), ("gpu-0", 4343), ("talos-cp-1", 0), ("talos-worker-1", 0)):
        c = config(plan, host)
        assert c["listen"]["port"] == port, host
        assert c["pki"] == {"ca": "/etc/nebula/ca.crt", "cert": "/etc/nebula/host.crt", "key": "/etc/nebula/host.key"}
        assert c["tun"]["dev"] == "nebula1" and c["tun"]["mtu"] == 1300
        assert c["punchy"] == {"punch": True, "respond": True}
    assert config(plan, "gpu-0")["static_host_map"]["10.42.0.1"][0].endswith(":4343")


def _inbound(plan, host: str) -> set[tuple]:
    return {(r["proto"], r["port"], r.get("group") or f"host={r.get('host')}", r.get("local_cidr"))
            for r in config(plan, host)["firewall"]["inbound"]}


def test_firewall_inbound_per_role(two_workers):
    """A worker: ICMP from anyone and the k3s API from the homelab on its overlay
    address, Ollama from the homelab on its pod range, nothing else (no Liqo
    gateway port: Liqo's network is off). Lighthouse and homelab: ICMP only."""
    ips = two_workers.outputs["nebulaIps"].value
    for index, worker in enumerate(("gpu-0", "gpu-1")):
        overlay = f"{ips[worker]}/32"
        assert _inbound(two_workers, worker) == {
            ("icmp", "any", "host=any", overlay),
            ("tcp", 6443, "homelab", overlay),
            ("tcp", 11434, "homelab", f"10.52.{index}.0/24"),
        }
    for host in ("lighthouse", *DEV_HOMELAB):
        assert _inbound(two_workers, host) == {("icmp", "any", "host=any", None)}


def test_default_local_cidr_any_is_off_everywhere(two_workers):
    """1.9 defaults it to true (a rule without local_cidr would open the pod range
    too); 1.10 defaults it to false. Explicit, so both behave like 1.10."""
    for host in ("lighthouse", "gpu-0", "gpu-1", *DEV_HOMELAB):
        assert config(two_workers, host)["firewall"]["default_local_cidr_any"] is False


def test_firewall_default_deny_and_outbound_open(dev_plan, ec2_plan, homelab_lighthouse_plan):
    for plan in (dev_plan, ec2_plan, homelab_lighthouse_plan):
        hosts = plan.outputs["nebulaIps"].value
        assert set(hosts) >= {"gpu-0", *DEV_HOMELAB}
        for host in hosts:
            fw = config(plan, host)["firewall"]
            assert fw["inbound_action"] == "drop"
            assert fw["outbound"] == [{"port": "any", "proto": "any", "host": "any"}]


def test_keys_are_secret_files_and_in_no_plain_output(dev_plan):
    for f in dev_plan.files:
        if f.path.startswith("nebula/"):
            assert f.secret == f.path.endswith("/host.key"), f.path
    for name, out in dev_plan.outputs.items():
        assert out.secret or "PRIVATE KEY" not in json.dumps(out.value), name
    assert not dev_plan.outputs["nebulaCaCert"].secret


def test_each_worker_certificate_carries_its_pod_range_and_no_one_else_has_one(two_workers):
    for index in range(2):
        assert cert(two_workers, f"gpu-{index}").details.subnets == (ipaddress.IPv4Network(f"10.52.{index}.0/24"),)
    for host in ("lighthouse", *DEV_HOMELAB):
        assert cert(two_workers, host).details.subnets == ()
    (resource,) = [r for r in two_workers.of_type("pulumi-python:dynamic:Resource") if r.name.endswith("-gpu-1")]
    assert resource.inputs["subnets"] == ["10.52.1.0/24"]


def test_pod_ranges_follow_gpu_cluster_pod_cidr(run_program):
    """(The default placement: every worker a lighthouse.)"""
    plan = run_program({"hybrid-llm:gpuWorkers": "3", "hybrid-llm:gpuClusterPodCidr": "10.60.0.0/22"})
    ranges = [cert(plan, f"gpu-{i}").details.subnets for i in range(3)]
    assert ranges == [(ipaddress.IPv4Network(f"10.60.{i}.0/24"),) for i in range(3)]
    routes = config(plan, "talos-cp-1")["tun"]["unsafe_routes"]
    assert [r["route"] for r in routes] == [f"10.60.{i}.0/24" for i in range(3)]


def test_homelab_routes_every_worker_pod_range_via_that_worker(two_workers):
    ips = two_workers.outputs["nebulaIps"].value
    for host in DEV_HOMELAB:
        assert config(two_workers, host)["tun"]["unsafe_routes"] == [
            {"route": "10.52.0.0/24", "via": ips["gpu-0"]},
            {"route": "10.52.1.0/24", "via": ips["gpu-1"]},
        ]
    for host in ("lighthouse", "gpu-0", "gpu-1"):
        assert config(two_workers, host)["tun"]["unsafe_routes"] == []


def test_workers_do_not_advertise_their_pod_range_as_an_underlay_address(two_workers):
    """All-false rules: every other local address is still advertised."""
    for index in range(2):
        assert config(two_workers, f"gpu-{index}")["lighthouse"]["local_allow_list"] == {f"10.52.{index}.0/24": False}
    for host in ("lighthouse", *DEV_HOMELAB):
        assert "local_allow_list" not in config(two_workers, host)["lighthouse"]


def test_every_route_goes_via_a_worker_whose_certificate_carries_it(two_workers):
    """Nebula sends a routed packet only to a peer whose certificate holds the
    destination: each route must match its gateway's certificate exactly."""
    ips = two_workers.outputs["nebulaIps"].value
    by_ip = {ip: name for name, ip in ips.items()}
    for route in config(two_workers, "talos-cp-1")["tun"]["unsafe_routes"]:
        gateway = cert(two_workers, by_ip[route["via"]])
        assert ipaddress.IPv4Network(route["route"]) in gateway.details.subnets


def test_homelab_nodes_share_one_config_that_names_no_node(run_program):
    plan = run_program({"hybrid-llm:gpuWorkers": "2",
                        "hybrid-llm:homelabNodes": '["talos-cp-1", "talos-worker-1", "talos-worker-2"]'})
    ips = plan.outputs["nebulaIps"].value
    rendered = {plan.file(f"nebula/{h}/config.yml").content
                for h in ("talos-cp-1", "talos-worker-1", "talos-worker-2")}
    assert len(rendered) == 1, "homelab configs differ"
    (text,) = rendered
    for host in ("talos-cp-1", "talos-worker-1", "talos-worker-2"):
        assert host not in text and ips[host] not in text
    certs = {cert(plan, h).details.public_key for h in ("talos-cp-1", "talos-worker-1", "talos-worker-2")}
    assert len(certs) == 3, "each homelab node keeps its own certificate and key"


def test_more_workers_more_certificates(run_program):
    plan = run_program({"hybrid-llm:gpuWorkers": "3"})
    names = {cert(plan, f"gpu-{i}").details.name for i in range(3)}
    ips = {str(cert(plan, f"gpu-{i}").details.ips[0].ip) for i in range(3)}
    assert names == {"gpu-0", "gpu-1", "gpu-2"} and len(ips) == 3


def _host(name, role, ip, lighthouse=False):
    return Host(name, role, ipaddress.IPv4Address(ip), (), lighthouse=lighthouse)


def _worker(name, ip, pod_cidr, lighthouse=False):
    return Host(name, "gpu", ipaddress.IPv4Address(ip), (), pod_cidr=ipaddress.IPv4Network(pod_cidr),
                lighthouse=lighthouse)


def _lighthouse(ip="10.42.0.1"):
    return _host("lighthouse", "lighthouse", ip, lighthouse=True)


SSM = {"lighthouse": "/p/lighthouse", "gpu-0": "/p/gpu-0", "gpu-1": "/p/gpu-1"}


def _args(hosts, endpoints=None, lan=None):
    """`endpoints` default: one public endpoint per host marked a lighthouse."""
    if endpoints is None:
        endpoints = {h.name: "198.51.100.4:4242" for h in hosts if h.lighthouse}
    return NebulaMeshArgs(hosts=hosts, network=ipaddress.IPv4Network("10.42.0.0/16"), port=4242,
                          lighthouse_endpoints=endpoints, lan_endpoints=lan or {}, ssm_prefixes=SSM,
                          ca_validity_hours=2, cert_validity_hours=1, early_renewal_hours=0)


@pytest.mark.parametrize("hosts, key", [
    ([_lighthouse(), _host("a", "homelab", "10.42.0.1")], "nebulaCidr"),
    ([_lighthouse(), _worker("gpu-0", "10.42.2.1", "10.42.200.0/24")], "gpuClusterPodCidr"),
    ([_lighthouse(), _worker("gpu-0", "10.42.2.1", "10.52.0.0/24"),
      _worker("gpu-1", "10.42.2.2", "10.52.0.0/23")], "gpuClusterPodCidr"),
    ([_lighthouse(), _host("lighthouse", "homelab", "10.42.1.1")], "homelabNodes"),
    ([_lighthouse("10.99.0.1")], "nebulaCidr"),
    # The same mistakes with the workers as lighthouses (the default placement).
    ([_worker("gpu-0", "10.42.2.1", "10.52.0.0/24", lighthouse=True),
      _worker("gpu-1", "10.42.2.1", "10.52.1.0/24", lighthouse=True)], "nebulaCidr"),
    ([_worker("gpu-0", "10.99.2.1", "10.52.0.0/24", lighthouse=True)], "nebulaCidr"),
    ([_worker("gpu-0", "10.42.2.1", "10.42.7.0/24", lighthouse=True)], "gpuClusterPodCidr"),
])
def test_bad_host_lists_are_one_config_error(hosts, key):
    with pytest.raises(ConfigError, match=f"^hybrid-llm:{key}: "):
        _check_hosts(_args(hosts))


@pytest.mark.parametrize("hosts, endpoints, lan, words", [
    # No lighthouse at all: no config could name one.
    ([_host("a", "homelab", "10.42.1.1")], None, None, "no host is a lighthouse"),
    ([_host("a", "homelab", "10.42.1.1"), _worker("gpu-0", "10.42.2.1", "10.52.0.0/24")], None, None,
     "no host is a lighthouse"),
    # Endpoints must name exactly the lighthouses.
    ([_lighthouse()], {}, None, "endpoints given for"),
    ([_lighthouse(), _worker("gpu-0", "10.42.2.1", "10.52.0.0/24")],
     {"lighthouse": "198.51.100.4:4242", "gpu-0": "198.51.100.5:4242"}, None, "endpoints given for"),
    ([_worker("gpu-0", "10.42.2.1", "10.52.0.0/24", lighthouse=True),
      _worker("gpu-1", "10.42.2.2", "10.52.1.0/24", lighthouse=True)],
     {"gpu-0": "198.51.100.4:4242"}, None, "endpoints given for"),
    # A LAN endpoint only for a homelab lighthouse.
    ([_lighthouse()], None, {"lighthouse": "10.0.0.5:4242"}, "LAN endpoints only for homelab lighthouses"),
    ([_lighthouse(), _host("a", "homelab", "10.42.1.1")], None, {"a": "192.168.1.20:4242"},
     "LAN endpoints only for homelab lighthouses"),
])
def test_a_mesh_without_its_lighthouses_named_is_a_value_error(hosts, endpoints, lan, words):
    """Program errors, not config errors: the program builds these arguments."""
    with pytest.raises(ValueError, match=words):
        _check_hosts(_args(hosts, endpoints, lan))


def test_the_lighthouses_are_whichever_hosts_say_so():
    gpu = [_worker("gpu-0", "10.42.2.1", "10.52.0.0/24", lighthouse=True),
           _worker("gpu-1", "10.42.2.2", "10.52.1.0/24", lighthouse=True)]
    assert _check_hosts(_args([_host("a", "homelab", "10.42.1.1"), *gpu])) == gpu
    home = _host("a", "homelab", "10.42.1.1", lighthouse=True)
    args = _args([home, _host("b", "homelab", "10.42.1.2"), _worker("gpu-0", "10.42.2.1", "10.52.0.0/24")],
                 {"a": "home.example.net:4242"}, {"a": "192.168.1.20:4242"})
    assert _check_hosts(args) == [home]
