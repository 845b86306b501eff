"""The Nebula PKI dynamic providers, driven directly (create / diff / update), and
the secrecy of their keys inside a Pulumi program under mocks."""

from __future__ import annotations

import textwrap

import pytest
from pulumi.runtime import rpc

from components.mesh import nebula_cert as nc
from components.mesh.nebula_pki import CaProvider, HostCertProvider
from tools import harness

HOUR = 3600
T0 = 1_800_000_000


class At:
    """A provider whose clock reads a fixed time."""

    def __init__(self, provider_cls, now: int):
        self.provider = type(f"Fixed{provider_cls.__name__}", (provider_cls,), {"now": lambda self: now})()

    def __getattr__(self, name):
        return getattr(self.provider, name)


def ca_inputs(**changes) -> dict:
    return {"name": "mesh-ca", "validity_period_hours": 1000, "early_renewal_hours": 48, **changes}


def host_inputs(ca_outs: dict, **changes) -> dict:
    return {"name": "gpu-0", "ip": "10.42.2.1/16", "groups": ["aws", "gpu"], "subnets": [],
            "validity_period_hours": 100, "early_renewal_hours": 10,
            "ca_cert_pem": ca_outs["cert_pem"], "ca_private_key_pem": ca_outs["private_key_pem"], **changes}


@pytest.fixture(scope="module")
def ca_outs() -> dict:
    return At(CaProvider, T0).create(ca_inputs()).outs


@pytest.fixture(scope="module")
def issued(ca_outs):
    inputs = host_inputs(ca_outs)
    result = At(HostCertProvider, T0).create(inputs)
    return inputs, result


def test_ca_create_issues_a_self_signed_ca_for_the_validity_period(ca_outs):
    ca = nc.Certificate.from_pem(ca_outs["cert_pem"])
    nc.verify_ca(ca, now=T0)
    assert ca.details.name == "mesh-ca" and ca.details.is_ca
    assert ca.details.not_after - T0 == 1000 * HOUR
    assert ca_outs["fingerprint"] == ca.fingerprint
    assert nc.load_ca_key(ca_outs["private_key_pem"]).public_key().public_bytes_raw() == ca.details.public_key


def test_host_create_issues_a_certificate_the_ca_verifies(issued, ca_outs):
    inputs, result = issued
    cert = nc.Certificate.from_pem(result.outs["cert_pem"])
    ca = nc.Certificate.from_pem(ca_outs["cert_pem"])
    nc.verify(cert, ca, now=T0)
    assert result.id == cert.fingerprint == result.outs["fingerprint"]
    assert str(cert.details.ips[0]) == "10.42.2.1/16"
    assert cert.details.groups == ("aws", "gpu")
    assert cert.details.not_after - T0 == 100 * HOUR
    assert nc.host_public_key(result.outs["private_key_pem"]) == cert.details.public_key
    assert result.outs["ca_fingerprint"] == ca.fingerprint


def test_nothing_changed_means_no_change(issued):
    inputs, result = issued
    diff = At(HostCertProvider, T0 + HOUR).diff(result.id, result.outs, dict(inputs))
    assert diff.changes is False and diff.replaces == []


def test_just_before_the_renewal_window_no_change(issued):
    inputs, result = issued
    before = result.outs["not_after"] - 10 * HOUR - 1
    assert At(HostCertProvider, before).diff(result.id, result.outs, dict(inputs)).changes is False


def test_inside_the_renewal_window_the_certificate_is_replaced(issued):
    inputs, result = issued
    inside = result.outs["not_after"] - 10 * HOUR
    diff = At(HostCertProvider, inside).diff(result.id, result.outs, dict(inputs))
    assert diff.changes is True and diff.replaces == ["not_after"]


def test_a_replaced_ca_replaces_the_host_certificate(issued):
    inputs, result = issued
    new_ca = At(CaProvider, T0 + HOUR).create(ca_inputs()).outs
    diff = At(HostCertProvider, T0 + HOUR).diff(result.id, result.outs, host_inputs(new_ca))
    assert diff.changes is True and "ca_cert_pem" in diff.replaces


@pytest.mark.parametrize("change", [{"groups": ["aws", "gpu", "homelab"]}, {"ip": "10.42.2.2/16"},
                                    {"name": "gpu-1"}, {"validity_period_hours": 200},
                                    {"subnets": ["192.168.0.0/24"]}])
def test_a_changed_certificate_input_replaces(issued, change):
    inputs, result = issued
    diff = At(HostCertProvider, T0).diff(result.id, result.outs, {**inputs, **change})
    assert diff.replaces == list(change)


def test_a_changed_renewal_window_updates_in_place(issued):
    inputs, result = issued
    provider = At(HostCertProvider, T0)
    diff = provider.diff(result.id, result.outs, {**inputs, "early_renewal_hours": 20})
    assert diff.changes is True and diff.replaces == []
    updated = provider.update(result.id, result.outs, {**inputs, "early_renewal_hours": 20}).outs
    assert updated["early_renewal_hours"] == 20 and updated["cert_pem"] == result.outs["cert_pem"]


def test_ca_renewal_window_and_changes(ca_outs):
    same = At(CaProvider, T0 + HOUR).diff("id", ca_outs, ca_inputs())
    assert same.changes is False
    due = At(CaProvider, ca_outs["not_after"] - 48 * HOUR).diff("id", ca_outs, ca_inputs())
    assert due.replaces == ["not_after"]
    assert At(CaProvider, T0).diff("id", ca_outs, ca_inputs(name="other")).replaces == ["name"]


PROGRAM = textwrap.dedent("""
    import pulumi
    from components.mesh.nebula_pki import NebulaCertificateAuthority, NebulaHostCertificate

    ca = NebulaCertificateAuthority("ca", ca_name="t", validity_period_hours=100)
    cert = NebulaHostCertificate("h", ca=ca, host_name="h", ip="10.42.1.1/16", groups=["homelab"],
                                 validity_period_hours=10, early_renewal_hours=1)
    pulumi.export("caKey", ca.private_key_pem)
    pulumi.export("caCert", ca.cert_pem)
    pulumi.export("hostKey", cert.private_key_pem)
    pulumi.export("hostCert", cert.cert_pem)
""")


def test_private_keys_are_secret_outputs_and_the_ca_key_a_secret_input(tmp_path):
    program = tmp_path / "program.py"
    program.write_text(PROGRAM)
    plan = harness.run({"aws:region": "us-east-1"}, program=program)
    out = plan.outputs
    assert out["caKey"].secret and out["hostKey"].secret
    assert "PRIVATE KEY" in out["caKey"].value and "X25519 PRIVATE KEY" in out["hostKey"].value
    assert not out["caCert"].secret and not out["hostCert"].secret
    host = plan.named("h")
    assert host.type == "pulumi-python:dynamic:Resource"
    assert rpc.is_rpc_secret(host.inputs["ca_private_key_pem"])
    nc.verify(nc.Certificate.from_pem(out["hostCert"].value), nc.Certificate.from_pem(out["caCert"].value))
