"""Pulumi mocks that answer like AWS would: ids in AWS's formats, ARNs, private
addresses inside the subnet's CIDR, public addresses, availability zones.

Values are derived from the resource's name (a hash), so two runs of the same
program give the same ids and rendered files can be compared. Public addresses
come from the documentation ranges (198.51.100.0/24, 203.0.113.0/24).
"""

from __future__ import annotations

import base64
import binascii
import gzip
import hashlib
import ipaddress
from typing import Any, Callable, Optional

import pulumi
from pulumi.runtime import rpc

from tools import tls_mocks

ACCOUNT_ID = "123456789012"


def _hex(seed: str, length: int = 17) -> str:
    return hashlib.sha256(seed.encode()).hexdigest()[:length]


def _unwrap(value: Any) -> Any:
    """Inputs arrive with secrets wrapped; resource state holds plain values."""
    if rpc.is_rpc_secret(value):
        return _unwrap(rpc.unwrap_rpc_secret(value))
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unwrap(v) for v in value]
    return value


class AwsMocks(pulumi.runtime.Mocks):
    """Realistic answers for the resources and invokes this program uses.

    An invoke it does not know raises, so a new data source gets a realistic
    answer here instead of silently returning nothing.
    """

    def __init__(self, region: str = "us-east-1"):
        self.region = region
        self._subnets: dict[str, ipaddress.IPv4Network] = {}
        self._subnet_az: dict[str, str] = {}
        self._next_host: dict[str, int] = {}
        self._public_ips = 0
        # Root snapshot size of AMIs looked up by id: the Deep Learning AMI's
        # (components/aws/disks.py DLAMI_ROOT_SNAPSHOT_GIB says where 75 comes from).
        self.ami_root_gib = 75
        # (instance type, AZ) pairs EC2 does not offer; us-east-1e lacks the newer families.
        self.unoffered: set[tuple[str, str]] = set()
        self.invokes: list[tuple[str, dict]] = []     # (token, args) of every invoke, in order
        self.custom_state: dict[str, Callable[[pulumi.runtime.MockResourceArgs, dict], None]] = {}

    # --- helpers ---------------------------------------------------------------

    def arn(self, service: str, resource: str, *, region: Optional[str] = None, account: str = ACCOUNT_ID) -> str:
        region = self.region if region is None else region
        return f"arn:aws:{service}:{region}:{account}:{resource}"

    def _public_ip(self) -> str:
        self._public_ips += 1
        block = ("198.51.100", "203.0.113")[(self._public_ips - 1) // 250 % 2]
        return f"{block}.{(self._public_ips - 1) % 250 + 4}"

    def _private_ip(self, subnet_id: Optional[str]) -> str:
        network = self._subnets.get(subnet_id or "", ipaddress.ip_network("10.0.0.0/24"))
        key = str(network)
        self._next_host[key] = self._next_host.get(key, 9) + 1
        return str(network.network_address + self._next_host[key])

    # --- resources -------------------------------------------------------------

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[Optional[str], dict]:
        state = _unwrap(dict(args.inputs))
        name, typ = args.name, args.typ
        handler = _RESOURCES.get(typ)
        if handler is not None:
            resource_id = handler(self, name, state)
        elif typ.startswith("pulumi:providers:"):
            resource_id = f"{name}-provider-{_hex(name, 8)}"
        elif not args.custom:
            resource_id = None
        else:
            resource_id = f"{name}-{_hex(typ + name, 8)}"
        if typ in self.custom_state:
            self.custom_state[typ](args, state)
        return resource_id, state

    # --- invokes ---------------------------------------------------------------

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, Optional[list]]:
        handler = _INVOKES.get(args.token)
        if handler is None:
            raise NotImplementedError(f"tools/mocks.py has no answer for invoke {args.token}")
        arguments = _unwrap(dict(args.args))
        self.invokes.append((args.token, arguments))
        return handler(self, arguments), []


# --- per-type answers: each fills realistic state and returns the id ----------------


def _vpc(m: AwsMocks, name: str, s: dict) -> str:
    rid = f"vpc-{_hex(name)}"
    s.update(arn=m.arn("ec2", f"vpc/{rid}"), ownerId=ACCOUNT_ID,
             defaultSecurityGroupId=f"sg-{_hex(name + 'default')}",
             mainRouteTableId=f"rtb-{_hex(name + 'main')}")
    return rid


def _subnet(m: AwsMocks, name: str, s: dict) -> str:
    rid = f"subnet-{_hex(name)}"
    m._subnets[rid] = ipaddress.ip_network(s.get("cidrBlock", "10.0.0.0/24"))
    az = s.get("availabilityZone") or f"{m.region}a"
    m._subnet_az[rid] = az
    s.update(arn=m.arn("ec2", f"subnet/{rid}"), availabilityZone=az,
             availabilityZoneId=f"use1-az{ord(az[-1]) - 96}", ownerId=ACCOUNT_ID)
    return rid


def _security_group(m: AwsMocks, name: str, s: dict) -> str:
    rid = f"sg-{_hex(name)}"
    s.update(arn=m.arn("ec2", f"security-group/{rid}"), ownerId=ACCOUNT_ID,
             name=s.get("name") or f"{name}-{_hex(name, 7)}")
    return rid


def _sg_rule(m: AwsMocks, name: str, s: dict) -> str:
    rid = f"sgr-{_hex(name)}"
    s.update(arn=m.arn("ec2", f"security-group-rule/{rid}"), securityGroupRuleId=rid)
    return rid


def _prefixed(prefix: str, service: str, kind: str) -> Callable[[AwsMocks, str, dict], str]:
    def handler(m: AwsMocks, name: str, s: dict) -> str:
        rid = f"{prefix}-{_hex(name)}"
        s.setdefault("arn", m.arn(service, f"{kind}/{rid}"))
        return rid
    return handler


def _instance(m: AwsMocks, name: str, s: dict) -> str:
    rid = f"i-{_hex(name)}"
    subnet = s.get("subnetId")
    private_ip = s.get("privateIp") or m._private_ip(subnet)
    s.update(arn=m.arn("ec2", f"instance/{rid}"), instanceState="running",
             privateIp=private_ip, privateDns=f"ip-{private_ip.replace('.', '-')}.ec2.internal",
             primaryNetworkInterfaceId=f"eni-{_hex(name)}",
             availabilityZone=m._subnet_az.get(subnet or "", s.get("availabilityZone") or f"{m.region}a"))
    if s.get("associatePublicIpAddress", True):
        s["publicIp"] = m._public_ip()
    if s.get("instanceMarketOptions", {}).get("marketType") == "spot":
        s["spotInstanceRequestId"] = f"sir-{_hex(name, 8)}"
    return rid


def _eip(m: AwsMocks, name: str, s: dict) -> str:
    rid = f"eipalloc-{_hex(name)}"
    s.update(allocationId=rid, publicIp=m._public_ip(), domain="vpc",
             arn=m.arn("ec2", f"elastic-ip/{rid}"))
    return rid


def _launch_template(m: AwsMocks, name: str, s: dict) -> str:
    rid = f"lt-{_hex(name)}"
    s.update(arn=m.arn("ec2", f"launch-template/{rid}"), latestVersion=1, defaultVersion=1,
             name=s.get("name") or f"{name}-{_hex(name, 7)}")
    return rid


def _volume(m: AwsMocks, name: str, s: dict) -> str:
    rid = f"vol-{_hex(name)}"
    s.update(arn=m.arn("ec2", f"volume/{rid}"))
    return rid


def _named_global(service: str, kind: str) -> Callable[[AwsMocks, str, dict], str]:
    """IAM-like resources: global ARN, physical name auto-suffixed like Pulumi's autonaming."""
    def handler(m: AwsMocks, name: str, s: dict) -> str:
        physical = s.get("name") or f"{name}-{_hex(name, 7)}"
        path = s.get("path", "/")
        s.update(name=physical, arn=f"arn:aws:{service}::{ACCOUNT_ID}:{kind}{path}{physical}",
                 uniqueId=f"AROA{_hex(name, 17).upper()}")
        return physical
    return handler


def _role_policy(m: AwsMocks, name: str, s: dict) -> str:
    physical = s.get("name") or f"{name}-{_hex(name, 7)}"
    s["name"] = physical
    return f"{s.get('role', 'role')}:{physical}"


def _user_policy(m: AwsMocks, name: str, s: dict) -> str:
    physical = s.get("name") or f"{name}-{_hex(name, 7)}"
    s["name"] = physical
    return f"{s.get('user', 'user')}:{physical}"


def _access_key(m: AwsMocks, name: str, s: dict) -> str:
    """An access key id in AWS's form and a secret of AWS's length (40)."""
    key_id = "AKIA" + _hex(name, 16).upper()
    s.update(secret=_hex("secret" + name, 40), status="Active", createDate="2026-11-01T00:00:00Z")
    return key_id


def _ssm_parameter(m: AwsMocks, name: str, s: dict) -> str:
    param = s.get("name") or f"{name}-{_hex(name, 7)}"
    s.update(name=param, version=1,
             arn=m.arn("ssm", f"parameter{param if param.startswith('/') else '/' + param}"))
    return param


def _regional_named(service: str, kind: str, sep: str = ":") -> Callable[[AwsMocks, str, dict], str]:
    def handler(m: AwsMocks, name: str, s: dict) -> str:
        physical = s.get("name") or f"{name}-{_hex(name, 7)}"
        s.update(name=physical, arn=m.arn(service, f"{kind}{sep}{physical}"))
        return physical
    return handler


def _lambda_function(m: AwsMocks, name: str, s: dict) -> str:
    physical = s.get("name") or f"{name}-{_hex(name, 7)}"
    arn = m.arn("lambda", f"function:{physical}")
    s.update(name=physical, arn=arn, qualifiedArn=f"{arn}:$LATEST", version="$LATEST",
             invokeArn=f"arn:aws:apigateway:{m.region}:lambda:path/2015-03-31/functions/{arn}/invocations")
    return physical


def _dynamic(m: AwsMocks, name: str, s: dict) -> str:
    """A Python dynamic resource (the Nebula PKI): run its provider's real `create`."""
    import dill
    from pulumi.dynamic.dynamic import PROVIDER_KEY

    provider = dill.loads(base64.b64decode(s[PROVIDER_KEY]))
    result = provider.create({k: v for k, v in s.items() if k != PROVIDER_KEY})
    s.update(result.outs or {})
    return result.id


_RESOURCES: dict[str, Callable[[AwsMocks, str, dict], str]] = {
    "aws:ec2/vpc:Vpc": _vpc,
    "aws:ec2/subnet:Subnet": _subnet,
    "aws:ec2/securityGroup:SecurityGroup": _security_group,
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": _security_group,
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": _sg_rule,
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": _sg_rule,
    "aws:ec2/internetGateway:InternetGateway": _prefixed("igw", "ec2", "internet-gateway"),
    "aws:ec2/routeTable:RouteTable": _prefixed("rtb", "ec2", "route-table"),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _prefixed("rtbassoc", "ec2", "route-table-association"),
    "aws:ec2/instance:Instance": _instance,
    "aws:ec2/eip:Eip": _eip,
    "aws:ec2/eipAssociation:EipAssociation": _prefixed("eipassoc", "ec2", "eip-association"),
    "aws:ec2/launchTemplate:LaunchTemplate": _launch_template,
    "aws:ebs/volume:Volume": _volume,
    "aws:ec2/volumeAttachment:VolumeAttachment": _prefixed("vai", "ec2", "volume-attachment"),
    "aws:iam/role:Role": _named_global("iam", "role"),
    "aws:iam/policy:Policy": _named_global("iam", "policy"),
    "aws:iam/instanceProfile:InstanceProfile": _named_global("iam", "instance-profile"),
    "aws:iam/rolePolicy:RolePolicy": _role_policy,
    "aws:iam/user:User": _named_global("iam", "user"),
    "aws:iam/userPolicy:UserPolicy": _user_policy,
    "aws:iam/accessKey:AccessKey": _access_key,
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": _prefixed("rpa", "iam", "role-policy-attachment"),
    "aws:ssm/parameter:Parameter": _ssm_parameter,
    "aws:cloudwatch/logGroup:LogGroup": _regional_named("logs", "log-group"),
    "aws:cloudwatch/eventRule:EventRule": _regional_named("events", "rule", "/"),
    "aws:cloudwatch/metricAlarm:MetricAlarm": _regional_named("cloudwatch", "alarm"),
    "aws:lambda/function:Function": _lambda_function,
    "aws:budgets/budget:Budget": _named_global("budgets", "budget"),
}
# pulumi-tls answers with real keys and certificates.
_RESOURCES.update(tls_mocks.RESOURCES)
_RESOURCES["pulumi-python:dynamic:Resource"] = _dynamic


# --- invokes -------------------------------------------------------------------


def _availability_zones(m: AwsMocks, args: dict) -> dict:
    letters = "abcdef"
    return {"names": [f"{m.region}{x}" for x in letters],
            "zoneIds": [f"use1-az{i + 1}" for i in range(len(letters))],
            "id": m.region, "groupNames": [m.region]}


def _ssm_get_parameter(m: AwsMocks, args: dict) -> dict:
    name = args["name"]
    value = f"ami-{_hex(name)}" if "/ami" in name or "ami-id" in name else f"value-of-{name}"
    return {"name": name, "value": value, "insecureValue": value, "type": "String",
            "version": 1, "arn": m.arn("ssm", f"parameter{name}", account="")}


def _caller_identity(m: AwsMocks, args: dict) -> dict:
    return {"accountId": ACCOUNT_ID, "arn": f"arn:aws:iam::{ACCOUNT_ID}:user/pulumi",
            "userId": "AIDAEXAMPLEUSERID0001", "id": ACCOUNT_ID}


def _partition(m: AwsMocks, args: dict) -> dict:
    return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws",
            "reverseDnsPrefix": "com.amazonaws"}


def _region(m: AwsMocks, args: dict) -> dict:
    return {"name": m.region, "region": m.region, "id": m.region,
            "endpoint": f"ec2.{m.region}.amazonaws.com", "description": m.region}


def _ami(m: AwsMocks, args: dict) -> dict:
    """An AMI looked up by id: the Ubuntu-based Deep Learning AMIs boot from /dev/sda1.
    Like DescribeImages, a filter finds a deprecated AMI only with include_deprecated."""
    image = next((f["values"][0] for f in args.get("filters", []) if f["name"] == "image-id"), f"ami-{_hex('ami')}")
    root = "/dev/sda1"
    return {"id": image, "imageId": image, "rootDeviceName": root, "rootDeviceType": "ebs",
            "architecture": "x86_64", "virtualizationType": "hvm", "state": "available",
            "blockDeviceMappings": [
                {"deviceName": root, "ebs": {"volume_size": str(m.ami_root_gib), "volume_type": "gp3",
                                             "snapshot_id": f"snap-{_hex(image)}", "encrypted": "false",
                                             "delete_on_termination": "true"},
                 "noDevice": "", "virtualName": ""}],
            "owners": args.get("owners") or [], "includeDeprecated": bool(args.get("includeDeprecated")),
            "arn": m.arn("ec2", f"image/{image}", account=""), "ownerId": "898082745236"}


# vCPUs, memory (MiB) and NVIDIA GPUs of the types tests use (EC2's figures).
INSTANCE_TYPES = {"g4dn.xlarge": (4, 16384, 1), "g4dn.12xlarge": (48, 196608, 4), "g5.xlarge": (4, 16384, 1),
                  "g6.xlarge": (4, 16384, 1), "g6e.xlarge": (4, 32768, 1), "p5.48xlarge": (192, 2097152, 8)}


def _instance_type(m: AwsMocks, args: dict) -> dict:
    vcpus, memory, gpus = INSTANCE_TYPES[args["instanceType"]]
    return {"id": args["instanceType"], "instanceType": args["instanceType"], "defaultVcpus": vcpus,
            "memorySize": memory,
            "gpuses": [{"count": gpus, "manufacturer": "NVIDIA", "memorySize": 16384, "name": "T4"}]}


def _instance_type_offerings(m: AwsMocks, args: dict) -> dict:
    """Offerings by AZ for the instance types in the `instance-type` filter."""
    wanted = next((f["values"] for f in args.get("filters", []) if f["name"] == "instance-type"), [])
    zones = _availability_zones(m, {})["names"]
    pairs = [(t, z) for z in zones for t in wanted if (t, z) not in m.unoffered]
    return {"id": m.region, "instanceTypes": [t for t, _ in pairs], "locations": [z for _, z in pairs],
            "locationTypes": ["availability-zone"] * len(pairs)}


_INVOKES: dict[str, Callable[[AwsMocks, dict], dict]] = {
    "aws:index/getAvailabilityZones:getAvailabilityZones": _availability_zones,
    "aws:ssm/getParameter:getParameter": _ssm_get_parameter,
    "aws:index/getCallerIdentity:getCallerIdentity": _caller_identity,
    "aws:index/getPartition:getPartition": _partition,
    "aws:index/getRegion:getRegion": _region,
    "aws:ec2/getAmi:getAmi": _ami,
    "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings": _instance_type_offerings,
    "aws:ec2/getInstanceType:getInstanceType": _instance_type,
}


GZIP_MAGIC = b"\x1f\x8b"


def decode_user_data(value: str) -> str:
    """User data as the instance's cloud-init reads it. Instances carry it plain;
    launch templates carry base64, of the text (the lighthouse style) or of a gzip
    stream (the GPU worker's, gpu_worker.encode_user_data), which is decompressed.
    A gzip stream that does not decompress raises: a reader must never be left
    looking at compressed bytes."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return value
    if raw.startswith(GZIP_MAGIC):
        return gzip.decompress(raw).decode()
    try:
        return raw.decode()
    except UnicodeDecodeError:
        return value
