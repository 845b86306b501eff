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

from components import addressing, instance_types, liqo_manifests

NAMESPACE = "hybrid-llm"

# Every pattern is applied with `fullmatch` and spells digits [0-9]: `re.match` with
# `$` also matches before a final newline, and `\d` takes any Unicode digit
# (full-width, Arabic-Indic), which Python's int() then reads as a number.
_K8S_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_AZ = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9][a-z]")
_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-[0-9]")
_RATE = re.compile(r"rate\((?P<value>[0-9]+) (?P<unit>minute|minutes|hour|hours|day|days)\)")
_CRON = re.compile(r"cron\((?P<fields>[^()]*)\)")
# One field of an EventBridge cron: digits, names (JAN, MON), and , - * ? / L W #.
_CRON_FIELD = re.compile(r"[0-9A-Za-z,\-*?/#]+")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
# Ollama's `[host[:port]/][namespace/]model[:tag]`, e.g. llama3.2:3b or
# hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M (case is kept in the path).
_MODEL = re.compile(r"([a-z0-9][a-z0-9.-]*(:[0-9]+)?/)?([A-Za-z0-9][A-Za-z0-9._-]*/)*"
                    r"[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9][A-Za-z0-9._-]*)?")
# A whole number as Pulumi writes one: ASCII digits, a '-' where a negative is
# worth reporting (`_positive` says "got -3"). No '+', '_', spaces or other digits.
_WHOLE = re.compile(r"-?[0-9]+")
# What float() and YAML take for not-a-number and infinity.
_NOT_FINITE = re.compile(r"[-+]?\.?(nan|inf|infinity)", re.IGNORECASE)
# Pulumi carries numbers to providers as float64: whole numbers beyond this lose digits.
MAX_WHOLE = 2 ** 53 - 1
_AMI = re.compile(r"ami-[0-9a-f]{8,17}")
_ACCOUNT_ID = re.compile(r"[0-9]{12}")
# AWS Budgets: "A notification can have one SNS subscriber and up to 10 email
# subscribers" (API reference, NotificationWithSubscribers); both notifications of
# components/aws/budget.py take every address.
BUDGET_MAX_EMAILS = 10
# EBS gp3: 1 GiB to 64 TiB (CreateVolume's current API reference; older pages say 16 TiB).
GP3_MAX_GIB = 65536
# `aws:` keys this program reads; its explicit AWS provider sees nothing else.
AWS_KEYS = ("region", "allowedAccountIds")
# Refused, with why: an explicit provider keeps its inputs in the state and
# `pulumi destroy` reuses them, and a recorded profile that is missing on the
# machine running the destroy fails it (aws-sdk-go-base#135), even with
# credentials in the environment.
_PROFILE_REFUSED = ("aws:profile: not stored in the stack (a profile kept in its state breaks `pulumi destroy` "
                    "anywhere that profile does not exist); remove it (`pulumi config rm aws:profile`) and "
                    "`export AWS_PROFILE=<name>` before running pulumi")
# Namespaces a stack file may use: this project, the AWS keys above, Pulumi's own.
_NAMESPACES = (NAMESPACE, "aws", "pulumi")
_PRICE = re.compile(r"[0-9]+(\.[0-9]+)?")
# Where the Nebula lighthouse runs (docs: README "Where the lighthouse lives").
PLACEMENTS = ("workers", "ec2", "homelab")
# A DNS name as `static_host_map` takes it: labels of letters, digits and '-', at
# least two of them (a bare name would resolve only on the home network).
_DNS_NAME = re.compile(r"(?=.{1,253}\Z)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+"
                       r"[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.?")
# Carrier-grade NAT (RFC 6598): an address there is the ISP's, not reachable from AWS.
_SHARED_ADDRESS_SPACE = ipaddress.IPv4Network("100.64.0.0/10")


class ConfigError(pulumi.RunError):
    """A user mistake in stack configuration: one line, no traceback."""


@dataclass(frozen=True)
class StackConfig:
    """Every setting of a stack, typed. Built only by `load_config`."""

    project: str
    stack: str
    region: str
    aws_allowed_account_ids: tuple[str, ...]
    """`aws:allowedAccountIds`: the provider refuses any other account."""
    vpc_cidr: ipaddress.IPv4Network
    availability_zone: Optional[str]
    nebula_cidr: ipaddress.IPv4Network
    nebula_port: int
    homelab_nodes: tuple[str, ...]
    lighthouse_placement: str
    """`workers`, `ec2` or `homelab`: which hosts are Nebula lighthouses."""
    homelab_lighthouse_node: Optional[str]
    """With placement `homelab`: the node that is the lighthouse (None: the first)."""
    homelab_lighthouse_endpoint: Optional[str]
    """With placement `homelab`: `host:port` the workers dial (the router's forward)."""
    homelab_lighthouse_lan_ip: Optional[ipaddress.IPv4Address]
    """With placement `homelab`: that node's LAN address, which the other homelab nodes dial."""
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
    homelab_cluster_id: str
    homelab_node_label: str
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
    def lighthouse_node(self) -> Optional[str]:
        """The homelab node that is the lighthouse, or None when it is not in the homelab."""
        if self.lighthouse_placement != "homelab":
            return None
        return self.homelab_lighthouse_node or self.homelab_nodes[0]

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
    text = str(raw).strip()
    if _NOT_FINITE.fullmatch(text):
        raise _fail(key, f"{raw!r} is not a number; expected a whole number like 10")
    if not _WHOLE.fullmatch(text):
        raise _fail(key, f"expected a whole number in the digits 0-9, got {raw!r}")
    digits = text.lstrip("-").lstrip("0")
    if len(digits) > len(str(MAX_WHOLE)) or abs(int(text)) > MAX_WHOLE:
        raise _fail(key, f"{text} is too large (Pulumi passes whole numbers up to {MAX_WHOLE} exactly)")
    return int(text)


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
    text = str(raw).strip()
    if text and "/" not in text:
        raise _fail(key, f"{text} has no prefix length; write the range as a CIDR like 10.0.0.0/16")
    try:
        network = ipaddress.ip_network(text, strict=True)
    except ValueError as err:
        raise _fail(key, f"not a valid IPv4 CIDR ({err})") from None
    if not isinstance(network, ipaddress.IPv4Network):
        raise _fail(key, f"must be an IPv4 CIDR, got {raw!r}")
    special = _special_use(network)
    if special:
        raise _fail(key, f"{network} is {special} space; use a private range such as 10.0.0.0/8")
    return network


def _special_use(network: ipaddress.IPv4Network) -> Optional[str]:
    """Why no host may be addressed from this range (RFC 6890), or None."""
    for kind, test in (("loopback", "is_loopback"), ("link-local", "is_link_local"),
                       ("multicast", "is_multicast"), ("reserved", "is_reserved"),
                       ("unspecified", "is_unspecified")):
        if getattr(network, test) or getattr(network.network_address, test):
            return kind
    if network.overlaps(ipaddress.IPv4Network("0.0.0.0/8")):
        return "\"this network\" (0.0.0.0/8)"
    return None


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
    problem = instance_types.problem_with(str(raw))
    if problem:
        raise _fail(key, problem)
    return raw


def _gpu_instance_type(raw: str, key: str) -> str:
    _instance_type(raw, key)
    problem = instance_types.gpu_problem_with(raw)
    if problem:
        raise _fail(key, problem)
    return raw


def _gp3_size(raw: str, key: str) -> int:
    value = _positive(raw, key)
    if value > GP3_MAX_GIB:
        raise _fail(key, f"{value} GiB is more than a gp3 volume can hold ({GP3_MAX_GIB} GiB)")
    return value


def _availability_zone(raw: str, key: str) -> Optional[str]:
    value = raw.strip()
    if value and not _AZ.fullmatch(value):
        raise _fail(key, f"not an availability zone name like us-east-1a, got {raw!r}")
    return value or None


def _dns_label_problem(name: str) -> Optional[str]:
    """Why `name` is no DNS label (RFC 1123, as Kubernetes names nodes), or None."""
    if len(name) > 63:
        return f"{name!r} is {len(name)} characters, longer than 63 (the most a DNS label holds)"
    if not _K8S_NAME.fullmatch(name):
        return f"{name!r} is not a DNS label (lower case, digits, '-')"
    return None


def _node_names(raw: str, key: str) -> tuple[str, ...]:
    names = _string_list(raw, key)
    if not names:
        raise _fail(key, "needs at least one homelab node")
    for name in names:
        problem = _dns_label_problem(name)
        if problem:
            raise _fail(key, problem)
    reserved = [n for n in names if n == "lighthouse" or re.fullmatch(r"gpu-[0-9]+", n)]
    if reserved:
        raise _fail(key, f"{reserved[0]!r} is reserved for an AWS host; rename the node")
    if len(set(names)) != len(names):
        raise _fail(key, "names must be unique (each node gets its own certificate)")
    return names


def _placement(raw: str, key: str) -> str:
    value = str(raw).strip()
    if value not in PLACEMENTS:
        raise _fail(key, f"expected one of {', '.join(PLACEMENTS)}, got {raw!r}")
    return value


def _optional_node_name(raw: str, key: str) -> Optional[str]:
    value = str(raw).strip()
    problem = _dns_label_problem(value) if value else None
    if problem:
        raise _fail(key, problem)
    return value or None


def _public_endpoint(raw: str, key: str) -> Optional[str]:
    """`host:port` the workers on AWS can dial: a public IPv4 address or a DNS
    name (Nebula resolves `static_host_map` names), and a UDP port."""
    value = str(raw).strip()
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    if not sep or not host or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        raise _fail(key, f"expected host:port like home.example.net:4242, got {raw!r}")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        long_label = next((label for label in host.rstrip(".").split(".") if len(label) > 63), None)
        if long_label:
            raise _fail(key, f"{long_label!r} is {len(long_label)} characters, longer than 63 "
                             "(the most a DNS label holds)") from None
        if len(host.rstrip(".")) > 253:
            raise _fail(key, f"the name is {len(host)} characters, longer than 253 (the most DNS takes)") from None
        if not _DNS_NAME.fullmatch(host):
            raise _fail(key, f"{host!r} is neither an IPv4 address nor a DNS name") from None
        return value
    if not isinstance(address, ipaddress.IPv4Address):
        raise _fail(key, f"{host} is IPv6; the workers dial the lighthouse over IPv4")
    if address in _SHARED_ADDRESS_SPACE:
        raise _fail(key, f"{host} is carrier-grade NAT space (100.64.0.0/10): AWS cannot reach it; "
                         "see the README on CGNAT, or use lighthousePlacement workers")
    if not address.is_global:
        raise _fail(key, f"{host} is not a public address: the workers on AWS cannot reach it")
    return value


def _optional_ipv4(raw: str, key: str) -> Optional[ipaddress.IPv4Address]:
    value = str(raw).strip()
    if not value:
        return None
    try:
        return ipaddress.IPv4Address(value)
    except ValueError:
        raise _fail(key, f"expected an IPv4 address like 192.168.1.20, got {raw!r}") from None


def _root_size(raw: str, key: str) -> int:
    """0: the AMI's own snapshot size; else a gp3 size."""
    value = _integer(raw, key)
    if value < 0:
        raise _fail(key, f"must be 0 (the AMI's own size) or a size in GiB, got {value}")
    return 0 if value == 0 else _gp3_size(raw, key)


def _models(raw: str, key: str) -> tuple[str, ...]:
    models = _string_list(raw, key)
    for model in models:
        if not _MODEL.fullmatch(model):
            raise _fail(key, f"{model!r} is not an Ollama model name like llama3.2:3b")
    return models


# EventBridge's cron fields, as "Cron expressions reference" in the EventBridge
# user guide (docs.aws.amazon.com/eventbridge/latest/userguide/eb-cron-expressions.html)
# lists them: minutes 0-59, hours 0-23, day-of-month 1-31, month 1-12 or JAN-DEC,
# day-of-week 1-7 or SUN-SAT, year 1970-2199. Every field takes `, - *`; `/` all but
# day-of-week; `?` only the two day fields, and exactly one of them (its
# Limitations: a value or `*` in one day field needs `?` in the other); `L` both
# day fields, `W` day-of-month, `#` day-of-week (then one expression only).
# (name, lowest, highest, names for lowest upwards, wildcards beyond `, - *`)
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_WEEKDAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_CRON_FIELDS = (
    ("minutes", 0, 59, (), "/"),
    ("hours", 0, 23, (), "/"),
    ("day-of-month", 1, 31, (), "?/LW"),
    ("month", 1, 12, _MONTHS, "/"),
    ("day-of-week", 1, 7, _WEEKDAYS, "?L#"),
    ("year", 1970, 2199, (), "/"),
)


def _cron_field_ok(text: str, field: tuple) -> bool:
    """Whether one cron field is one EventBridge takes (see _CRON_FIELDS)."""
    name, low, high, names, extra = field

    def value(item: str) -> bool:
        if re.fullmatch(r"[0-9]{1,4}", item):
            return low <= int(item) <= high
        return item.upper() in names

    if text == "?":
        return "?" in extra
    if "#" in text and "," in text:
        return False
    for item in text.split(","):
        if "L" in extra and (item == "L" or (name == "day-of-week" and item.endswith("L") and value(item[:-1]))):
            continue
        if "W" in extra and item.endswith("W") and value(item[:-1]):
            continue
        day, hash_, nth = item.partition("#")
        if hash_:
            if "#" in extra and value(day) and re.fullmatch(r"[1-5]", nth):
                continue
            return False
        base, slash, step = item.partition("/")
        if slash and ("/" not in extra or not re.fullmatch(r"[0-9]{1,4}", step) or int(step) < 1):
            return False
        if base == "*":
            continue
        start, dash, end = base.partition("-")
        if not value(start) or (dash and not value(end)):
            return False
    return True


def _cron_field_rule(field: tuple) -> str:
    name, low, high, names, extra = field
    values = f"{low}-{high}" + (f" or {names[0]}-{names[-1]}" if names else "")
    wildcards = " ".join([",", "-", "*", *extra])
    return f"{name} takes {values} and {wildcards}"


def _schedule(raw: str, key: str) -> str:
    """EventBridge's own rules: `rate(1 minute)`, `rate(5 minutes)` (singular only for
    1, at least 1), or a six-field `cron(...)` whose fields are in range (see
    _CRON_FIELDS), with `?` in exactly one of day-of-month and day-of-week."""
    text = raw.strip()
    rate, cron = _RATE.fullmatch(text), _CRON.fullmatch(text)
    if rate:
        value, unit = int(rate["value"]), rate["unit"]
        if value < 1:
            raise _fail(key, f"a rate must be at least 1, got {raw!r}")
        if (value == 1) != (not unit.endswith("s")):
            right = unit.rstrip("s") if value == 1 else unit.rstrip("s") + "s"
            raise _fail(key, f"EventBridge wants rate({value} {right}), got {raw!r}")
        return text
    if cron:
        fields = cron["fields"].split()
        if len(fields) != 6 or not all(_CRON_FIELD.fullmatch(f) for f in fields):
            raise _fail(key, "a cron expression has six fields (minutes hours day-of-month month "
                             f"day-of-week year), got {raw!r}")
        for field, spec in zip(fields, _CRON_FIELDS):
            if not _cron_field_ok(field, spec):
                raise _fail(key, f"cron {spec[0]} field {field!r} is not one EventBridge takes "
                                 f"({_cron_field_rule(spec)}), got {raw!r}")
        if (fields[2] == "?") == (fields[4] == "?"):
            raise _fail(key, "cron needs ? in exactly one of day-of-month and day-of-week "
                             f"(EventBridge's rule), got {raw!r}")
        return text
    raise _fail(key, f"expected an EventBridge schedule like rate(1 minute), got {raw!r}")


def schedule_minutes(expression: str) -> Optional[int]:
    """Minutes between runs of a `rate(...)` schedule; None for cron."""
    rate = _RATE.fullmatch(expression)
    if not rate:
        return None
    return int(rate["value"]) * {"minute": 1, "hour": 60, "day": 1440}[rate["unit"].rstrip("s")]


def _spot_price(raw: str, key: str) -> Optional[str]:
    value = raw.strip()
    if _NOT_FINITE.fullmatch(value):
        raise _fail(key, f"{raw!r} is not a number; expected a price in USD per hour like 0.25")
    if value and (not _PRICE.fullmatch(value) or float(value) <= 0):
        raise _fail(key, f"expected a price in USD per hour like 0.25, got {raw!r}")
    return value or None


def _ami(raw: str, key: str) -> Optional[str]:
    value = raw.strip()
    if value and not _AMI.fullmatch(value):
        raise _fail(key, f"expected an AMI id like ami-0123456789abcdef0, got {raw!r}")
    return value or None


def _cluster_id(raw: str, key: str) -> str:
    value = str(raw).strip()
    problem = _dns_label_problem(value)
    if problem:
        raise _fail(key, f"{problem}, as Liqo wants cluster ids")
    return value


_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")


def _label_key(raw: str, key: str) -> str:
    value = str(raw).strip()
    prefix, _, name = value.rpartition("/")
    if len(name) > 63:
        raise _fail(key, f"the name part {name!r} is {len(name)} characters, longer than 63 "
                         "(the most a Kubernetes label key's name holds)")
    if len(prefix) > 253:
        raise _fail(key, f"the prefix is {len(prefix)} characters, longer than 253 (the most a DNS name holds)")
    if not _LABEL_KEY.fullmatch(value):
        raise _fail(key, f"{raw!r} is not a Kubernetes label key like kubernetes.io/hostname")
    return value


def _emails(raw: str, key: str) -> tuple[str, ...]:
    emails = _string_list(raw, key)
    if len(emails) > BUDGET_MAX_EMAILS:
        raise _fail(key, f"{len(emails)} addresses, but an AWS Budgets notification takes at most "
                         f"{BUDGET_MAX_EMAILS} e-mail subscribers")
    for email in emails:
        if not _EMAIL.fullmatch(email):
            raise _fail(key, f"{email!r} is not an e-mail address")
    return emails


@dataclass(frozen=True)
class _Key:
    attr: str
    parse: Callable[[Any, str], Any]
    secret: bool = False


# The Pulumi.yaml `config:` block declares the same keys with their defaults and
# descriptions (but for UNDECLARED_KEYS); a test keeps the two in step.
KEYS: dict[str, _Key] = {
    "vpcCidr": _Key("vpc_cidr", _cidr),
    "availabilityZone": _Key("availability_zone", _availability_zone),
    "nebulaCidr": _Key("nebula_cidr", _cidr),
    "nebulaPort": _Key("nebula_port", _positive),
    "homelabNodes": _Key("homelab_nodes", _node_names),
    "lighthousePlacement": _Key("lighthouse_placement", _placement),
    "homelabLighthouseNode": _Key("homelab_lighthouse_node", _optional_node_name),
    "homelabLighthouseEndpoint": _Key("homelab_lighthouse_endpoint", _public_endpoint),
    "homelabLighthouseLanIp": _Key("homelab_lighthouse_lan_ip", _optional_ipv4),
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
    "gpuRootVolumeGiB": _Key("gpu_root_volume_gib", _root_size),
    "modelVolumeGiB": _Key("model_volume_gib", _gp3_size),
    "protectModelVolume": _Key("protect_model_volume", _boolean),
    "gpuClusterPodCidr": _Key("gpu_cluster_pod_cidr", _cidr),
    "gpuClusterServiceCidr": _Key("gpu_cluster_service_cidr", _cidr),
    "models": _Key("models", _models),
    "homelabKubeconfig": _Key("homelab_kubeconfig", _string, secret=True),
    "homelabClusterId": _Key("homelab_cluster_id", _cluster_id),
    "homelabNodeLabel": _Key("homelab_node_label", _label_key),
    "homelabPodCidr": _Key("homelab_pod_cidr", _optional_cidr),
    "homelabServiceCidr": _Key("homelab_service_cidr", _optional_cidr),
    "idleMinutes": _Key("idle_minutes", _positive),
    "scalerSchedule": _Key("scaler_schedule", _schedule),
    "maxRunHours": _Key("max_run_hours", _non_negative),
    "gpuHibernate": _Key("gpu_hibernate", _boolean),
    "budgetMonthlyUsd": _Key("budget_monthly_usd", _non_negative),
    "budgetEmails": _Key("budget_emails", _emails),
}

# Optional keys Pulumi.yaml must not declare: a declared key without a default is
# required by the Pulumi CLI for every stack, and a `secret: true` key cannot take
# a plain default. So the secret kubeconfig is documented there in a comment, and
# the program itself insists that it is set as a secret.
UNDECLARED_KEYS = frozenset({"homelabKubeconfig"})


def _unknown_key_problem(raw: Mapping[str, Any]) -> Optional[str]:
    """A key that would be silently ignored: a misspelt key or namespace, or an
    `aws:` setting the explicit AWS provider never sees."""
    for full in sorted(raw):
        namespace, sep, key = str(full).partition(":")
        if not sep:
            return f"{full}: not a namespaced key (expected {NAMESPACE}:<key>)"
        if namespace == NAMESPACE:
            if key not in KEYS:
                guess = difflib.get_close_matches(key, KEYS, n=1)
                hint = f"did you mean {NAMESPACE}:{guess[0]}?" if guess else "see the config block of Pulumi.yaml"
                return f"{full}: unknown key ({hint})"
        elif namespace == "aws":
            if key == "profile":
                return _PROFILE_REFUSED
            if key not in AWS_KEYS:
                guess = difflib.get_close_matches(key, AWS_KEYS, n=1)
                hint = f"did you mean aws:{guess[0]}? " if guess else ""
                return (f"{full}: not used ({hint}this program builds its AWS provider from "
                        f"{', '.join('aws:' + k for k in AWS_KEYS)} only)")
        elif namespace not in _NAMESPACES:
            guess = difflib.get_close_matches(namespace, _NAMESPACES, n=1)
            hint = f"did you mean {guess[0]}:{key}?" if guess else f"this program reads {NAMESPACE}:, aws: and pulumi: keys"
            return f"{full}: unknown namespace {namespace!r} ({hint})"
    return None


def parse(raw: Mapping[str, Any], *, project: str, stack: str,
          secret_keys: frozenset[str] = frozenset()) -> StackConfig:
    """Turn raw config (full keys like `hybrid-llm:vpcCidr` and `aws:region`) into a
    validated `StackConfig`, or raise one `ConfigError`. `secret_keys` are the full
    keys the stack holds encrypted."""
    problem = _unknown_key_problem(raw)
    if problem:
        raise ConfigError(problem)
    prefix = f"{NAMESPACE}:"

    region = raw.get("aws:region")
    if not region:
        raise ConfigError("aws:region: not set (pulumi config set aws:region us-east-1)")
    if not _REGION.fullmatch(str(region)):
        raise ConfigError(f"aws:region: not a region name like us-east-1, got {region!r}")

    values: dict[str, Any] = {}
    for key, spec in KEYS.items():
        full = prefix + key
        if full not in raw or raw[full] is None or (key in UNDECLARED_KEYS and not str(raw[full]).strip()):
            if key in UNDECLARED_KEYS:
                values[spec.attr] = None
                continue
            raise ConfigError(f"{full}: not set and Pulumi.yaml declares no default")
        value = spec.parse(raw[full], key)
        if spec.secret:
            if full not in secret_keys:
                raise _fail(key, f"holds credentials: set it with `pulumi config set --secret {full} ...`")
            value = pulumi.Output.secret(value)
        values[spec.attr] = value

    config = StackConfig(project=project, stack=stack, region=str(region),
                         aws_allowed_account_ids=_account_ids(raw.get("aws:allowedAccountIds")),
                         **values)
    _check_relations(config)
    return config


def _account_ids(raw: Any) -> tuple[str, ...]:
    if raw is None or raw == "":
        return ()
    try:
        ids = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError:
        ids = None
    if not isinstance(ids, list) or not all(isinstance(i, str) and _ACCOUNT_ID.fullmatch(i) for i in ids):
        raise ConfigError(f"aws:allowedAccountIds: expected an array of 12-digit account ids, got {raw!r}")
    return tuple(ids)


def _check_relations(cfg: StackConfig) -> None:
    """Rules that involve more than one key."""
    if cfg.availability_zone and not re.fullmatch(re.escape(cfg.region) + r"[a-z]", cfg.availability_zone):
        raise _fail("availabilityZone", f"{cfg.availability_zone} is not a zone of aws:region "
                                        f"{cfg.region} (like {cfg.region}a)")
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
    ) or addressing.pod_range_problem(cfg.gpu_cluster_pod_cidr, cfg.gpu_workers)
    if problem:
        key, text = problem
        raise _fail(key, text)
    if cfg.homelab_kubeconfig is not None:
        for key, value in (("homelabPodCidr", cfg.homelab_pod_cidr), ("homelabServiceCidr", cfg.homelab_service_cidr)):
            if value is None:
                raise _fail(key, "is needed with hybrid-llm:homelabKubeconfig (Liqo's chart wants the homelab's "
                                 "ranges; Talos defaults are 10.244.0.0/16 and 10.96.0.0/12)")
    longest = liqo_manifests.worker_cluster_id(cfg.project, cfg.stack, f"gpu-{cfg.gpu_workers - 1}")
    if len(longest) > 63:
        raise ConfigError(f"stack name {cfg.stack!r}: worker cluster ids like {longest} must fit in 63 characters")
    if not _K8S_NAME.fullmatch(longest):
        suggestion = re.sub(r"[^a-z0-9-]+", "-", cfg.stack.lower()).strip("-") or "dev"
        raise ConfigError(f"stack name {cfg.stack!r}: worker cluster ids like {longest} must be DNS labels "
                          f"(lower case, digits, '-') as Liqo wants; use a stack name like {suggestion!r}")

    _check_placement(cfg)

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


def _check_placement(cfg: StackConfig) -> None:
    """The homelab lighthouse's keys: needed with placement `homelab`, refused without."""
    homelab_keys = {"homelabLighthouseNode": cfg.homelab_lighthouse_node,
                    "homelabLighthouseEndpoint": cfg.homelab_lighthouse_endpoint,
                    "homelabLighthouseLanIp": cfg.homelab_lighthouse_lan_ip}
    if cfg.lighthouse_placement != "homelab":
        for key, value in homelab_keys.items():
            if value is not None:
                raise _fail(key, f"is set but {NAMESPACE}:lighthousePlacement is {cfg.lighthouse_placement} "
                                 "(set it to homelab, or unset this key)")
        return
    node = cfg.homelab_lighthouse_node
    if node is not None and node not in cfg.homelab_nodes:
        raise _fail("homelabLighthouseNode", f"{node!r} is not one of {NAMESPACE}:homelabNodes "
                                             f"({', '.join(cfg.homelab_nodes)})")
    if cfg.homelab_lighthouse_endpoint is None:
        raise _fail("homelabLighthouseEndpoint", "is needed with lighthousePlacement homelab: the public "
                                                 "host:port your router forwards (UDP) to the lighthouse node")
    if len(cfg.homelab_nodes) > 1 and cfg.homelab_lighthouse_lan_ip is None:
        raise _fail("homelabLighthouseLanIp", "is needed with lighthousePlacement homelab and more than one "
                                              "homelab node: the other nodes dial the lighthouse node there")


def _raw_from_runtime() -> tuple[dict[str, Any], frozenset[str]]:
    """Every config value the Pulumi engine gave this program, by full key, and the
    keys it holds as secrets."""
    from pulumi.runtime import config as runtime_config

    raw: dict[str, Any] = dict(runtime_config.get_config_env())
    raw.update(runtime_config.CONFIG.get())
    from_env = set(runtime_config.get_config_secret_keys_env())
    secret = frozenset(k for k in raw if k in from_env or runtime_config.is_config_secret(k))
    return raw, secret


def load_config() -> StackConfig:
    """Read this stack's configuration from the Pulumi runtime, once."""
    raw, secret = _raw_from_runtime()
    return parse(raw, project=pulumi.get_project(), stack=pulumi.get_stack(), secret_keys=secret)
