"""The homelab cluster as a Pulumi Kubernetes provider, from `homelabKubeconfig`.

The kubeconfig is checked before anything uses it, so a wrong one is one line
naming the key instead of a provider error later: it must be a kubeconfig whose
current context names a cluster with an https server. On `pulumi up` the API
server must also answer a TCP connection (a homelab behind NAT that the machine
running Pulumi cannot reach fails here, not halfway through); a preview only
warns, because pull-request previews often run where the homelab is not
reachable.
"""

from __future__ import annotations

import socket
from typing import Callable, Optional
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s
import yaml

from components.config import NAMESPACE, ConfigError

KEY = f"{NAMESPACE}:homelabKubeconfig"
PROBE_SECONDS = 5


def api_server(kubeconfig: str) -> str:
    """The current context's server URL, or a `ConfigError` naming the key."""
    try:
        document = yaml.safe_load(kubeconfig)
    except yaml.YAMLError:
        raise ConfigError(f"{KEY}: not a kubeconfig (not valid YAML)") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{KEY}: not a kubeconfig (expected a mapping)")
    current = document.get("current-context")
    if not current:
        raise ConfigError(f"{KEY}: the kubeconfig has no current-context")
    contexts = {c.get("name"): c.get("context") or {} for c in document.get("contexts") or [] if isinstance(c, dict)}
    if current not in contexts:
        raise ConfigError(f"{KEY}: current-context {current!r} is not among its contexts")
    cluster_name = contexts[current].get("cluster")
    clusters = {c.get("name"): c.get("cluster") or {} for c in document.get("clusters") or [] if isinstance(c, dict)}
    server = (clusters.get(cluster_name) or {}).get("server")
    if not server:
        raise ConfigError(f"{KEY}: context {current!r} names cluster {cluster_name!r}, which has no server")
    parts = urlsplit(str(server))
    if parts.scheme != "https" or not parts.hostname:
        raise ConfigError(f"{KEY}: the API server must be an https URL, got {server!r}")
    return str(server)


def probe(server: str, timeout: float = PROBE_SECONDS) -> Optional[str]:
    """Why a TCP connection to the API server fails, or None when it answers."""
    parts = urlsplit(server)
    try:
        with socket.create_connection((parts.hostname, parts.port or 443), timeout=timeout):
            return None
    except OSError as err:
        return f"{parts.hostname}:{parts.port or 443} does not answer ({err.strerror or err})"


def checked(kubeconfig: str, dry_run: bool, reach: Callable[[str], Optional[str]] = probe) -> str:
    """The kubeconfig, once it parses and (on `up`) its API server answers."""
    server = api_server(kubeconfig)
    problem = reach(server)
    if problem:
        if not dry_run:
            raise ConfigError(f"{KEY}: the homelab API server {problem}")
        pulumi.log.warn(f"{KEY}: the homelab API server {problem}; the preview of homelab resources is a guess")
    return kubeconfig


def resources(cpu: str, memory: str, memory_limit: str) -> k8s.core.v1.ResourceRequirementsArgs:
    """Requests for scheduling, and a memory limit (no CPU limit: no throttling)."""
    return k8s.core.v1.ResourceRequirementsArgs(requests={"cpu": cpu, "memory": memory},
                                                limits={"memory": memory_limit})


def provider(name: str, kubeconfig: pulumi.Output[str], opts: Optional[pulumi.ResourceOptions] = None) -> k8s.Provider:
    """A provider for the homelab that uses only this kubeconfig (never ~/.kube or
    $KUBECONFIG of whoever runs Pulumi)."""
    dry_run = pulumi.runtime.is_dry_run()
    verified = pulumi.Output.secret(kubeconfig.apply(lambda text: checked(text, dry_run)))
    return k8s.Provider(name, kubeconfig=verified, enable_server_side_apply=True, opts=opts)
