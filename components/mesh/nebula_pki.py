"""Nebula CA and host certificates as Pulumi resources, shaped like pulumi-tls's
(`validity_period_hours`, `early_renewal_hours`, private keys as secrets).

Mechanism: a Python dynamic provider. The alternative, keys from pulumi-tls plus a
deterministic signing step in `apply`, cannot work: pulumi-tls has no X25519 keys,
and a signature made in `apply` is recomputed on every run with a fresh
`NotBefore`, so every preview would show a change (or the cert would need a fixed
timestamp and never renew). A dynamic provider keeps the issued certificate in
state, and its `diff` decides alone when to re-issue:

* inputs unchanged and outside the renewal window: no change (no re-issue);
* `now >= not_after - early_renewal_hours`: replace on the next `up`;
* any certificate input changed (name, IP, groups, subnets, validity, the CA's
  certificate): replace. Each host certificate takes the CA's certificate PEM as
  an input, so replacing the CA replaces every host certificate;
* only `early_renewal_hours` changed: update in place (pulumi-tls does the same).

The provider is pickled by reference to this module (importable from the
project directory, where Pulumi runs the dynamic provider host). So this file
stays at `components/mesh/nebula_pki.py` once a stack exists: `pulumi destroy`
and `refresh` unpickle the provider from state by this module path, and a moved
module breaks them (keep a shim here if it ever has to move). A host
certificate takes the CA key as a (secret) input to sign with, so the CA key sits
in each host certificate's state too, encrypted like every Pulumi secret.
"""

from __future__ import annotations

import ipaddress
import time
from typing import Any, Optional, Sequence

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ReadResult, Resource, ResourceProvider, UpdateResult

from components.mesh import nebula_cert

HOUR = 3600
# A fresh certificate counts from a minute ago, so a host whose clock is a little
# behind still accepts it.
_CLOCK_SKEW = 60


def _renewal_due(outs: dict, early_renewal_hours: Any, now: int) -> bool:
    not_after = outs.get("not_after")
    if not isinstance(not_after, (int, float)):
        return False
    return now >= int(not_after) - int(early_renewal_hours or 0) * HOUR


def _changed(olds: dict, news: dict, keys: Sequence[str]) -> list[str]:
    return [k for k in keys if olds.get(k) != news.get(k)]


class _Provider(ResourceProvider):
    """Shared diff: `REPLACE_KEYS` re-issue, `UPDATE_KEYS` change state only."""

    REPLACE_KEYS: tuple[str, ...] = ()
    UPDATE_KEYS: tuple[str, ...] = ("early_renewal_hours",)

    def now(self) -> int:
        return int(time.time())

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = _changed(olds, news, self.REPLACE_KEYS)
        if _renewal_due(olds, news.get("early_renewal_hours"), self.now()):
            replaces.append("not_after")
        updates = _changed(olds, news, self.UPDATE_KEYS)
        return DiffResult(changes=bool(replaces or updates), replaces=replaces,
                          stables=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict, news: dict) -> UpdateResult:
        return UpdateResult({**olds, **{k: news.get(k) for k in self.UPDATE_KEYS}})

    def read(self, id_: str, props: dict) -> ReadResult:
        return ReadResult(id_, props)


class CaProvider(_Provider):
    REPLACE_KEYS = ("name", "validity_period_hours")

    def create(self, props: dict) -> CreateResult:
        now = self.now()
        cert, key_pem = nebula_cert.new_ca(
            props["name"], now - _CLOCK_SKEW, now + int(props["validity_period_hours"]) * HOUR
        )
        outs = {**props, "cert_pem": cert.to_pem(), "private_key_pem": key_pem,
                "fingerprint": cert.fingerprint, "not_before": cert.details.not_before,
                "not_after": cert.details.not_after}
        return CreateResult(cert.fingerprint, outs)


class HostCertProvider(_Provider):
    REPLACE_KEYS = ("name", "ip", "groups", "subnets", "validity_period_hours", "ca_cert_pem")

    def create(self, props: dict) -> CreateResult:
        now = self.now()
        ca = nebula_cert.Certificate.from_pem(props["ca_cert_pem"])
        key_pem, public_pem = nebula_cert.new_host_key()
        cert = nebula_cert.issue(
            ca, props["ca_private_key_pem"], name=props["name"],
            ip=ipaddress.IPv4Interface(props["ip"]), groups=props.get("groups") or [],
            subnets=[ipaddress.IPv4Network(s) for s in props.get("subnets") or []],
            public_key=nebula_cert.host_public_key(key_pem),
            not_before=now - _CLOCK_SKEW, not_after=now + int(props["validity_period_hours"]) * HOUR,
        )
        nebula_cert.verify(cert, ca, now)
        outs = {**props, "cert_pem": cert.to_pem(), "private_key_pem": key_pem,
                "public_key_pem": public_pem, "fingerprint": cert.fingerprint,
                "ca_fingerprint": ca.fingerprint, "not_before": cert.details.not_before,
                "not_after": cert.details.not_after}
        return CreateResult(cert.fingerprint, outs)


def _secret_outputs(opts: Optional[pulumi.ResourceOptions], names: list[str]) -> pulumi.ResourceOptions:
    return pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=names))


class NebulaCertificateAuthority(Resource):
    """A self-signed Nebula CA (Ed25519). `private_key_pem` is a secret."""

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]
    fingerprint: pulumi.Output[str]
    not_before: pulumi.Output[int]
    not_after: pulumi.Output[int]

    def __init__(self, name: str, *, ca_name: pulumi.Input[str], validity_period_hours: pulumi.Input[int],
                 early_renewal_hours: pulumi.Input[int] = 0, opts: Optional[pulumi.ResourceOptions] = None):
        props = {"name": ca_name, "validity_period_hours": validity_period_hours,
                 "early_renewal_hours": early_renewal_hours, "cert_pem": None, "private_key_pem": None,
                 "fingerprint": None, "not_before": None, "not_after": None}
        super().__init__(CaProvider(), name, props, _secret_outputs(opts, ["private_key_pem"]))
        # The engine marks the state secret (additional_secret_outputs); this marks
        # the in-program Output secret too, so nothing downstream prints it.
        self.private_key_pem = pulumi.Output.secret(self.private_key_pem)


class NebulaHostCertificate(Resource):
    """A host certificate and its X25519 key, signed by a `NebulaCertificateAuthority`.
    `ip` carries the mesh prefix (`10.42.2.1/16`). `private_key_pem` is a secret."""

    cert_pem: pulumi.Output[str]
    private_key_pem: pulumi.Output[str]
    public_key_pem: pulumi.Output[str]
    fingerprint: pulumi.Output[str]
    ca_fingerprint: pulumi.Output[str]
    not_before: pulumi.Output[int]
    not_after: pulumi.Output[int]

    def __init__(self, name: str, *, ca: NebulaCertificateAuthority, host_name: pulumi.Input[str],
                 ip: pulumi.Input[str], groups: Sequence[str] = (), subnets: Sequence[str] = (),
                 validity_period_hours: pulumi.Input[int], early_renewal_hours: pulumi.Input[int] = 0,
                 opts: Optional[pulumi.ResourceOptions] = None):
        props = {"name": host_name, "ip": ip, "groups": list(groups), "subnets": list(subnets),
                 "validity_period_hours": validity_period_hours, "early_renewal_hours": early_renewal_hours,
                 "ca_cert_pem": ca.cert_pem, "ca_private_key_pem": ca.private_key_pem,
                 "cert_pem": None, "private_key_pem": None, "public_key_pem": None, "fingerprint": None,
                 "ca_fingerprint": None, "not_before": None, "not_after": None}
        super().__init__(HostCertProvider(), name, props,
                         _secret_outputs(opts, ["private_key_pem", "ca_private_key_pem"]))
        self.private_key_pem = pulumi.Output.secret(self.private_key_pem)
