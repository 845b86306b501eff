"""The Kubernetes client of the pod watch: in-cluster credentials, else a kubeconfig
(KUBECONFIG, or ~/.kube/config when it is not set), checked at start.

kubernetes_asyncio raises whatever its parsing meets (a YAML error, an
AssertionError, a KeyError), and loads without complaint a context whose user
is missing, or a server that is not a URL: the watch then fails later, in a loop.
Here each source is checked first, what the library still raises while loading
is caught, and an unusable pair ends the process with one line (`SettingsError`)
that names KUBECONFIG and the in-cluster variables and says what is wrong with each.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit

import yaml

from activator.settings import SettingsError, address_problem

HOST, PORT = "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"
SECTIONS = ("clusters", "contexts", "users")
# A file that a kubeconfig entry names, unless the entry carries the data itself.
FILES = {"clusters": ("certificate-authority",), "users": ("client-certificate", "client-key", "tokenFile")}


class Unusable(Exception):
    """Why one source of credentials cannot be used: one line."""


def one_line(text: object) -> str:
    return " ".join(str(text).split())


async def kubernetes_api(environ: Mapping[str, str]) -> Any:
    """A CoreV1Api on the first usable source, or `SettingsError`."""
    try:
        return _in_cluster(environ)
    except Unusable as err:
        in_cluster = str(err)
    label, path_list = _kubeconfig_paths(environ)
    try:
        return await _kubeconfig(path_list)
    except Unusable as err:
        kubeconfig = f"{label}: {err}"
    # Blame first what was meant: a KUBECONFIG that is set, else the in-cluster variables when set.
    meant_in_cluster = not environ.get("KUBECONFIG", "").strip() and (environ.get(HOST) or environ.get(PORT))
    reasons = [in_cluster, kubeconfig] if meant_in_cluster else [kubeconfig, in_cluster]
    raise SettingsError("; ".join(reasons) + " (the pod watch, ACTIVATOR_WATCH_PODS=true, needs one; "
                        "set it to false outside a cluster)")


def _core_api() -> Any:
    """The client, made on the default configuration just loaded: this reads the CA
    and client certificate files, so a file that is not PEM fails here."""
    from kubernetes_asyncio import client

    try:
        return client.CoreV1Api()
    except Exception as err:
        reason = f"{type(err).__name__}: {one_line(err)}"
        raise Unusable(f"its TLS certificates or key cannot be used: {reason}") from None


def _in_cluster(environ: Mapping[str, str]) -> Any:
    from kubernetes_asyncio.config import incluster_config

    host, port = environ.get(HOST, "").strip(), environ.get(PORT, "").strip()
    if not host and not port:
        raise Unusable(f"not in a cluster ({HOST} and {PORT} are not set)")
    if not host or not port:
        given, missing = (HOST, PORT) if host else (PORT, HOST)
        raise Unusable(f"in-cluster: {given} is set but {missing} is not")
    problem = address_problem(host)
    if problem:
        raise Unusable(f"in-cluster: {HOST}={host!r}: {problem}")
    if not (port.isascii() and port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        raise Unusable(f"in-cluster: {PORT}={port!r} is not a port ({HOST}={host})")
    for path in (incluster_config.SERVICE_TOKEN_FILENAME, incluster_config.SERVICE_CERT_FILENAME):
        problem = _file_problem(Path(path))
        if problem:
            raise Unusable(f"in-cluster ({HOST}={host}): {path}: {problem} (no service account is mounted)")
    try:
        incluster_config.load_incluster_config(environ=dict(environ))
        return _core_api()
    except Unusable as err:
        raise Unusable(f"in-cluster ({HOST}={host}): {err}") from None
    except Exception as err:  # the class: anything the loader meets is this one line
        raise Unusable(f"in-cluster ({HOST}={host}): {type(err).__name__}: {one_line(err)}") from None


def _kubeconfig_paths(environ: Mapping[str, str]) -> tuple[str, list[Path]]:
    raw = environ.get("KUBECONFIG", "")
    if raw.strip():
        return f"KUBECONFIG={raw}", [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    default = Path(os.path.expanduser("~/.kube/config"))
    return f"KUBECONFIG is not set and {default}", [default]


async def _kubeconfig(paths: list[Path]) -> Any:
    from kubernetes_asyncio import config

    merged = _merged(paths)
    _check(merged)
    try:
        await config.load_kube_config(config_file=os.pathsep.join(str(p) for p in paths))
    except Exception as err:  # exec plugins, OIDC, base64 data: whatever the loader meets
        raise Unusable(f"its credentials could not be loaded: {type(err).__name__}: {one_line(err)}") from None
    return _core_api()


def _file_problem(path: Path) -> Optional[str]:
    try:
        if path.stat().st_size == 0:
            return "empty"
    except FileNotFoundError:
        return "no such file"
    except OSError as err:
        return one_line(err.strerror or err)
    return "is a directory" if path.is_dir() else None


def _read(path: Path) -> dict[str, Any]:
    """One kubeconfig file: a mapping whose clusters, contexts and users are named entries."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise Unusable("is a directory") from None
    except OSError as err:
        raise Unusable(f"cannot be read: {one_line(err.strerror or err)}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise Unusable("not UTF-8 text") from None
    if not text.strip():
        raise Unusable("empty")
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" (line {mark.line + 1}: {one_line(getattr(err, 'problem', ''))})" if mark else ""
        raise Unusable(f"not YAML{where}") from None
    if not isinstance(content, dict):
        raise Unusable(f"not a kubeconfig (a YAML {type(content).__name__}, not a mapping)")
    for section in SECTIONS:
        entries = content.get(section) or []
        if not isinstance(entries, list) or not all(
                isinstance(e, dict) and isinstance(e.get("name"), str) and e["name"] for e in entries):
            raise Unusable(f"not a kubeconfig: {section} is not a list of entries with a name")
    return content


def _merged(paths: list[Path]) -> dict[str, Any]:
    """The files merged as kubernetes_asyncio merges them: the first entry of a name
    wins, the last current-context wins; files that do not exist are skipped, as
    long as one exists. Each entry keeps the directory its relative files are in."""
    existing = [p for p in paths if p.exists()]
    if not existing:
        raise Unusable("no such file" if len(paths) == 1 else "none of its files exists")
    merged: dict[str, Any] = {section: {} for section in SECTIONS}
    for path in existing:
        try:
            content = _read(path)
        except Unusable as err:
            raise Unusable(f"{path}: {err}" if len(paths) > 1 else str(err)) from None
        for section in SECTIONS:
            for entry in content.get(section) or []:
                merged[section].setdefault(entry["name"], (entry, path.parent))
        if content.get("current-context") is not None:
            merged["current-context"] = content["current-context"]
    return merged


def _check(merged: dict[str, Any]) -> None:
    """The current context, its cluster and its user exist and are usable."""
    name = merged.get("current-context")
    if not name or not isinstance(name, str):
        raise Unusable("no current-context")
    if name not in merged["contexts"]:
        raise Unusable(f"current-context {name!r} is not among its contexts")
    context = merged["contexts"][name][0].get("context")
    if not isinstance(context, dict):
        raise Unusable(f"context {name!r} has no settings")
    cluster_name, user_name = context.get("cluster"), context.get("user")
    if not cluster_name:
        raise Unusable(f"context {name!r} names no cluster")
    if cluster_name not in merged["clusters"]:
        raise Unusable(f"context {name!r} names cluster {cluster_name!r}, which is not among its clusters")
    if user_name and user_name not in merged["users"]:
        raise Unusable(f"context {name!r} names user {user_name!r}, which is not among its users")
    entry, base = merged["clusters"][cluster_name]
    cluster = entry.get("cluster")
    server = cluster.get("server") if isinstance(cluster, dict) else None
    if not server or not isinstance(server, str):
        raise Unusable(f"cluster {cluster_name!r} has no server")
    try:
        parts = urlsplit(server)
        parts.port
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise Unusable(f"cluster {cluster_name!r}: server {server!r} is not an http(s) URL")
    _check_files("cluster", cluster_name, cluster, base, "clusters")
    if user_name:
        user_entry, user_base = merged["users"][user_name]
        user = user_entry.get("user")
        if user is not None and not isinstance(user, dict):
            raise Unusable(f"user {user_name!r} has no settings")
        _check_files("user", user_name, user or {}, user_base, "users")


def _check_files(kind: str, name: str, body: dict[str, Any], base: Path, section: str) -> None:
    for key in FILES[section]:
        data_key = "token" if key == "tokenFile" else f"{key}-data"
        if key not in body or body.get(data_key):
            continue
        path = base / os.path.expanduser(str(body[key]))
        problem = _file_problem(path)
        if problem:
            raise Unusable(f"{kind} {name!r}: {key} {path}: {problem}")
