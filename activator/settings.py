"""The activator's environment contract, read once at start into a frozen
`Settings`. Every malformed variable raises `SettingsError` with one line that
names it, so `python -m activator` can exit 2 without a traceback.

Tests build `Settings` directly (or with `dataclasses.replace`) to shorten the
hold, poll and backoff times; only the variables listed in `activator/__init__.py`
are read from the environment.
"""

from __future__ import annotations

import ipaddress
import math
import re
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlsplit

INSTANCE_ID = re.compile(r"^i-[0-9a-f]{8}(?:[0-9a-f]{9})?$")
# Liqo cluster ids and node names are Kubernetes object names (RFC 1123 subdomain).
K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
METRIC_NAMESPACE = re.compile(r"^[A-Za-z0-9._/#:-]{1,255}$")
# Ollama model references: [host/][namespace/]name[:tag], as `ollama pull` takes them.
MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,199}(?::[A-Za-z0-9][A-Za-z0-9._-]{0,127})?$")
VERSION = re.compile(r"^[0-9]+\.[0-9]+\.[0-9]+(?:[-+][0-9A-Za-z.-]+)?$")


class SettingsError(ValueError):
    """A malformed environment variable: the message is one line naming it."""


@dataclass(frozen=True)
class Settings:
    backend: str
    """Ollama's base URL, without a trailing slash."""
    instance_ids: tuple[str, ...]
    """The workers the activator may start; the first serves the proxy."""
    port: int = 11434
    host: str = "0.0.0.0"
    hold_seconds: float = 480.0
    """The cold-start budget's p99 plus a minute for one model
    (components/homelab/cold_start.py; the deployment passes the figure for the
    stack's models, and a test keeps the two defaults equal)."""
    watch_pods: bool = True
    cluster_ids: tuple[str, ...] = ()
    """Liqo cluster id of each worker, in the order of `instance_ids` (or empty)."""
    virtual_nodes: tuple[str, ...] = ()
    """Virtual node name of each worker, in the same order (or empty)."""
    metric_namespace: str = "HybridLLM"
    metric_name: str = "Activity"
    poll_seconds: float = 2.0
    """How often a hold probes the backend (`GET /api/version`)."""
    connect_timeout: float = 5.0
    """The only timeout towards the backend: a streamed answer has no total limit."""
    buffer_bytes: int = 32 * 1024 * 1024
    """Request bodies up to this size are read fully and can be replayed after a
    hold; larger ones (blob uploads) are streamed once the backend answers."""
    pod_cooldown_seconds: float = 600.0
    """After a pending pod woke a worker, no other pod wakes that worker for this long."""
    aws_backoff_base: float = 1.0
    aws_backoff_cap: float = 30.0
    aws_poll_seconds: float = 5.0
    """How often the state of a `stopping` worker is read before it is started."""
    retry_after_seconds: int = 30
    """`Retry-After` of a 503 when the hold ran out (the worker is still coming)."""
    failed_retry_after_seconds: int = 300
    """`Retry-After` of a prompt 503 (an operator must act first)."""
    shutdown_seconds: float = 50.0
    """At SIGTERM, how long answers in flight may go on before they are cut (held
    requests get their 503 at once and retry on the other replica)."""
    models: tuple[str, ...] = ()
    """The models the stack pulls (config `models`): what a read of the model
    lists is answered with while the worker sleeps and no answer was seen yet."""
    ollama_version: str = "0.0.0"
    """What `GET /api/version` answers while the worker sleeps and no answer was seen yet."""
    max_held: int = 256
    """Requests held at once; past it, 503 at once. Half of Ollama's own queue
    (OLLAMA_MAX_QUEUE, 512), so two replicas releasing together still fit it."""
    first_byte_seconds: float = 600.0
    """How long a GPU request may wait for Ollama's first byte: a model load from
    the volume plus a whole `stream: false` generation, which sends nothing until done."""
    stream_idle_seconds: float = 120.0
    """How long a started answer may send nothing before it is ended."""
    restart_check_seconds: float = 15.0
    """While requests are held and the worker was started, how often its EC2 state is
    read to see whether it stopped again."""
    max_restarts: int = 2
    """Starts of a worker that stopped during one hold, after the first: a cold start
    takes minutes, so a hold has room for about two more; past them the stops are a
    fault for a person to see, not a race to win."""
    liveness_seconds: float = 15.0
    """How often the activator probes `GET /api/version` on its own, so it knows
    whether Ollama answers without an AWS call or a client's request."""
    read_timeout: float = 30.0
    """Total time a read (see reads.py) may take at Ollama before the activator
    answers it itself."""
    cache_entries: int = 256
    cache_body_bytes: int = 4 * 1024 * 1024
    """Reads' answers kept: how many, and the largest body kept."""

    @property
    def proxy_instance_id(self) -> str:
        return self.instance_ids[0]


def _list(environ: Mapping[str, str], name: str, pattern: re.Pattern[str], what: str) -> tuple[str, ...]:
    raw = environ.get(name, "")
    items = tuple(item.strip() for item in raw.split(",")) if raw.strip() else ()
    for item in items:
        if not pattern.match(item):
            raise SettingsError(f"{name}: {item!r} is not {what}")
    if len(set(items)) != len(items):
        raise SettingsError(f"{name}: lists the same value twice")
    return items


# A number as people write it: ASCII digits, an optional fraction and exponent.
# float() and int() also take "1_0", full-width and other Unicode digits, "nan" and "inf".
DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
WHOLE = re.compile(r"[0-9]{1,9}")
# A hostname: dot-separated labels of ASCII letters, digits, '-' and '_' (Docker
# service names), at most 253 characters, not all-digit in the last label (that is
# an IPv4 address, which ipaddress has already refused).
LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")


def _not_finite(name: str, raw: str) -> SettingsError | None:
    """The error for "nan", "inf", "1e400" and such, else None."""
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    if math.isfinite(value):
        return None
    return SettingsError(f"{name}: not a finite number, got {raw!r}")


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    text = raw.strip()
    error = _not_finite(name, raw)
    if error:
        raise error
    if not DECIMAL.fullmatch(text):
        raise SettingsError(f"{name}: expected a number of seconds in ASCII digits (like 2.5), got {raw!r}")
    value = float(text)
    if value <= 0:
        raise SettingsError(f"{name}: must be more than 0 seconds, got {raw!r}")
    return value


def _whole(environ: Mapping[str, str], name: str, default: int, low: int = 1,
           high: int = 10**9, what: str = "a whole number") -> int:
    raw = environ.get(name)
    if raw is None or not raw.strip():
        return default
    text = raw.strip().lstrip("0") or "0"  # leading zeros are harmless; int() limits digits
    if WHOLE.fullmatch(text) and low <= int(text) <= high:
        return int(text)
    error = _not_finite(name, raw)
    if error:
        raise error
    raise SettingsError(f"{name}: expected {what} {low}-{high} in ASCII digits, got {raw!r}")


def _port(environ: Mapping[str, str]) -> int:
    return _whole(environ, "ACTIVATOR_PORT", 11434, high=65535, what="a port")


def address_problem(text: str) -> str | None:
    """Why `text` is neither an IP address nor a hostname, else None."""
    try:
        ipaddress.ip_address(text)
        return None
    except ValueError:
        pass
    if text.startswith("[") and text.endswith("]"):
        return "write an IPv6 address without brackets"
    if not text.isascii():
        return "not ASCII (give a hostname in its xn-- form)"
    labels = text[:-1].split(".") if text.endswith(".") else text.split(".")
    if len(text) > 253 or not all(LABEL.fullmatch(label) for label in labels) or labels[-1].isdigit():
        return "not an IP address or a hostname"
    return None


def _host(environ: Mapping[str, str]) -> str:
    raw = environ.get("ACTIVATOR_HOST", "0.0.0.0")
    host = raw.strip()
    problem = address_problem(host) if host else "empty"
    if problem:
        raise SettingsError(f"ACTIVATOR_HOST: {problem}, got {raw!r}")
    return host


def _flag(environ: Mapping[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in ("true", "false"):
        raise SettingsError(f"{name}: expected true or false, got {environ[name]!r}")
    return raw == "true"


def _backend(environ: Mapping[str, str]) -> str:
    """Ollama's root URL: http(s)://host[:port][/], nothing else. Requests keep their
    own path, so a base path would double it (/api/api/...); user info would be sent
    nowhere (and is a secret in the environment); a query or fragment, even an empty
    "?" or "#", would end up in front of every request's path."""
    raw = environ.get("ACTIVATOR_BACKEND", "")
    text = raw.strip()
    if not text:
        raise SettingsError("ACTIVATOR_BACKEND: not set (Ollama's URL, e.g. http://ollama:11434)")
    if not text.isprintable() or any(c.isspace() for c in text):
        raise SettingsError(f"ACTIVATOR_BACKEND: must not contain spaces or control characters, got {raw!r}")
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        raise SettingsError(f"ACTIVATOR_BACKEND: not a URL: {raw!r}") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SettingsError(f"ACTIVATOR_BACKEND: expected http(s)://host[:port], got {raw!r}")
    if "@" in parts.netloc:
        raise SettingsError(f"ACTIVATOR_BACKEND: must not carry user info (user@), got {raw!r}")
    if "?" in text or "#" in text:
        raise SettingsError(f"ACTIVATOR_BACKEND: must not carry a query or fragment, got {raw!r}")
    if parts.path not in ("", "/"):
        raise SettingsError(f"ACTIVATOR_BACKEND: must be Ollama's root URL without a path "
                            f"(requests keep their own /api/... path), got {raw!r}")
    problem = address_problem(parts.hostname) if parts.hostname else "no host"
    if problem:
        raise SettingsError(f"ACTIVATOR_BACKEND: host {parts.hostname or ''!r}: {problem}, got {raw!r}")
    if port == 0:
        raise SettingsError(f"ACTIVATOR_BACKEND: port 0 is not a port, got {raw!r}")
    return f"{parts.scheme}://{parts.netloc}"


def _same_length(name: str, values: tuple[str, ...], instance_ids: tuple[str, ...]) -> None:
    if values and len(values) != len(instance_ids):
        raise SettingsError(f"{name}: has {len(values)} entries, ACTIVATOR_INSTANCE_IDS has "
                            f"{len(instance_ids)} (one per worker, same order)")


def from_env(environ: Mapping[str, str]) -> Settings:
    backend = _backend(environ)
    instance_ids = _list(environ, "ACTIVATOR_INSTANCE_IDS", INSTANCE_ID, "an EC2 instance id (i-...)")
    if not instance_ids:
        raise SettingsError("ACTIVATOR_INSTANCE_IDS: not set (comma-separated EC2 instance ids)")
    cluster_ids = _list(environ, "ACTIVATOR_CLUSTER_IDS", K8S_NAME, "a Liqo cluster id")
    virtual_nodes = _list(environ, "ACTIVATOR_VIRTUAL_NODES", K8S_NAME, "a node name")
    _same_length("ACTIVATOR_CLUSTER_IDS", cluster_ids, instance_ids)
    _same_length("ACTIVATOR_VIRTUAL_NODES", virtual_nodes, instance_ids)
    namespace = environ.get("ACTIVATOR_METRIC_NAMESPACE", "HybridLLM").strip()
    if not METRIC_NAMESPACE.match(namespace) or namespace.startswith("AWS/"):
        raise SettingsError(f"ACTIVATOR_METRIC_NAMESPACE: not a custom CloudWatch namespace: "
                            f"{environ.get('ACTIVATOR_METRIC_NAMESPACE')!r}")
    host = _host(environ)
    models = _list(environ, "ACTIVATOR_MODELS", MODEL_NAME, "an Ollama model name")
    version = environ.get("ACTIVATOR_OLLAMA_VERSION", "").strip()
    if version and not VERSION.match(version):
        raise SettingsError(f"ACTIVATOR_OLLAMA_VERSION: expected a version like 0.32.15, got {version!r}")
    defaults = Settings(backend=backend, instance_ids=instance_ids)
    return Settings(
        backend=backend,
        instance_ids=instance_ids,
        port=_port(environ),
        host=host,
        hold_seconds=_number(environ, "ACTIVATOR_HOLD_SECONDS", defaults.hold_seconds),
        watch_pods=_flag(environ, "ACTIVATOR_WATCH_PODS", True),
        cluster_ids=cluster_ids,
        virtual_nodes=virtual_nodes,
        metric_namespace=namespace,
        poll_seconds=_number(environ, "ACTIVATOR_POLL_SECONDS", defaults.poll_seconds),
        connect_timeout=_number(environ, "ACTIVATOR_CONNECT_TIMEOUT", defaults.connect_timeout),
        pod_cooldown_seconds=_number(environ, "ACTIVATOR_POD_COOLDOWN_SECONDS",
                                     defaults.pod_cooldown_seconds),
        models=models,
        ollama_version=version or defaults.ollama_version,
        max_held=_whole(environ, "ACTIVATOR_MAX_HELD", defaults.max_held),
        first_byte_seconds=_number(environ, "ACTIVATOR_FIRST_BYTE_SECONDS", defaults.first_byte_seconds),
        stream_idle_seconds=_number(environ, "ACTIVATOR_STREAM_IDLE_SECONDS", defaults.stream_idle_seconds),
        shutdown_seconds=_number(environ, "ACTIVATOR_SHUTDOWN_SECONDS", defaults.shutdown_seconds),
        restart_check_seconds=_number(environ, "ACTIVATOR_RESTART_CHECK_SECONDS",
                                      defaults.restart_check_seconds),
    )

