"""The project's security and cost rules as pure functions of (type, props, name).

The policy pack (`__main__.py`) and pytest call the same functions, so the rules
are proven offline on the mocked program. Props use the engine's camelCase names.
Each check returns violation messages that start with the resource's name; an
empty list means the resource passes.

Decisions worth knowing:
- An instance launched from a launch template inherits its metadata options and
  root device from it, so the template is what gets checked.
- "Write" action: any action whose name does not start with Describe, Get or List.
  A write with a `*` resource passes only for actions AWS gives no resource type
  (`RESOURCE_LESS_WRITES`) and only when a Condition scopes the statement.
- Only Allow statements are judged; a Deny can only take rights away.
- Ingress open to the world is allowed only for UDP on the Nebula port, which
  comes from the pack's config (`nebulaPort`, default 4242).
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import gzip
import ipaddress
import json
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable

DEFAULT_NEBULA_PORT = 4242

INSTANCE = "aws:ec2/instance:Instance"
LAUNCH_TEMPLATE = "aws:ec2/launchTemplate:LaunchTemplate"
VOLUME = "aws:ebs/volume:Volume"
SG = "aws:ec2/securityGroup:SecurityGroup"
DEFAULT_SG = "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup"
SG_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
SG_INGRESS = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
ROLE = "aws:iam/role:Role"
ROLE_POLICY = "aws:iam/rolePolicy:RolePolicy"
POLICY = "aws:iam/policy:Policy"
USER_POLICY = "aws:iam/userPolicy:UserPolicy"
SPOT_REQUEST = "aws:ec2/spotInstanceRequest:SpotInstanceRequest"
NAT_GATEWAY = "aws:ec2/natGateway:NatGateway"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"

READ_PREFIXES = ("Describe", "Get", "List")
# Actions for which IAM defines no resource type: `*` is the only possible
# resource, so a Condition must scope them instead.
RESOURCE_LESS_WRITES = frozenset({"cloudwatch:putmetricdata"})
INSTANCE_ARN = re.compile(r"^arn:aws[a-z-]*:ec2:[a-z0-9-]+:\d{12}:instance/i-[0-9a-f]{8,17}$")
STOP_ACTION = "ec2:stopinstances"
START_ACTION = "ec2:startinstances"

_SECRET_PATTERNS = [
    ("a PEM private key", re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")),
    ("a Nebula private key", re.compile(r"-----BEGIN NEBULA [A-Z0-9]+ PRIVATE KEY-----")),
    ("a k3s token", re.compile(r"\bK10[0-9a-f]{64}::\S+")),
    ("a k3s token", re.compile(r"(K3S_TOKEN=|--token[= ]|\btoken:\s*)['\"]?(?![$'\"\s])\S{8,}")),
    ("an AWS access key id", re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")),
    ("an AWS secret access key",
     re.compile(r"(?i)aws_secret_access_key['\"]?\s*[=:]\s*['\"]?[A-Za-z0-9/+]{40}\b")),
]

Props = Mapping[str, Any]
Check = Callable[[str, Props, str, Mapping[str, Any]], list[str]]


@dataclass(frozen=True)
class Rule:
    name: str
    description: str
    types: frozenset[str]
    check: Check

    def __call__(self, resource_type: str, props: Props, name: str,
                 config: Mapping[str, Any] | None = None) -> list[str]:
        """Violations of this rule; a resource of another type never violates it."""
        if resource_type not in self.types:
            return []
        return self.check(resource_type, props, name, config or {})


# --- helpers --------------------------------------------------------------------


def _list(value: Any) -> list:
    if value is None:
        return []
    if isinstance(value, str) or isinstance(value, Mapping):
        return [value]
    if isinstance(value, Sequence):
        return list(value)
    return [value]


def _true(value: Any) -> bool:
    """Launch templates carry booleans as strings ("true")."""
    return value is True or (isinstance(value, str) and value.lower() == "true")


def _open_cidr(cidr: Any) -> bool:
    try:
        return ipaddress.ip_network(str(cidr), strict=False).prefixlen == 0
    except ValueError:
        return False


def _from_template(props: Props) -> bool:
    return bool(props.get("launchTemplate"))


# --- rules ----------------------------------------------------------------------


def _imdsv2(resource_type: str, props: Props, name: str, config: Mapping[str, Any]) -> list[str]:
    options = props.get("metadataOptions")
    if resource_type == INSTANCE and not options and _from_template(props):
        return []
    tokens = (options or {}).get("httpTokens")
    if tokens != "required":
        return [f"{name}: IMDSv2 not required (metadataOptions.httpTokens is {tokens!r}, must be 'required')"]
    return []


def _imds_hop_limit(resource_type: str, props: Props, name: str, config: Mapping[str, Any]) -> list[str]:
    """Hop limit 1: a container's packets take a second hop, so pods cannot reach
    the instance's role (which reads host keys). Unset is not enough: AMIs may
    default to 2 (Amazon Linux 2023 does)."""
    options = props.get("metadataOptions")
    if resource_type == INSTANCE and not options and _from_template(props):
        return []
    limit = (options or {}).get("httpPutResponseHopLimit")
    if limit is None or float(limit) != 1:
        return [f"{name}: metadataOptions.httpPutResponseHopLimit is {limit!r}, must be 1 (pods would reach "
                "the instance role)"]
    return []


def _encrypted(resource_type: str, props: Props, name: str, config: Mapping[str, Any]) -> list[str]:
    out = []
    if resource_type == VOLUME:
        if not _true(props.get("encrypted")):
            out.append(f"{name}: EBS volume is not encrypted")
    elif resource_type == INSTANCE:
        root = props.get("rootBlockDevice")
        if not (root is None and _from_template(props)) and not _true((root or {}).get("encrypted")):
            out.append(f"{name}: root block device is not encrypted (rootBlockDevice.encrypted)")
        for device in _list(props.get("ebsBlockDevices")):
            if not _true(device.get("encrypted")):
                out.append(f"{name}: EBS block device {device.get('deviceName')} is not encrypted")
    elif resource_type == LAUNCH_TEMPLATE:
        mappings = [m for m in _list(props.get("blockDeviceMappings")) if not m.get("virtualName")]
        if not mappings:
            out.append(f"{name}: no blockDeviceMappings, so the root device is not declared encrypted")
        for mapping in mappings:
            if not _true((mapping.get("ebs") or {}).get("encrypted")):
                out.append(f"{name}: block device {mapping.get('deviceName')} is not encrypted "
                           "(blockDeviceMappings[].ebs.encrypted)")
    return out


def _nebula_only(protocol: Any, from_port: Any, to_port: Any, port: int) -> bool:
    return str(protocol).lower() in ("udp", "17") and from_port == port and to_port == port


def _open_ingress(resource_type: str, props: Props, name: str, config: Mapping[str, Any]) -> list[str]:
    port = int(config.get("nebulaPort", DEFAULT_NEBULA_PORT))
    if resource_type == SG_INGRESS:
        rules = [(props.get("ipProtocol"), props.get("fromPort"), props.get("toPort"),
                  _list(props.get("cidrIpv4")) + _list(props.get("cidrIpv6")))]
    elif resource_type == SG_RULE:
        if props.get("type") != "ingress":
            return []
        rules = [(props.get("protocol"), props.get("fromPort"), props.get("toPort"),
                  _list(props.get("cidrBlocks")) + _list(props.get("ipv6CidrBlocks")))]
    else:
        rules = [(r.get("protocol"), r.get("fromPort"), r.get("toPort"),
                  _list(r.get("cidrBlocks")) + _list(r.get("ipv6CidrBlocks")))
                 for r in _list(props.get("ingress"))]
    out = []
    for protocol, from_port, to_port, cidrs in rules:
        world = [c for c in cidrs if _open_cidr(c)]
        if world and not _nebula_only(protocol, from_port, to_port, port):
            out.append(f"{name}: ingress {protocol} {from_port}-{to_port} open to {', '.join(world)} "
                       f"(only UDP {port}, Nebula, may be)")
    return out


def _documents(resource_type: str, props: Props) -> list[Any]:
    if resource_type == ROLE:
        return [p.get("policy") for p in _list(props.get("inlinePolicies"))]
    return [props.get("policy")]


def _allow_statements(document: Any) -> list[Mapping]:
    if isinstance(document, str):
        try:
            document = json.loads(document)
        except json.JSONDecodeError:
            return [{"__invalid__": True}]
    if not isinstance(document, Mapping):
        return []
    return [s for s in _list(document.get("Statement")) if s.get("Effect") == "Allow"]


def _is_read(action: str) -> bool:
    return action.partition(":")[2].startswith(READ_PREFIXES)


def _iam_least_privilege(resource_type: str, props: Props, name: str, config: Mapping[str, Any]) -> list[str]:
    out = []
    for document in _documents(resource_type, props):
        for index, statement in enumerate(_allow_statements(document)):
            where = f"{name}: statement {statement.get('Sid') or index}"
            if statement.get("__invalid__"):
                out.append(f"{name}: policy document is not valid JSON")
                continue
            if "NotAction" in statement or "NotResource" in statement:
                out.append(f"{where}: Allow with NotAction/NotResource grants everything else")
            actions = [str(a) for a in _list(statement.get("Action"))]
            resources = [str(r) for r in _list(statement.get("Resource"))]
            for action in actions:
                if "*" in action:
                    out.append(f"{where}: wildcard action {action!r}")
                elif "*" in resources and not _is_read(action):
                    exempt = action.lower() in RESOURCE_LESS_WRITES and statement.get("Condition")
                    if not exempt:
                        out.append(f"{where}: write action {action} on resource '*'")
    return out


def _stop_scoped(resource_type: str, props: Props, name: str, config: Mapping[str, Any]) -> list[str]:
    out = []
    for document in _documents(resource_type, props):
        for index, statement in enumerate(_allow_statements(document)):
            actions = [str(a).lower() for a in _list(statement.get("Action"))]
            scoped = [act for act in (STOP_ACTION, START_ACTION) if any(fnmatch.fnmatchcase(act, a) for a in actions)]
            if not scoped:
                continue
            resources = [str(r) for r in _list(statement.get("Resource"))]
            bad = [r for r in resources if not INSTANCE_ARN.match(r)]
            if bad or not resources:
                out.append(f"{name}: statement {statement.get('Sid') or index}: ec2:StopInstances and "
                           f"ec2:StartInstances must name instance ARNs, got {', '.join(bad) or 'no Resource'}")
    return out


def _user_data_texts(resource_type: str, props: Props) -> list[str | None]:
    """Every reading of the user data to scan; None for one that cannot be read
    (a gzip stream that does not decompress), which the rule reports."""
    texts: list[str | None] = []
    raw = props.get("userData")
    if isinstance(raw, str) and raw:
        texts.append(raw)
        if resource_type == LAUNCH_TEMPLATE:
            texts.append(_decode(raw))
    encoded = props.get("userDataBase64")
    if isinstance(encoded, str) and encoded:
        texts.append(_decode(encoded))
    return texts


_GZIP_MAGIC = b"\x1f\x8b"


def _decode(value: str) -> str | None:
    """Base64 user data as cloud-init reads it: gzip is decompressed first
    (cloud-init's `convert_string` does the same), so a compressed secret is
    still found. "" when it is not base64 (then the raw text is what is scanned)."""
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return ""
    if data.startswith(_GZIP_MAGIC):
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error):
            return None
    return data.decode("utf-8", "replace")


def _no_secrets_in_user_data(resource_type: str, props: Props, name: str, config: Mapping[str, Any]) -> list[str]:
    found = []
    for text in _user_data_texts(resource_type, props):
        if text is None:
            unreadable = "gzip data that does not decompress, so it cannot be checked for secrets"
            if unreadable not in found:
                found.append(unreadable)
            continue
        for what, pattern in _SECRET_PATTERNS:
            if pattern.search(text) and what not in found:
                found.append(what)
    return [f"{name}: user data contains {what}" for what in found]


def _spot_stops(resource_type: str, props: Props, name: str, config: Mapping[str, Any]) -> list[str]:
    if resource_type == SPOT_REQUEST:
        kind, behaviour = props.get("spotType"), props.get("instanceInterruptionBehavior")
    else:
        market = props.get("instanceMarketOptions") or {}
        if market.get("marketType") != "spot":
            return []
        spot = market.get("spotOptions") or {}
        kind, behaviour = spot.get("spotInstanceType"), spot.get("instanceInterruptionBehavior")
    if kind != "persistent" or behaviour not in ("stop", "hibernate"):
        return [f"{name}: spot must be persistent with interruption behaviour stop or hibernate "
                f"(got {kind!r}, {behaviour!r}): a one-time or terminating spot instance loses the worker"]
    return []


def _no_nat(resource_type: str, props: Props, name: str, config: Mapping[str, Any]) -> list[str]:
    return [f"{name}: NAT gateway (~$32/month while idle); instances use public addresses instead"]


def _log_retention(resource_type: str, props: Props, name: str, config: Mapping[str, Any]) -> list[str]:
    days = props.get("retentionInDays")
    if isinstance(days, bool) or not isinstance(days, (int, float)) or days <= 0:
        return [f"{name}: log group has no retention (retentionInDays {days!r}); logs would be kept forever"]
    return []


_IAM = frozenset({ROLE_POLICY, POLICY, ROLE, USER_POLICY})
RULES: list[Rule] = [
    Rule("imdsv2-required", "Instances and launch templates require IMDSv2 session tokens.",
         frozenset({INSTANCE, LAUNCH_TEMPLATE}), _imdsv2),
    Rule("imds-hop-limit-1", "Instances and launch templates keep instance metadata from containers (hop limit 1).",
         frozenset({INSTANCE, LAUNCH_TEMPLATE}), _imds_hop_limit),
    Rule("ebs-encrypted", "Every EBS volume and root device is encrypted.",
         frozenset({VOLUME, INSTANCE, LAUNCH_TEMPLATE}), _encrypted),
    Rule("no-open-ingress", "No security-group ingress from 0.0.0.0/0 or ::/0 except Nebula's UDP port.",
         frozenset({SG_INGRESS, SG, DEFAULT_SG, SG_RULE}), _open_ingress),
    Rule("iam-least-privilege", "No IAM Allow with a wildcard action, or a write action on resource '*'.",
         _IAM, _iam_least_privilege),
    Rule("stop-scoped-to-instances", "ec2:StopInstances and ec2:StartInstances are allowed only on named instance ARNs.",
         _IAM, _stop_scoped),
    Rule("no-secrets-in-user-data", "User data carries no private key, token or AWS secret.",
         frozenset({INSTANCE, LAUNCH_TEMPLATE}), _no_secrets_in_user_data),
    Rule("spot-persistent-stop", "Spot workers are persistent requests that stop or hibernate.",
         frozenset({LAUNCH_TEMPLATE, INSTANCE, SPOT_REQUEST}), _spot_stops),
    Rule("no-nat-gateway", "No NAT gateway: it costs more than the idle stack.",
         frozenset({NAT_GATEWAY}), _no_nat),
    Rule("log-group-retention", "Every log group has a retention period.",
         frozenset({LOG_GROUP}), _log_retention),
]

GUARDED_TYPES = frozenset().union(*(rule.types for rule in RULES))


def violations(resource_type: str, props: Props, name: str,
               config: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, list[str]]:
    """Every rule's violations for one resource, by rule name (rules that pass omitted);
    `config` is per rule name, as the pack receives it."""
    out = {}
    for rule in RULES:
        found = rule(resource_type, props, name, (config or {}).get(rule.name))
        if found:
            out[rule.name] = found
    return out
