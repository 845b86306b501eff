"""The PKI of one GPU worker's k3s cluster, made by the program (pulumi-tls).

k3s uses CA files it finds in `/var/lib/rancher/k3s/server/tls` before its first
start instead of generating its own. Making them here means the admin kubeconfig
is a stack output before the worker ever boots. Every file reaches the worker
through an SSM SecureString below `<host prefix>/k3s/` (read by
hybrid-llm-k3s-tls.service at each start), never through user data.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from typing import Optional

import pulumi
import pulumi_aws as aws
import pulumi_tls as tls
import yaml

from components.generated import publish

# CAs live ten years: replacing one means every kubeconfig changes.
CA_VALIDITY_HOURS = 87600
# The admin client certificate is re-issued by `pulumi up` in its last 30 days.
ADMIN_VALIDITY_HOURS = 8760
ADMIN_EARLY_RENEWAL_HOURS = 720
API_PORT = 6443

# File (relative to k3s's tls directory) -> the CA it belongs to.
CA_FILES = {
    "server-ca": "k3s-server-ca",
    "client-ca": "k3s-client-ca",
    "request-header-ca": "k3s-request-header-ca",
    "etcd/peer-ca": "etcd-peer-ca",
    "etcd/server-ca": "etcd-server-ca",
}
SERVICE_ACCOUNT_KEY = "service.key"
_CA_USES = ["cert_signing", "crl_signing", "digital_signature", "key_encipherment"]


def tls_files() -> list[tuple[str, str]]:
    """(file below k3s's tls directory, mode) of everything the worker fetches."""
    files: list[tuple[str, str]] = []
    for stem in CA_FILES:
        files += [(f"{stem}.crt", "0644"), (f"{stem}.key", "0600")]
    return files + [(SERVICE_ACCOUNT_KEY, "0600")]


@dataclass
class K3sPkiArgs:
    host: str                                   # worker name, e.g. gpu-0
    ssm_prefix: str                             # the host's own parameter subtree
    api_address: ipaddress.IPv4Address          # the worker's Nebula IP


class K3sPki(pulumi.ComponentResource):
    """CAs, service-account key and an admin client certificate for one worker."""

    kubeconfig: pulumi.Output[str]              # secret
    server_ca_cert_pem: pulumi.Output[str]
    client_ca_cert_pem: pulumi.Output[str]
    client_ca_key_pem: pulumi.Output[str]       # secret: signs the homelab's Liqo credential
    parameters: list[aws.ssm.Parameter]

    def __init__(self, name: str, args: K3sPkiArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:K3sPki", name, None, opts)
        self.parameters = []
        certs: dict[str, tuple[tls.PrivateKey, tls.SelfSignedCert]] = {}
        for stem, common_name in CA_FILES.items():
            key, cert = self._ca(f"{name}-{stem.replace('/', '-')}", common_name)
            certs[stem] = (key, cert)
            self._parameter(name, args, f"{stem}.crt", cert.cert_pem)
            self._parameter(name, args, f"{stem}.key", key.private_key_pem)

        # k3s signs service-account tokens with an RSA key (service.key).
        service_key = tls.PrivateKey(
            f"{name}-service-account", algorithm="RSA", rsa_bits=2048,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self._parameter(name, args, SERVICE_ACCOUNT_KEY, service_key.private_key_pem)

        # The admin k3s itself writes into k3s.yaml: O=system:masters, signed by
        # the client CA, so the API server trusts it as cluster-admin.
        admin_key = tls.PrivateKey(
            f"{name}-admin", algorithm="ECDSA", ecdsa_curve="P256",
            opts=pulumi.ResourceOptions(parent=self),
        )
        admin_csr = tls.CertRequest(
            f"{name}-admin", private_key_pem=admin_key.private_key_pem,
            subject=tls.CertRequestSubjectArgs(common_name="system:admin", organization="system:masters"),
            opts=pulumi.ResourceOptions(parent=self),
        )
        client_key, client_cert = certs["client-ca"]
        admin_cert = tls.LocallySignedCert(
            f"{name}-admin", cert_request_pem=admin_csr.cert_request_pem,
            ca_private_key_pem=client_key.private_key_pem, ca_cert_pem=client_cert.cert_pem,
            validity_period_hours=ADMIN_VALIDITY_HOURS, early_renewal_hours=ADMIN_EARLY_RENEWAL_HOURS,
            allowed_uses=["digital_signature", "key_encipherment", "client_auth"],
            opts=pulumi.ResourceOptions(parent=self),
        )

        server_cert = certs["server-ca"][1].cert_pem
        self.server_ca_cert_pem = server_cert
        self.client_ca_cert_pem = client_cert.cert_pem
        self.client_ca_key_pem = pulumi.Output.secret(client_key.private_key_pem)
        self.kubeconfig = pulumi.Output.secret(pulumi.Output.all(
            server_cert, admin_cert.cert_pem, admin_key.private_key_pem,
        ).apply(lambda v: kubeconfig_yaml(args.host, f"https://{args.api_address}:{API_PORT}", *v)))
        publish(f"workers/{args.host}/kubeconfig.yaml", self.kubeconfig)
        self.register_outputs({
            "kubeconfig": self.kubeconfig,
            "server_ca_cert_pem": self.server_ca_cert_pem,
            "client_ca_cert_pem": self.client_ca_cert_pem,
        })

    def _ca(self, name: str, common_name: str) -> tuple[tls.PrivateKey, tls.SelfSignedCert]:
        """An ECDSA P-256 CA, as k3s would generate it."""
        key = tls.PrivateKey(name, algorithm="ECDSA", ecdsa_curve="P256",
                             opts=pulumi.ResourceOptions(parent=self))
        cert = tls.SelfSignedCert(
            name, private_key_pem=key.private_key_pem, is_ca_certificate=True,
            subject=tls.SelfSignedCertSubjectArgs(common_name=common_name, organization="hybrid-llm"),
            validity_period_hours=CA_VALIDITY_HOURS, allowed_uses=_CA_USES,
            opts=pulumi.ResourceOptions(parent=self),
        )
        return key, cert

    def _parameter(self, name: str, args: K3sPkiArgs, file: str, value: pulumi.Input[str]) -> None:
        """One file as a SecureString: `<prefix>/k3s/<file>`."""
        self.parameters.append(aws.ssm.Parameter(
            f"{name}-{file.replace('/', '-').replace('.', '-')}",
            name=f"{args.ssm_prefix}/k3s/{file}", type="SecureString",
            value=pulumi.Output.secret(value),
            description=f"k3s {file} of {args.host} (written to /var/lib/rancher/k3s/server/tls at each start)",
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["value"]),
        ))


def kubeconfig_yaml(cluster: str, server: str, ca_pem: str, cert_pem: str, key_pem: str) -> str:
    """A kubeconfig with embedded credentials, as `kubectl config view --raw` writes it."""
    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    user = f"{cluster}-admin"
    return yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": cluster, "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": {"client-certificate-data": b64(cert_pem), "client-key-data": b64(key_pem)}}],
        "contexts": [{"name": cluster, "context": {"cluster": cluster, "user": user}}],
        "current-context": cluster,
        "preferences": {},
    }, sort_keys=False)
