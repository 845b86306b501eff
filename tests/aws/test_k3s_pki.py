"""The GPU clusters' PKI: real keys and certificates (pulumi-tls answered by
`cryptography` in the mocks), checked the way kubectl and k3s would use them."""

from __future__ import annotations

import base64

import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pulumi.runtime import rpc

from components.aws import k3s_pki
from tools import harness


@pytest.fixture(scope="module")
def two_workers():
    return harness.run_stack("dev", {"hybrid-llm:gpuWorkers": "2"})


def stored(plan, host: str, file: str) -> str:
    """The value the program put into SSM for one k3s file of one worker."""
    name = f"/hybrid-llm/dev/hosts/{host}/k3s/{file}"
    (parameter,) = [p for p in plan.of_type("aws:ssm/parameter:Parameter") if p.inputs["name"] == name]
    return parameter.plain()["value"]


def kubeconfig(plan, host: str) -> dict:
    return yaml.safe_load(plan.outputs["kubeconfigs"].value[host])


def decoded(value: str) -> bytes:
    return base64.b64decode(value)


@pytest.mark.parametrize("host, ip", [("gpu-0", "10.42.2.1"), ("gpu-1", "10.42.2.2")])
def test_kubeconfig_points_at_the_workers_nebula_ip_with_its_server_ca(two_workers, host, ip):
    config = kubeconfig(two_workers, host)
    (cluster,) = config["clusters"]
    assert cluster["cluster"]["server"] == f"https://{ip}:6443"
    ca = x509.load_pem_x509_certificate(decoded(cluster["cluster"]["certificate-authority-data"]))
    assert ca == x509.load_pem_x509_certificate(stored(two_workers, host, "server-ca.crt").encode())
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert config["current-context"] == config["contexts"][0]["name"]
    assert config["contexts"][0]["context"] == {"cluster": cluster["name"], "user": config["users"][0]["name"]}


@pytest.mark.parametrize("host", ["gpu-0", "gpu-1"])
def test_admin_certificate_is_signed_by_the_client_ca_and_matches_its_key(two_workers, host):
    (user,) = kubeconfig(two_workers, host)["users"]
    cert = x509.load_pem_x509_certificate(decoded(user["user"]["client-certificate-data"]))
    key = serialization.load_pem_private_key(decoded(user["user"]["client-key-data"]), password=None)
    client_ca = x509.load_pem_x509_certificate(stored(two_workers, host, "client-ca.crt").encode())
    server_ca = x509.load_pem_x509_certificate(stored(two_workers, host, "server-ca.crt").encode())

    cert.verify_directly_issued_by(client_ca)
    with pytest.raises((ValueError, InvalidSignature)):
        cert.verify_directly_issued_by(server_ca)
    assert cert.public_key().public_numbers() == key.public_key().public_numbers()
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:admin"
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]


def test_every_ca_key_matches_its_certificate(two_workers):
    for stem in k3s_pki.CA_FILES:
        cert = x509.load_pem_x509_certificate(stored(two_workers, "gpu-0", f"{stem}.crt").encode())
        key = serialization.load_pem_private_key(stored(two_workers, "gpu-0", f"{stem}.key").encode(), None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert cert.public_key().public_numbers() == key.public_key().public_numbers(), stem
        assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
        cert.verify_directly_issued_by(cert)       # self-signed
    service = serialization.load_pem_private_key(stored(two_workers, "gpu-0", "service.key").encode(), None)
    assert isinstance(service, rsa.RSAPrivateKey) and service.key_size == 2048


def test_each_worker_is_its_own_cluster(two_workers):
    for file in ("server-ca.crt", "client-ca.crt", "service.key"):
        assert stored(two_workers, "gpu-0", file) != stored(two_workers, "gpu-1", file)


def test_all_k3s_files_are_secure_strings_with_secret_values(two_workers):
    parameters = [p for p in two_workers.of_type("aws:ssm/parameter:Parameter") if "/k3s/" in p.inputs["name"]]
    assert len(parameters) == 2 * len(k3s_pki.tls_files())
    for parameter in parameters:
        assert parameter.inputs["type"] == "SecureString", parameter.name
        assert rpc.is_rpc_secret(parameter.inputs["value"]), parameter.name


def test_kubeconfigs_are_a_secret_output_and_a_secret_file(two_workers):
    assert two_workers.outputs["kubeconfigs"].secret is True
    for host in ("gpu-0", "gpu-1"):
        rendered = two_workers.file(f"workers/{host}/kubeconfig.yaml")
        assert rendered.secret is True
        assert rendered.content == two_workers.outputs["kubeconfigs"].value[host]
