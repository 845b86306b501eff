"""Class: Kubernetes credentials that cannot be used. With ACTIVATOR_WATCH_PODS on,
the process needs in-cluster credentials or a kubeconfig; whatever is wrong with
them ends `python -m activator` at start with exit code 2 and one line on stderr
that names KUBECONFIG (or the in-cluster variables) and what is wrong, never a
traceback, and never a process that starts and then watches with no credentials."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Optional

import pytest

from tests.conftest import unavailable
import yaml

ROOT = Path(__file__).resolve().parents[2]
TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def _config(cluster: Optional[dict[str, Any]] = None, user: Optional[dict[str, Any]] = None,
            context: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "lab",
            "clusters": [{"name": "lab", "cluster": {"server": "https://127.0.0.1:6443", **(cluster or {})}}],
            "users": [{"name": "me", "user": user if user is not None else {"token": "t"}}],
            "contexts": [{"name": "lab", "context": {"cluster": "lab", "user": "me", **(context or {})}}]}


def _without(key: str) -> dict[str, Any]:
    config = _config()
    del config[key]
    return config


BAD: dict[str, tuple[Any, str]] = {
    # id: (file content: bytes, str, a YAML-able value, or None for no file; what the line says)
    "missing file": (None, "no such file"),
    "a directory": ("DIR", "is a directory"),
    "empty": ("", "empty"),
    "not UTF-8": (b"\xff\xfe\x00apiVersion", "not UTF-8"),
    "not YAML": ("a: [\n", "not YAML"),
    "a YAML string": ("hello\n", "not a kubeconfig"),
    "a YAML list": ([1, 2], "not a kubeconfig"),
    "clusters not a list": ({**_config(), "clusters": 5}, "clusters"),
    "an unnamed context": ({**_config(), "contexts": [{"context": {"cluster": "lab"}}]}, "name"),
    "no current context": (_without("current-context"), "no current-context"),
    "current context not defined": ({**_config(), "current-context": "other"}, "'other'"),
    "context names a missing cluster": (_config(context={"cluster": "nope"}), "cluster 'nope'"),
    "context names a missing user": (_config(context={"user": "nope"}), "user 'nope'"),
    "cluster without server": ({**_config(), "clusters": [{"name": "lab", "cluster": {}}]}, "server"),
    "server not a URL": (_config(cluster={"server": "not a url"}), "server"),
    "missing CA file": (_config(cluster={"certificate-authority": "/nonexistent/ca.crt"}), "/nonexistent/ca.crt"),
    "missing token file": (_config(user={"tokenFile": "/nonexistent/token"}), "/nonexistent/token"),
    "CA file not a certificate": (_config(cluster={"certificate-authority": "not-a-cert.pem"}),
                                  "certificates or key"),
    "CA data not base64": (_config(cluster={"certificate-authority-data": "%%%"}), "certificates or key"),
    "client certificate not PEM": (_config(user={"client-certificate": "not-a-cert.pem",
                                                  "client-key": "not-a-cert.pem"}), "certificates or key"),
    "exec plugin missing": (_config(user={"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1",
                                                    "command": "/nonexistent/kubectl-auth"}}),
                            "/nonexistent/kubectl-auth"),
}


def _run(tmp_path: Path, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ACTIVATOR_", "AWS_", "KUBERNETES_", "KUBECONFIG"))}
    env.update({"ACTIVATOR_BACKEND": "http://127.0.0.1:9", "ACTIVATOR_INSTANCE_IDS": "i-0123456789abcdef0",
                "ACTIVATOR_HOST": "127.0.0.1", "ACTIVATOR_PORT": "18081", "ACTIVATOR_WATCH_PODS": "true",
                "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "HOME": str(tmp_path)}, **environ)
    process = subprocess.Popen([sys.executable, "-m", "activator"], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:  # it started and serves: the credentials were not refused
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(f"the activator started with unusable credentials; stdout: {stdout[-500:]}")
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def _one_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = done.stderr.splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    return lines[0]


@pytest.mark.parametrize("case", list(BAD))
def test_an_unusable_kubeconfig_is_one_line_naming_it(case: str, tmp_path: Path) -> None:
    content, says = BAD[case]
    path = tmp_path / "kubeconfig"
    (tmp_path / "not-a-cert.pem").write_text("hello\n")
    if content == "DIR":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content)
    elif content is not None:
        path.write_text(yaml.safe_dump(content))
    line = _one_line(_run(tmp_path, KUBECONFIG=str(path)))
    assert f"KUBECONFIG={path}" in line and says in line, line
    assert "ACTIVATOR_WATCH_PODS" in line


def test_no_kubeconfig_and_no_cluster_names_both(tmp_path: Path) -> None:
    line = _one_line(_run(tmp_path))
    assert "KUBECONFIG" in line and str(tmp_path / ".kube" / "config") in line, line
    assert "KUBERNETES_SERVICE_HOST" in line, line


@pytest.mark.parametrize("environ, says", [
    ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443"}, str(TOKEN)),
    ({"KUBERNETES_SERVICE_HOST": "10.96.0.1"}, "KUBERNETES_SERVICE_PORT"),
    ({"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "https"}, "KUBERNETES_SERVICE_PORT"),
])
def test_absent_in_cluster_credentials_are_one_line_naming_them(
        environ: dict[str, str], says: str, tmp_path: Path) -> None:
    if TOKEN.exists():  # inside a pod the in-cluster credentials exist: the premise does not hold
        unavailable(f"{TOKEN} exists: run this outside a Kubernetes pod")
    line = _one_line(_run(tmp_path, **environ))
    assert "KUBERNETES_SERVICE_HOST" in line and says in line, line


# Good credentials are still taken: the checks above refuse nothing the loader can use.

def _api(environ: dict[str, str]) -> Any:
    from activator.kube import kubernetes_api

    async def make() -> Any:
        api = await kubernetes_api(environ)
        host = api.api_client.configuration.host
        await api.api_client.close()
        return host

    import asyncio
    return asyncio.run(make())


def _certificate() -> str:
    """A self-signed CA certificate in PEM, as a cluster's ca.crt is."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kubernetes")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def test_a_kubeconfig_list_with_relative_files_is_taken(tmp_path: Path) -> None:
    (tmp_path / "ca.crt").write_text(_certificate())
    config = _config(cluster={"certificate-authority": "ca.crt"}, user={"tokenFile": "token"})
    (tmp_path / "token").write_text("t\n")
    (tmp_path / "kubeconfig").write_text(yaml.safe_dump(config))
    kubeconfig = f"{tmp_path / 'absent'}{os.pathsep}{tmp_path / 'kubeconfig'}"
    assert _api({"KUBECONFIG": kubeconfig}) == "https://127.0.0.1:6443"


def test_in_cluster_credentials_are_taken_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubernetes_asyncio.config import incluster_config

    for name, text in (("SERVICE_TOKEN_FILENAME", "token"), ("SERVICE_CERT_FILENAME", _certificate())):
        (tmp_path / name).write_text(text)
        monkeypatch.setattr(incluster_config, name, str(tmp_path / name))
    environ = {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "443",
               "KUBECONFIG": str(tmp_path / "absent")}
    assert _api(environ) == "https://10.96.0.1:443"
