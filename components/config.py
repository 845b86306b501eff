"""The stack's configuration, read once into a frozen, typed object and validated
before any resource is declared.

Pulumi hands a program its config as strings (arrays as JSON). `load_config` turns
the `hybrid-llm:*` keys into a `StackConfig`, and every mistake becomes one
`ConfigError` line naming the key. `ConfigError` is a `pulumi.RunError`, so the CLI
prints the line without a traceback.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

import pulumi

from components import addressing, instance_types

NAMESPACE = "hybrid-llm"

_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
_AZ = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d[a-z]$")
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d$")
_SCHEDULE = re.compile(r"^(rate\(\d+ (minute|minutes|hour|hours|day|days)\)|cron\(.+\))$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MODEL = re.compile(r"^[a-z0-9][a-z0-9._/-]*(:[A-Za-z0-9._-]+)?$")
_PRICE = re.compile(r"^\d+(\.\d+)?$")


class ConfigError(pulumi.RunError):
    """A user mistake in stack configuration: one line, no traceback."""


@dataclass(frozen=True)
class StackConfig:
    """Every setting of a stack, typed. Built only by `load_config`."""

    project: str
    stack: str
    region: str
    aws_profile: Optional[str]
    """`aws:profile`: the explicit AWS provider and the spot guard use it (an explicit
    provider does not read the stack's `aws:` settings by itself)."""
    vpc_cidr: ipaddress.IPv4Network
    availability_zone: Optional[str]
    nebula_cidr: ipaddress.IPv4Network
    nebula_port: int
    homelab_nodes: tuple[str, ...]
    nebula_ca_validity_hours: int
    nebula_cert_validity_hours: int
    nebula_early_renewal_hours: int
    lighthouse_instance_type: str
    lighthouse_disable_api_termination: bool
    gpu_instance_type: str
    gpu_spot: bool
    gpu_spot_max_price: Optional[str]
    gpu_ami_id: Optional[str]
    lighthouse_ami_id: Optional[str]
    gpu_workers: int
    gpu_root_volume_gib: int
    model_volume_gib: int
    protect_model_volume: bool
    gpu_cluster_pod_cidr: ipaddress.IPv4Network
    gpu_cluster_service_cidr: ipaddress.IPv4Network
    models: tuple[str, ...]
    homelab_kubeconfig: Optional[pulumi.Output[str]]
    homelab_pod_cidr: Optional[ipaddress.IPv4Network]
    homelab_service_cidr: Optional[ipaddress.IPv4Network]
    idle_minutes: int
    scaler_schedule: str
    max_run_hours: int
    gpu_hibernate: bool
    budget_monthly_usd: int
    budget_emails: tuple[str, ...]

    @property
    def mesh(self) -> addressing.MeshAddressPlan:
        """Overlay addresses of every host, derived from `nebulaCidr`."""
        return addressing.MeshAddressPlan(self.nebula_cidr)

    @property
    def resource_prefix(self) -> str:
        """Prefix for names AWS sees (roles, parameters, functions): unique per stack."""
        return f"{self.project}-{self.stack}"


# --- value parsers: each takes the raw string and the key, returns a typed value ---


def _fail(key: str, problem: str) -> ConfigError:
    return ConfigError(f"{NAMESPACE}:{key}: {problem}")


def _string(raw: str, key: str) -> str:
    return raw


def _optional_string(raw: str, key: str) -> Optional[str]:
    return raw.strip() or None


def _integer(raw: str, key: str) -> int:
    try:
        return int(str(raw).strip())
    except ValueError:
        raise _fail(key, f"expected a whole number, got {raw!r}") from None


def _positive(raw: str, key: str) -> int:
    value = _integer(raw, key)
    if value <= 0:
        raise _fail(key, f"must be greater than 0, got {value}")
    return value


def _non_negative(raw: str, key: str) -> int:
    value = _integer(raw, key)
    if value < 0:
        raise _fail(key, f"must be 0 (off) or more, got {value}")
    return value


def _boolean(raw: str, key: str) -> bool:
    text = str(raw).strip().lower()
    if text in ("true", "false"):
        return text == "true"
    raise _fail(key, f"expected true or false, got {raw!r}")


def _cidr(raw: str, key: str) -> ipaddress.IPv4Network:
    try:
        network = ipaddress.ip_network(str(raw).strip(), strict=True)
    except ValueError as err:
        raise _fail(key, f"not a valid IPv4 CIDR ({err})") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise _fail(key, f"must be an IPv4 CIDR, got {raw!r}")
    return network


def _optional_cidr(raw: str, key: str) -> Optional[ipaddress.IPv4Network]:
    return _cidr(raw, key) if str(raw).strip() else None


def _string_list(raw: str, key: str) -> tuple[str, ...]:
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        raise _fail(key, f"expected a JSON array of strings, got {raw!r}") from None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _fail(key, f"expected an array of strings, got {raw!r}")
    return tuple(value)


def _instance_type(raw: str, key: str) -> str:
    problem = instance_types.problem_with(raw)
    if problem:
        raise _fail(key, problem)
    return raw


def _gpu_instance_type(raw: str, key: str) -> str:
    _instance_type(raw, key)
    problem = instance_types.gpu_problem_with(raw)
    if problem:
        raise _fail(key, problem)
    return raw


def _availability_zone(raw: str, key: str) -> Optional[str]:
    value = raw.strip()
    if value and not _AZ.match(value):
        raise _fail(key, f"not an availability zone name like us-east-1a, got {raw!r}")
    return value or None


def _node_names(raw: str, key: str) -> tuple[str, ...]:
    names = _string_list(raw, key)
    if not names:
        raise _fail(key, "needs at least one homelab node")
    for name in names:
        if not _K8S_NAME.match(name):
            raise _fail(key, f"{name!r} is not a DNS label (lower case, digits, '-')")
    reserved = [n for n in names if n == "lighthouse" or re.match(r"^gpu-\d+$", n)]
    if reserved:
        raise _fail(key, f"{reserved[0]!r} is reserved for an AWS host; rename the node")
    if len(set(names)) != len(names):
        raise _fail(key, "names must be unique (each node gets its own certificate)")
    return names


def _models(raw: str, key: str) -> tuple[str, ...]:
    models = _string_list(raw, key)
    for model in models:
        if not _MODEL.match(model):
            raise _fail(key, f"{model!r} is not an Ollama model name like llama3.2:3b")
    return models


def _schedule(raw: str, key: str) -> str:
    if not _SCHEDULE.match(raw.strip()):
        raise _fail(key, f"expected an EventBridge schedule like rate(1 minute), got {raw!r}")
    return raw.strip()


def _spot_price(raw: str, key: str) -> Optional[str]:
    value = raw.strip()
    if value and (not _PRICE.match(value) or float(value) <= 0):
        raise _fail(key, f"expected a price in USD per hour like 0.25, got {raw!r}")
    return value or None


def _ami(raw: str, key: str) -> Optional[str]:
    value = raw.strip()
    if value and not re.match(r"^ami-[0-9a-f]{8,17}$", value):
        raise _fail(key, f"expected an AMI id like ami-0123456789abcdef0, got {raw!r}")
    return value or None


def _emails(raw: str, key: str) -> tuple[str, ...]:
    emails = _string_list(raw, key)
    for email in emails:
        if not _EMAIL.match(email):
            raise _fail(key, f"{email!r} is not an e-mail address")
    return emails


@dataclass(frozen=True)
class _Key:
    attr: str
    parse: Callable[[Any, str], Any]
    secret: bool = False


# The Pulumi.yaml `config:` block declares the same keys with their defaults and
# descriptions; a test keeps the two in step.
KEYS: dict[str, _Key] = {
    "vpcCidr": _Key("vpc_cidr", _cidr),
    "availabilityZone": _Key("availability_zone", _availability_zone),
    "nebulaCidr": _Key("nebula_cidr", _cidr),
    "nebulaPort": _Key("nebula_port", _positive),
    "homelabNodes": _Key("homelab_nodes", _node_names),
    "nebulaCaValidityHours": _Key("nebula_ca_validity_hours", _positive),
    "nebulaCertValidityHours": _Key("nebula_cert_validity_hours", _positive),
    "nebulaEarlyRenewalHours": _Key("nebula_early_renewal_hours", _non_negative),
    "lighthouseInstanceType": _Key("lighthouse_instance_type", _instance_type),
    "lighthouseDisableApiTermination": _Key("lighthouse_disable_api_termination", _boolean),
    "gpuInstanceType": _Key("gpu_instance_type", _gpu_instance_type),
    "gpuSpot": _Key("gpu_spot", _boolean),
    "gpuSpotMaxPrice": _Key("gpu_spot_max_price", _spot_price),
    "gpuAmiId": _Key("gpu_ami_id", _ami),
    "lighthouseAmiId": _Key("lighthouse_ami_id", _ami),
    "gpuWorkers": _Key("gpu_workers", _positive),
    "gpuRootVolumeGiB": _Key("gpu_root_volume_gib", _positive),
    "modelVolumeGiB": _Key("model_volume_gib", _positive),
    "protectModelVolume": _Key("protect_model_volume", _boolean),
    "gpuClusterPodCidr": _Key("gpu_cluster_pod_cidr", _cidr),
    "gpuClusterServiceCidr": _Key("gpu_cluster_service_cidr", _cidr),
    "models": _Key("models", _models),
    "homelabKubeconfig": _Key("homelab_kubeconfig", _string, secret=True),
    "homelabPodCidr": _Key("homelab_pod_cidr", _optional_cidr),
    "homelabServiceCidr": _Key("homelab_service_cidr", _optional_cidr),
    "idleMinutes": _Key("idle_minutes", _positive),
    "scalerSchedule": _Key("scaler_schedule", _schedule),
    "maxRunHours": _Key("max_run_hours", _non_negative),
    "gpuHibernate": _Key("gpu_hibernate", _boolean),
    "budgetMonthlyUsd": _Key("budget_monthly_usd", _non_negative),
    "budgetEmails": _Key("budget_emails", _emails),
}

# Keys that may be absent (no default in Pulumi.yaml).
OPTIONAL_KEYS = frozenset({"homelabKubeconfig"})


def parse(raw: Mapping[str, Any], *, project: str, stack: str) -> StackConfig:
    """Turn raw config (full keys like `hybrid-llm:vpcCidr` and `aws:region`) into a
    validated `StackConfig`, or raise one `ConfigError`."""
    prefix = f"{NAMESPACE}:"
    unknown = sorted(k for k in raw if k.startswith(prefix) and k[len(prefix):] not in KEYS)
    if unknown:
        guess = difflib.get_close_matches(unknown[0][len(prefix):], KEYS, n=1)
        hint = f"did you mean {prefix}{guess[0]}?" if guess else "see the config block of Pulumi.yaml"
        raise ConfigError(f"{unknown[0]}: unknown key ({hint})")

    region = raw.get("aws:region")
    if not region:
        raise ConfigError("aws:region: not set (pulumi config set aws:region us-east-1)")
    if not _REGION.match(str(region)):
        raise ConfigError(f"aws:region: not a region name like us-east-1, got {region!r}")

    values: dict[str, Any] = {}
    for key, spec in KEYS.items():
        full = prefix + key
        if full not in raw or raw[full] is None:
            if key in OPTIONAL_KEYS:
                values[spec.attr] = None
                continue
            raise ConfigError(f"{full}: not set and Pulumi.yaml declares no default")
        value = spec.parse(raw[full], key)
        if spec.secret:
            value = pulumi.Output.secret(value)
        values[spec.attr] = value

    profile = raw.get("aws:profile") or None
    config = StackConfig(project=project, stack=stack, region=str(region),
                         aws_profile=str(profile) if profile else None, **values)
    _check_relations(config)
    return config


def _check_relations(cfg: StackConfig) -> None:
    """Rules that involve more than one key."""
    if not 16 <= cfg.vpc_cidr.prefixlen <= 28:
        raise _fail("vpcCidr", f"AWS allows a VPC from /16 to /28, got /{cfg.vpc_cidr.prefixlen}")
    if cfg.nebula_port > 65535:
        raise _fail("nebulaPort", f"must be a UDP port (1-65535), got {cfg.nebula_port}")

    ranges = [
        ("vpcCidr", cfg.vpc_cidr),
        ("nebulaCidr", cfg.nebula_cidr),
        ("gpuClusterPodCidr", cfg.gpu_cluster_pod_cidr),
        ("gpuClusterServiceCidr", cfg.gpu_cluster_service_cidr),
        ("homelabPodCidr", cfg.homelab_pod_cidr),
        ("homelabServiceCidr", cfg.homelab_service_cidr),
    ]
    given = [(k, r) for k, r in ranges if r is not None]
    for i, (key_a, range_a) in enumerate(given):
        for key_b, range_b in given[i + 1:]:
            if range_a.overlaps(range_b):
                raise _fail(key_b, f"{range_b} overlaps {NAMESPACE}:{key_a} ({range_a})")

    problem = addressing.capacity_problem(
        cfg.nebula_cidr, homelab_nodes=len(cfg.homelab_nodes), gpu_workers=cfg.gpu_workers
    )
    if problem:
        key, text = problem
        raise _fail(key, text)

    if cfg.nebula_cert_validity_hours >= cfg.nebula_ca_validity_hours:
        raise _fail(
            "nebulaCertValidityHours",
            f"{cfg.nebula_cert_validity_hours}h must be shorter than "
            f"{NAMESPACE}:nebulaCaValidityHours ({cfg.nebula_ca_validity_hours}h)",
        )
    if cfg.nebula_early_renewal_hours >= cfg.nebula_cert_validity_hours:
        raise _fail(
            "nebulaEarlyRenewalHours",
            f"{cfg.nebula_early_renewal_hours}h must be shorter than "
            f"{NAMESPACE}:nebulaCertValidityHours ({cfg.nebula_cert_validity_hours}h)",
        )
    if cfg.gpu_hibernate and not instance_types.can_hibernate(cfg.gpu_instance_type):
        raise _fail("gpuHibernate", f"{cfg.gpu_instance_type} cannot hibernate (AWS lists no GPU "
                                    "family for hibernation); leave it false and the scaler stops it")
    if cfg.gpu_spot_max_price and not cfg.gpu_spot:
        raise _fail("gpuSpotMaxPrice", "is set but hybrid-llm:gpuSpot is false")
    if cfg.budget_emails and not cfg.budget_monthly_usd:
        raise _fail("budgetEmails", "is set but hybrid-llm:budgetMonthlyUsd is 0 (no budget)")
    if cfg.budget_monthly_usd and not cfg.budget_emails:
        raise _fail("budgetMonthlyUsd", "a budget needs hybrid-llm:budgetEmails to alert")


def _raw_from_runtime() -> dict[str, Any]:
    """Every config value the Pulumi engine gave this program, by full key."""
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    return raw


def load_config() -> StackConfig:
    """Read this stack's configuration from the Pulumi runtime, once."""
    return parse(_raw_from_runtime(), project=pulumi.get_project(), stack=pulumi.get_stack())
