"""The Nebula v1 certificate library: wire format, round trip, signature, and our
own verification (window, issuer, CA)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import ipaddress
import re

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519

from components.mesh import nebula_cert as nc

NOW = 1_800_000_000
HOUR = 3600


def _varint(n: int) -> bytes:
    out = b""
    while True:
        byte, n = n & 0x7F, n >> 7
        out += bytes([byte | (0x80 if n else 0)])
        if not n:
            return out


def _field(number: int, wire: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire) + payload


def _len(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


@pytest.fixture(scope="module")
def ca():
    return nc.new_ca("test-ca", NOW - HOUR, NOW + 1000 * HOUR)


@pytest.fixture(scope="module")
def host(ca):
    ca_cert, ca_key = ca
    key_pem, public_pem = nc.new_host_key()
    cert = nc.issue(
        ca_cert, ca_key, name="gpu-0", ip=ipaddress.IPv4Interface("10.42.2.1/16"),
        groups=["aws", "gpu", "kubernetes"], subnets=[ipaddress.IPv4Network("192.168.50.0/24")],
        public_key=nc.host_public_key(key_pem), not_before=NOW, not_after=NOW + 10 * HOUR,
    )
    return cert, key_pem, public_pem


def test_details_encode_exactly_as_the_v1_proto_says(host, ca):
    """Hand-built protobuf bytes (field numbers from nebula's cert.proto): packed
    uint32 address/mask pairs, raw issuer bytes, int64 times."""
    cert, _, _ = host
    d = cert.details
    packed_ips = b"".join(_varint(v) for v in (0x0A2A0201, 0xFFFF0000))
    packed_subnets = b"".join(_varint(v) for v in (0xC0A83200, 0xFFFFFF00))
    expected = (
        _len(1, b"gpu-0") + _len(2, packed_ips) + _len(3, packed_subnets)
        + _len(4, b"aws") + _len(4, b"gpu") + _len(4, b"kubernetes")
        + _field(5, 0, _varint(NOW)) + _field(6, 0, _varint(NOW + 10 * HOUR))
        + _len(7, d.public_key) + _len(9, bytes.fromhex(ca[0].fingerprint))
    )
    assert d.marshal() == expected
    assert cert.marshal() == _len(1, expected) + _len(2, cert.signature)


def test_ca_sets_is_ca_and_no_issuer(ca):
    ca_cert, ca_key = ca
    raw = ca_cert.details.marshal()
    assert _field(8, 0, b"\x01") in raw
    assert ca_cert.details.issuer == "" and ca_cert.details.is_ca
    assert ca_cert.details.public_key == nc.load_ca_key(ca_key).public_key().public_bytes_raw()


def test_pem_round_trip_keeps_every_field(host, ca):
    cert, key_pem, _ = host
    pem = cert.to_pem()
    assert pem.startswith("-----BEGIN NEBULA CERTIFICATE-----\n")
    assert pem.endswith("-----END NEBULA CERTIFICATE-----\n")
    assert all(len(line) <= 64 for line in pem.splitlines())
    back = nc.Certificate.from_pem(pem)
    assert back == cert
    d = back.details
    assert d.name == "gpu-0"
    assert d.ips == (ipaddress.IPv4Interface("10.42.2.1/16"),)
    assert d.subnets == (ipaddress.IPv4Network("192.168.50.0/24"),)
    assert d.groups == ("aws", "gpu", "kubernetes")
    assert (d.not_before, d.not_after) == (NOW, NOW + 10 * HOUR)
    assert d.public_key == x25519.X25519PrivateKey.from_private_bytes(
        nc.pem_decode(key_pem, "NEBULA X25519 PRIVATE KEY")).public_key().public_bytes_raw()
    assert d.is_ca is False
    assert d.issuer == ca[0].fingerprint
    assert d.curve == 0


def test_fingerprint_is_sha256_of_the_marshalled_certificate(host):
    cert, _, _ = host
    body = re.sub(r"-----[A-Z ]+-----|\s", "", cert.to_pem())
    assert cert.fingerprint == hashlib.sha256(base64.b64decode(body)).hexdigest()


def test_signature_is_ed25519_over_the_details_by_the_ca(host, ca):
    cert, _, _ = host
    public = ed25519.Ed25519PublicKey.from_public_bytes(ca[0].details.public_key)
    public.verify(cert.signature, cert.details.marshal())  # raises if wrong
    assert cert.check_signature(ca[0].details.public_key)
    assert ca[0].check_signature(ca[0].details.public_key)


def test_key_pems_have_nebulas_banners_and_sizes(ca, host):
    _, ca_key = ca
    _, key_pem, public_pem = host
    assert len(nc.pem_decode(ca_key, "NEBULA ED25519 PRIVATE KEY")) == 64
    assert len(nc.pem_decode(key_pem, "NEBULA X25519 PRIVATE KEY")) == 32
    assert nc.pem_decode(public_pem, "NEBULA X25519 PUBLIC KEY") == host[0].details.public_key
    with pytest.raises(nc.CertificateError, match="expected 'NEBULA CERTIFICATE'"):
        nc.Certificate.from_pem(key_pem)


def test_verify_accepts_a_good_certificate_inside_its_window(host, ca):
    nc.verify(host[0], ca[0], now=NOW + HOUR)


@pytest.mark.parametrize("now, problem", [(NOW - 1, "not valid yet"), (NOW + 10 * HOUR + 1, "expired")])
def test_verify_rejects_outside_the_window(host, ca, now, problem):
    with pytest.raises(nc.CertificateError, match=problem):
        nc.verify(host[0], ca[0], now=now)


def test_verify_rejects_a_certificate_of_another_ca(host):
    other, _ = nc.new_ca("other-ca", NOW - HOUR, NOW + 1000 * HOUR)
    with pytest.raises(nc.CertificateError, match="another CA"):
        nc.verify(host[0], other, now=NOW + HOUR)


def test_verify_rejects_a_forged_issuer_and_a_tampered_certificate(host, ca):
    """Another CA signs a cert naming our CA as issuer; a good cert gets a group added."""
    other, other_key = nc.new_ca("other-ca", NOW - HOUR, NOW + 1000 * HOUR)
    forged = nc.sign(dataclasses.replace(host[0].details), other_key)
    with pytest.raises(nc.CertificateError, match="signature does not verify"):
        nc.verify(forged, ca[0], now=NOW + HOUR)
    tampered = nc.Certificate(dataclasses.replace(host[0].details, groups=("homelab",)), host[0].signature)
    with pytest.raises(nc.CertificateError, match="signature does not verify"):
        nc.verify(tampered, ca[0], now=NOW + HOUR)


def test_verify_rejects_an_expired_ca_and_a_non_ca(host, ca):
    with pytest.raises(nc.CertificateError, match="CA 'test-ca' expired"):
        nc.verify(host[0], ca[0], now=NOW + 1001 * HOUR)
    with pytest.raises(nc.CertificateError, match="is not a CA"):
        nc.verify(host[0], host[0], now=NOW + HOUR)


def test_issue_cuts_the_window_to_the_cas(ca):
    ca_cert, ca_key = ca
    key_pem, _ = nc.new_host_key()
    cert = nc.issue(ca_cert, ca_key, name="late", ip=ipaddress.IPv4Interface("10.42.1.1/16"),
                    public_key=nc.host_public_key(key_pem), not_before=NOW - 5 * HOUR,
                    not_after=NOW + 5000 * HOUR)
    assert (cert.details.not_before, cert.details.not_after) == (NOW - HOUR, NOW + 1000 * HOUR)
    nc.verify(cert, ca_cert, now=NOW)


def test_a_ca_key_whose_halves_disagree_is_refused(ca):
    _, key = ca
    raw = nc.pem_decode(key, "NEBULA ED25519 PRIVATE KEY")
    broken = nc.pem_encode("NEBULA ED25519 PRIVATE KEY", raw[:32] + bytes(32))
    with pytest.raises(nc.CertificateError, match="does not match"):
        nc.load_ca_key(broken)


def test_garbage_is_a_certificate_error():
    with pytest.raises(nc.CertificateError):
        nc.Certificate.from_bytes(b"\xff\xff\xff")
    with pytest.raises(nc.CertificateError, match="no PEM block"):
        nc.Certificate.from_pem("hello")
