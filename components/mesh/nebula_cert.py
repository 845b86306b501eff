"""Nebula v1 certificates made in Python, so the program needs no `nebula-cert`
binary and the PKI lives in Pulumi state like pulumi-tls's.

The wire format is slackhq/nebula's `cert.proto` (v1): `RawNebulaCertificate
{Details=1, Signature=2}` and `RawNebulaCertificateDetails {Name=1, Ips=2,
Subnets=3, Groups=4, NotBefore=5, NotAfter=6, PublicKey=7, IsCA=8, Issuer=9,
curve=100}` in proto3. Ips/Subnets are packed uint32 pairs (address, mask), big
endian as integers; Issuer is the raw bytes of the CA's hex fingerprint; the
fingerprint is the hex SHA-256 of the marshalled certificate; the signature is
Ed25519 over the marshalled details. Nebula re-marshals the details to check a
signature, so our encoding must be the canonical one: fields in number order,
defaults omitted, repeated scalars packed (what `protobuf` emits for proto3).
Every release from 1.6 on reads v1 certificates (1.10 added v2 beside it).

Pure library: no Pulumi, no I/O. `verify` is our own check, stricter than a
signature check: validity window, issuer match, a CA that signed it, and a
certificate that does not outlive its CA (Nebula refuses those too).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
import re
import time
from dataclasses import dataclass, field
from typing import Iterable, Optional, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

CERT_BANNER = "NEBULA CERTIFICATE"
X25519_PRIVATE_BANNER = "NEBULA X25519 PRIVATE KEY"
X25519_PUBLIC_BANNER = "NEBULA X25519 PUBLIC KEY"
ED25519_PRIVATE_BANNER = "NEBULA ED25519 PRIVATE KEY"
ED25519_PUBLIC_BANNER = "NEBULA ED25519 PUBLIC KEY"
CURVE25519 = 0


class CertificateError(ValueError):
    """A certificate that cannot be decoded, or that fails verification."""


# --- protobuf messages, declared in Python (no protoc step) -----------------------


def _message_classes():
    fdp = descriptor_pb2.FileDescriptorProto(
        name="hybrid_llm/nebula_cert_v1.proto", package="hybridllm.nebula.v1", syntax="proto3"
    )
    curve = fdp.enum_type.add(name="Curve")
    curve.value.add(name="CURVE25519", number=0)
    curve.value.add(name="P256", number=1)

    f = descriptor_pb2.FieldDescriptorProto
    details = fdp.message_type.add(name="RawNebulaCertificateDetails")
    for name, number, kind, label in (
        ("Name", 1, f.TYPE_STRING, f.LABEL_OPTIONAL),
        ("Ips", 2, f.TYPE_UINT32, f.LABEL_REPEATED),
        ("Subnets", 3, f.TYPE_UINT32, f.LABEL_REPEATED),
        ("Groups", 4, f.TYPE_STRING, f.LABEL_REPEATED),
        ("NotBefore", 5, f.TYPE_INT64, f.LABEL_OPTIONAL),
        ("NotAfter", 6, f.TYPE_INT64, f.LABEL_OPTIONAL),
        ("PublicKey", 7, f.TYPE_BYTES, f.LABEL_OPTIONAL),
        ("IsCA", 8, f.TYPE_BOOL, f.LABEL_OPTIONAL),
        ("Issuer", 9, f.TYPE_BYTES, f.LABEL_OPTIONAL),
    ):
        details.field.add(name=name, number=number, type=kind, label=label)
    details.field.add(name="curve", number=100, type=f.TYPE_ENUM, label=f.LABEL_OPTIONAL,
                      type_name=".hybridllm.nebula.v1.Curve")

    raw = fdp.message_type.add(name="RawNebulaCertificate")
    raw.field.add(name="Details", number=1, type=f.TYPE_MESSAGE, label=f.LABEL_OPTIONAL,
                  type_name=".hybridllm.nebula.v1.RawNebulaCertificateDetails")
    raw.field.add(name="Signature", number=2, type=f.TYPE_BYTES, label=f.LABEL_OPTIONAL)

    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    classes = message_factory.GetMessages([fdp], pool=pool)
    return classes["hybridllm.nebula.v1.RawNebulaCertificate"], classes["hybridllm.nebula.v1.RawNebulaCertificateDetails"]


_RawCertificate, _RawDetails = _message_classes()


# --- PEM ------------------------------------------------------------------------


def pem_encode(banner: str, data: bytes) -> str:
    """PEM as Go's encoding/pem writes it (64-character base64 lines)."""
    body = base64.b64encode(data).decode()
    lines = [body[i:i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {banner}-----", *lines, f"-----END {banner}-----"]) + "\n"


def pem_decode(text: str | bytes, banner: str) -> bytes:
    """The bytes of the first PEM block, which must carry this banner."""
    if isinstance(text, bytes):
        text = text.decode()
    match = re.search(r"-----BEGIN ([A-Z0-9 ]+)-----\s*(.*?)\s*-----END \1-----", text, re.S)
    if not match:
        raise CertificateError(f"no PEM block found (expected {banner})")
    if match.group(1) != banner:
        raise CertificateError(f"PEM block is {match.group(1)!r}, expected {banner!r}")
    try:
        return base64.b64decode("".join(match.group(2).split()), validate=True)
    except binascii.Error as err:
        raise CertificateError(f"{banner}: bad base64 ({err})") from None


# --- certificates -----------------------------------------------------------------


@dataclass(frozen=True)
class Details:
    """What a Nebula v1 certificate says. Times are unix seconds."""

    name: str
    ips: tuple[ipaddress.IPv4Interface, ...] = ()
    subnets: tuple[ipaddress.IPv4Network, ...] = ()
    groups: tuple[str, ...] = ()
    not_before: int = 0
    not_after: int = 0
    public_key: bytes = b""
    is_ca: bool = False
    issuer: str = ""            # hex fingerprint of the signing CA; "" when self-signed
    curve: int = CURVE25519

    def to_proto(self):
        raw = _RawDetails(
            Name=self.name, Groups=list(self.groups), NotBefore=self.not_before,
            NotAfter=self.not_after, PublicKey=self.public_key, IsCA=self.is_ca,
            Issuer=bytes.fromhex(self.issuer), curve=self.curve,
        )
        for ip in self.ips:
            raw.Ips.extend([int(ip.ip), int(ip.netmask)])
        for net in self.subnets:
            raw.Subnets.extend([int(net.network_address), int(net.netmask)])
        return raw

    def marshal(self) -> bytes:
        return self.to_proto().SerializeToString(deterministic=True)

    @classmethod
    def from_proto(cls, raw) -> "Details":
        if len(raw.Ips) % 2 or len(raw.Subnets) % 2:
            raise CertificateError("Ips and Subnets must be (address, mask) pairs")
        return cls(
            name=raw.Name,
            ips=tuple(ipaddress.IPv4Interface((_ip(a), _prefix(m))) for a, m in _pairs(raw.Ips)),
            subnets=tuple(ipaddress.IPv4Network((_ip(a), _prefix(m)), strict=False) for a, m in _pairs(raw.Subnets)),
            groups=tuple(raw.Groups), not_before=raw.NotBefore, not_after=raw.NotAfter,
            public_key=bytes(raw.PublicKey), is_ca=raw.IsCA, issuer=bytes(raw.Issuer).hex(),
            curve=raw.curve,
        )


def _pairs(values: Sequence[int]) -> Iterable[tuple[int, int]]:
    return zip(values[0::2], values[1::2])


def _ip(value: int) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(value)


def _prefix(mask: int) -> int:
    bits = bin(mask)[2:].zfill(32)
    if "01" in bits:
        raise CertificateError(f"mask {_ip(mask)} is not contiguous")
    return bits.count("1")


@dataclass(frozen=True)
class Certificate:
    details: Details
    signature: bytes = field(default=b"", repr=False)

    def marshal(self) -> bytes:
        raw = _RawCertificate(Details=self.details.to_proto(), Signature=self.signature)
        return raw.SerializeToString(deterministic=True)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.marshal()).hexdigest()

    def to_pem(self) -> str:
        return pem_encode(CERT_BANNER, self.marshal())

    @classmethod
    def from_bytes(cls, data: bytes) -> "Certificate":
        raw = _RawCertificate()
        try:
            raw.ParseFromString(data)
        except Exception as err:  # protobuf raises its own DecodeError
            raise CertificateError(f"not a Nebula certificate ({err})") from None
        if not raw.HasField("Details"):
            raise CertificateError("certificate has no details")
        return cls(Details.from_proto(raw.Details), bytes(raw.Signature))

    @classmethod
    def from_pem(cls, text: str | bytes) -> "Certificate":
        return cls.from_bytes(pem_decode(text, CERT_BANNER))

    def check_signature(self, public_key: bytes) -> bool:
        try:
            ed25519.Ed25519PublicKey.from_public_bytes(public_key).verify(self.signature, self.details.marshal())
        except (InvalidSignature, ValueError):
            return False
        return True


# --- keys -------------------------------------------------------------------------


def new_ca_key() -> str:
    """A fresh Ed25519 CA key in Nebula's PEM form (64 bytes: seed then public key)."""
    return _ed25519_pem(ed25519.Ed25519PrivateKey.generate())


def _ed25519_pem(key: ed25519.Ed25519PrivateKey) -> str:
    return pem_encode(ED25519_PRIVATE_BANNER, key.private_bytes_raw() + key.public_key().public_bytes_raw())


def load_ca_key(pem: str) -> ed25519.Ed25519PrivateKey:
    raw = pem_decode(pem, ED25519_PRIVATE_BANNER)
    if len(raw) != 64:
        raise CertificateError(f"{ED25519_PRIVATE_BANNER} must be 64 bytes, got {len(raw)}")
    key = ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32])
    if key.public_key().public_bytes_raw() != raw[32:]:
        raise CertificateError("CA key: public half does not match the seed")
    return key


def new_host_key() -> tuple[str, str]:
    """(private PEM, public PEM) of a fresh X25519 host key."""
    key = x25519.X25519PrivateKey.generate()
    return (pem_encode(X25519_PRIVATE_BANNER, key.private_bytes_raw()),
            pem_encode(X25519_PUBLIC_BANNER, key.public_key().public_bytes_raw()))


def host_public_key(private_pem: str) -> bytes:
    raw = pem_decode(private_pem, X25519_PRIVATE_BANNER)
    if len(raw) != 32:
        raise CertificateError(f"{X25519_PRIVATE_BANNER} must be 32 bytes, got {len(raw)}")
    return x25519.X25519PrivateKey.from_private_bytes(raw).public_key().public_bytes_raw()


# --- issuing and checking -----------------------------------------------------------


def sign(details: Details, ca_key_pem: str) -> Certificate:
    key = load_ca_key(ca_key_pem)
    return Certificate(details, key.sign(details.marshal()))


def new_ca(name: str, not_before: int, not_after: int, key_pem: Optional[str] = None) -> tuple[Certificate, str]:
    """A self-signed CA certificate and its key PEM (a new key unless given)."""
    key_pem = key_pem or new_ca_key()
    public = load_ca_key(key_pem).public_key().public_bytes_raw()
    details = Details(name=name, not_before=not_before, not_after=not_after, public_key=public, is_ca=True)
    return sign(details, key_pem), key_pem


def issue(
    ca: Certificate, ca_key_pem: str, *, name: str, ip: ipaddress.IPv4Interface,
    groups: Sequence[str] = (), subnets: Sequence[ipaddress.IPv4Network] = (),
    public_key: bytes, not_before: int, not_after: int,
) -> Certificate:
    """A host certificate signed by `ca`. Its window is cut to the CA's, as Nebula
    rejects a certificate valid before or after its CA."""
    details = Details(
        name=name, ips=(ip,), subnets=tuple(subnets), groups=tuple(groups),
        not_before=max(not_before, ca.details.not_before),
        not_after=min(not_after, ca.details.not_after),
        public_key=public_key, is_ca=False, issuer=ca.fingerprint,
    )
    if len(public_key) != 32:
        raise CertificateError(f"host public key must be 32 bytes, got {len(public_key)}")
    return sign(details, ca_key_pem)


def _check_window(cert: Certificate, now: int, what: str) -> None:
    if now < cert.details.not_before:
        raise CertificateError(f"{what} {cert.details.name!r} is not valid yet (from {cert.details.not_before})")
    if now > cert.details.not_after:
        raise CertificateError(f"{what} {cert.details.name!r} expired at {cert.details.not_after}")


def verify_ca(ca: Certificate, now: Optional[int] = None) -> None:
    """A usable root: marked CA, self-signed, signature good, inside its window."""
    now = int(time.time()) if now is None else now
    if not ca.details.is_ca:
        raise CertificateError(f"{ca.details.name!r} is not a CA certificate")
    if ca.details.issuer:
        raise CertificateError(f"CA {ca.details.name!r} is not self-signed")
    if not ca.check_signature(ca.details.public_key):
        raise CertificateError(f"CA {ca.details.name!r}: signature does not verify")
    _check_window(ca, now, "CA")


def verify(cert: Certificate, ca: Certificate, now: Optional[int] = None) -> None:
    """Raise `CertificateError` unless `ca` issued `cert` and both are valid at `now`."""
    now = int(time.time()) if now is None else now
    verify_ca(ca, now)
    if cert.details.issuer != ca.fingerprint:
        raise CertificateError(f"{cert.details.name!r} was issued by another CA ({cert.details.issuer[:16]}…)")
    if not cert.check_signature(ca.details.public_key):
        raise CertificateError(f"{cert.details.name!r}: signature does not verify with CA {ca.details.name!r}")
    _check_window(cert, now, "certificate")
    if cert.details.not_before < ca.details.not_before or cert.details.not_after > ca.details.not_after:
        raise CertificateError(f"{cert.details.name!r} is valid outside its CA's window")

