"""Mock answers for pulumi-tls that are real keys and certificates (made with
`cryptography`), so what the program builds from them, a kubeconfig for
instance, can be parsed and verified like the real thing.

ECDSA keys are derived from the resource name, so runs repeat; RSA keys are new
each run. Certificates start at the current hour.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
from typing import Callable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CURVES = {"P224": ec.SECP224R1(), "P256": ec.SECP256R1(), "P384": ec.SECP384R1(), "P521": ec.SECP521R1()}
_NAME_FIELDS = {
    "commonName": NameOID.COMMON_NAME, "organization": NameOID.ORGANIZATION_NAME,
    "organizationalUnit": NameOID.ORGANIZATIONAL_UNIT_NAME, "country": NameOID.COUNTRY_NAME,
    "locality": NameOID.LOCALITY_NAME, "province": NameOID.STATE_OR_PROVINCE_NAME,
}
_KEY_USAGES = {
    "digital_signature": "digital_signature", "content_commitment": "content_commitment",
    "key_encipherment": "key_encipherment", "data_encipherment": "data_encipherment",
    "key_agreement": "key_agreement", "cert_signing": "key_cert_sign", "crl_signing": "crl_sign",
}
_EXTENDED = {"server_auth": ExtendedKeyUsageOID.SERVER_AUTH, "client_auth": ExtendedKeyUsageOID.CLIENT_AUTH}


def _seed(name: str) -> int:
    return int.from_bytes(hashlib.sha256(name.encode()).digest(), "big")


def _load_key(pem: str):
    return serialization.load_pem_private_key(pem.encode(), password=None)


def private_key(m, name: str, s: dict) -> str:
    algorithm = s.get("algorithm", "RSA")
    if algorithm == "ECDSA":
        curve = _CURVES[s.get("ecdsaCurve", "P224")]
        key = ec.derive_private_key(_seed(name) % (2 ** 200) + 1, curve)
    elif algorithm == "RSA":
        key = rsa.generate_private_key(public_exponent=65537, key_size=int(s.get("rsaBits", 2048)))
    else:
        raise NotImplementedError(f"tools/tls_mocks.py: no {algorithm} keys")
    traditional = serialization.PrivateFormat.TraditionalOpenSSL
    pem = key.private_bytes(serialization.Encoding.PEM, traditional, serialization.NoEncryption()).decode()
    public = key.public_key()
    public_pem = public.public_bytes(serialization.Encoding.PEM,
                                     serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    openssh = public.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
    s.update(
        privateKeyPem=pem,
        privateKeyPemPkcs8=key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                             serialization.NoEncryption()).decode(),
        publicKeyPem=public_pem, publicKeyOpenssh=openssh + "\n",
        publicKeyFingerprintSha256="SHA256:" + hashlib.sha256(public_pem.encode()).hexdigest(),
    )
    return hashlib.sha1(public_pem.encode()).hexdigest()


def _subject(s: dict) -> x509.Name:
    given = s.get("subject") or {}
    return x509.Name([x509.NameAttribute(oid, str(given[k])) for k, oid in _NAME_FIELDS.items() if given.get(k)])


def _sign(name: str, s: dict, subject: x509.Name, issuer: x509.Name, public_key, signing_key) -> str:
    now = datetime.datetime.now(datetime.timezone.utc).replace(minute=0, second=0, microsecond=0)
    end = now + datetime.timedelta(hours=int(s["validityPeriodHours"]))
    uses = s.get("allowedUses") or []
    is_ca = bool(s.get("isCaCertificate"))
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(public_key).serial_number(_seed(name) >> 160)
               .not_valid_before(now).not_valid_after(end)
               .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True))
    flags = {v: False for v in _KEY_USAGES.values()}
    flags.update({_KEY_USAGES[u]: True for u in uses if u in _KEY_USAGES})
    builder = builder.add_extension(x509.KeyUsage(encipher_only=False, decipher_only=False, **flags), critical=True)
    extended = [_EXTENDED[u] for u in uses if u in _EXTENDED]
    if extended:
        builder = builder.add_extension(x509.ExtendedKeyUsage(extended), critical=False)
    sans = [x509.DNSName(d) for d in s.get("dnsNames") or []]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in s.get("ipAddresses") or []]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if is_ca:
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    cert = builder.sign(signing_key, hashes.SHA256())
    s.update(certPem=cert.public_bytes(serialization.Encoding.PEM).decode(),
             validityStartTime=now.isoformat(), validityEndTime=end.isoformat(), readyForRenewal=False)
    return str(cert.serial_number)


def self_signed_cert(m, name: str, s: dict) -> str:
    key = _load_key(s["privateKeyPem"])
    subject = _subject(s)
    return _sign(name, s, subject, subject, key.public_key(), key)


def cert_request(m, name: str, s: dict) -> str:
    key = _load_key(s["privateKeyPem"])
    csr = x509.CertificateSigningRequestBuilder().subject_name(_subject(s)).sign(key, hashes.SHA256())
    s.update(certRequestPem=csr.public_bytes(serialization.Encoding.PEM).decode(),
             keyAlgorithm="ECDSA" if isinstance(key, ec.EllipticCurvePrivateKey) else "RSA")
    return hashlib.sha1(s["certRequestPem"].encode()).hexdigest()


def locally_signed_cert(m, name: str, s: dict) -> str:
    csr = x509.load_pem_x509_csr(s["certRequestPem"].encode())
    ca_cert = x509.load_pem_x509_certificate(s["caCertPem"].encode())
    ca_key = _load_key(s["caPrivateKeyPem"])
    s["caKeyAlgorithm"] = "ECDSA" if isinstance(ca_key, ec.EllipticCurvePrivateKey) else "RSA"
    return _sign(name, s, csr.subject, ca_cert.subject, csr.public_key(), ca_key)


RESOURCES: dict[str, Callable] = {
    "tls:index/privateKey:PrivateKey": private_key,
    "tls:index/selfSignedCert:SelfSignedCert": self_signed_cert,
    "tls:index/certRequest:CertRequest": cert_request,
    "tls:index/locallySignedCert:LocallySignedCert": locally_signed_cert,
}
