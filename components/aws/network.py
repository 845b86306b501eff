"""The AWS network: one VPC, a public subnet in the worker's AZ, an internet gateway,
the security groups of the GPU workers (and of an EC2 lighthouse, when there is
one), and an Elastic IP for each AWS host that is a Nebula lighthouse.

A lighthouse's address belongs to the stack, not to an instance: the others'
`static_host_map` names it, so it is allocated here, before any instance, and an
instance only associates it. A stopped or replaced instance leaves it in place
(docs/lifecycle.md, "Elastic IPs").

There is no NAT gateway (about $32 a month while idle): instances sit in the public
subnet with a public address and accept nothing from the internet except Nebula's
UDP port. Administration is through SSM Session Manager, so there is no SSH rule.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Optional, Sequence

import pulumi
import pulumi_aws as aws

from components.config import NAMESPACE, ConfigError

ANYWHERE = "0.0.0.0/0"
# Nebula peers behind NAT answer from whatever port their NAT maps, so hole punching
# sends to unprivileged UDP ports anywhere.
_EPHEMERAL_UDP = (1024, 65535)


@dataclass
class NetworkArgs:
    vpc_cidr: ipaddress.IPv4Network
    nebula_port: int
    availability_zone: Optional[str] = None
    """None picks the first available AZ that offers every type in `instance_types`."""
    instance_types: Mapping[str, str] = field(default_factory=dict)
    """Config key -> instance type that must run in the subnet's AZ."""
    public_hosts: Sequence[str] = ()
    """AWS hosts that are lighthouses: each gets a stack-owned Elastic IP."""
    ec2_lighthouse: bool = False
    """Whether an EC2 lighthouse runs (it gets a security group of its own)."""
    lighthouse_udp_ports: Sequence[int] = ()
    """UDP ports the workers dial a lighthouse outside AWS on (a homelab's forward),
    when outside the ephemeral range their egress already allows."""


@dataclass(frozen=True)
class _Rule:
    description: str
    protocol: str
    from_port: int
    to_port: int
    cidr: str = ANYWHERE


class Network(pulumi.ComponentResource):
    """VPC, public subnet, routing and the two security groups."""

    vpc_id: pulumi.Output[str]
    subnet_id: pulumi.Output[str]
    availability_zone: pulumi.Output[str]
    lighthouse_security_group_id: Optional[pulumi.Output[str]]
    """None without an EC2 lighthouse."""
    eip_allocation_ids: dict[str, pulumi.Output[str]]
    public_ips: dict[str, pulumi.Output[str]]
    """Host name -> its Elastic IP, for every host in `public_hosts`."""
    worker_security_group_id: pulumi.Output[str]
    internet_route: Sequence[pulumi.Resource]
    """What an instance must wait for to reach the internet at its first boot."""

    def __init__(self, name: str, args: NetworkArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)

        az = self._zone(args)

        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=str(args.vpc_cidr),
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={"Name": f"{name}-vpc"},
            opts=child,
        )
        # The default security group lets members talk freely; adopt it with no rules.
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg", vpc_id=vpc.id, tags={"Name": f"{name}-default-closed"}, opts=child
        )
        gateway = aws.ec2.InternetGateway(
            f"{name}-igw", vpc_id=vpc.id, tags={"Name": f"{name}-igw"}, opts=child
        )
        subnet = aws.ec2.Subnet(
            f"{name}-public",
            vpc_id=vpc.id,
            cidr_block=str(next(args.vpc_cidr.subnets(new_prefix=max(args.vpc_cidr.prefixlen, 24)))),
            availability_zone=az,
            # Each instance asks for its public address explicitly.
            map_public_ip_on_launch=False,
            tags={"Name": f"{name}-public"},
            # The same CIDR cannot exist twice in the VPC, so a new subnet (a changed
            # AZ) can only come after the old one is gone. An AZ the program chose is
            # held: a change in which zones offer the types must not move the stack.
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True,
                                        ignore_changes=[] if args.availability_zone else ["availabilityZone"]),
        )
        routes = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=vpc.id,
            routes=[aws.ec2.RouteTableRouteArgs(cidr_block=ANYWHERE, gateway_id=gateway.id)],
            tags={"Name": f"{name}-public-rt"},
            opts=child,
        )
        association = aws.ec2.RouteTableAssociation(
            f"{name}-public-rta", subnet_id=subnet.id, route_table_id=routes.id, opts=child
        )

        # Named after the host (`<name>-lighthouse-eip` as before for the EC2
        # lighthouse), so an address stays as long as its host is a lighthouse.
        eips = {
            host: aws.ec2.Eip(
                f"{name}-{host}-eip", domain="vpc", tags={"Name": f"{name}-{host}", "NebulaHost": host},
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]))
            for host in args.public_hosts
        }

        nebula_in = _Rule("Nebula handshakes and tunnels from any peer", "udp", args.nebula_port, args.nebula_port)
        nebula_out = _Rule("Nebula to peers at their NAT-mapped ports", "udp", *_EPHEMERAL_UDP)
        https_out = _Rule("HTTPS: SSM, CloudWatch, package and release downloads", "tcp", 443, 443)
        http_out = _Rule("HTTP: Ubuntu apt mirrors (signed packages)", "tcp", 80, 80)

        lighthouse_sg = self._security_group(
            f"{name}-lighthouse", vpc.id, "Nebula lighthouse: Nebula UDP in, nothing else",
            ingress=[nebula_in], egress=[nebula_out, https_out],
        ) if args.ec2_lighthouse else None
        to_home = [_Rule("Nebula to the homelab lighthouse's forwarded port", "udp", port, port)
                   for port in sorted(set(args.lighthouse_udp_ports)) if not _EPHEMERAL_UDP[0] <= port <= _EPHEMERAL_UDP[1]]
        worker_sg = self._security_group(
            f"{name}-worker", vpc.id, "GPU worker: Nebula UDP in, no SSH (SSM Session Manager)",
            ingress=[nebula_in], egress=[nebula_out, https_out, http_out, *to_home],
        )

        self.internet_route = [association, routes]
        self.vpc_id = vpc.id
        self.subnet_id = subnet.id
        self.availability_zone = subnet.availability_zone
        self.lighthouse_security_group_id = lighthouse_sg.id if lighthouse_sg else None
        self.worker_security_group_id = worker_sg.id
        self.eip_allocation_ids = {host: eip.allocation_id for host, eip in eips.items()}
        self.public_ips = {host: eip.public_ip for host, eip in eips.items()}
        self.register_outputs({
            "eip_allocation_ids": self.eip_allocation_ids,
            "public_ips": self.public_ips,
            "vpc_id": self.vpc_id,
            "subnet_id": self.subnet_id,
            "availability_zone": self.availability_zone,
            "lighthouse_security_group_id": self.lighthouse_security_group_id,
            "worker_security_group_id": self.worker_security_group_id,
        })

    def _zone(self, args: NetworkArgs) -> pulumi.Output[str]:
        """The subnet's AZ: the one asked for, checked to offer every instance type,
        or else the first available AZ that offers them all (EC2 offers a type in
        some zones of a region only, and a zone that lacks it fails at launch)."""
        opts = pulumi.InvokeOutputOptions(parent=self)
        wanted = dict(args.instance_types)
        zones = aws.get_availability_zones_output(state="available", opts=opts).names
        if not wanted:
            return pulumi.Output.from_input(args.availability_zone) if args.availability_zone else zones[0]
        offers = aws.ec2.get_instance_type_offerings_output(
            location_type="availability-zone",
            filters=[aws.ec2.GetInstanceTypeOfferingsFilterArgs(name="instance-type", values=sorted(set(wanted.values())))],
            opts=opts)
        return pulumi.Output.all(zones, offers.instance_types, offers.locations).apply(
            lambda v: pick_zone(args.availability_zone, wanted, v[0], list(zip(v[1], v[2]))))

    def _security_group(
        self, name: str, vpc_id: pulumi.Input[str], description: str,
        ingress: list[_Rule], egress: list[_Rule],
    ) -> aws.ec2.SecurityGroup:
        """A security group whose every rule is its own resource with a description."""
        group = aws.ec2.SecurityGroup(
            f"{name}-sg", vpc_id=vpc_id, description=description,
            tags={"Name": f"{name}-sg"}, opts=pulumi.ResourceOptions(parent=self),
        )
        rule_opts = pulumi.ResourceOptions(parent=group)
        for rule in ingress:
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-in-{rule.protocol}-{rule.from_port}",
                security_group_id=group.id, description=rule.description,
                ip_protocol=rule.protocol, from_port=rule.from_port, to_port=rule.to_port,
                cidr_ipv4=rule.cidr, opts=rule_opts,
            )
        for rule in egress:
            aws.vpc.SecurityGroupEgressRule(
                f"{name}-out-{rule.protocol}-{rule.from_port}",
                security_group_id=group.id, description=rule.description,
                ip_protocol=rule.protocol, from_port=rule.from_port, to_port=rule.to_port,
                cidr_ipv4=rule.cidr, opts=rule_opts,
            )
        return group


def pick_zone(asked: Optional[str], wanted: Mapping[str, str], available: Sequence[str],
              offerings: Sequence[tuple[str, str]]) -> str:
    """`asked` if it offers every wanted type, else the first available zone that
    does; a `ConfigError` naming the key otherwise."""
    offered: dict[str, set[str]] = {}
    for instance_type, zone in offerings:
        offered.setdefault(zone, set()).add(instance_type)
    if asked:
        for key, instance_type in wanted.items():
            if instance_type not in offered.get(asked, set()):
                elsewhere = sorted(z for z, types in offered.items() if instance_type in types)
                raise ConfigError(f"{NAMESPACE}:availabilityZone: {asked} does not offer {instance_type} "
                                  f"({NAMESPACE}:{key}); zones that do: {', '.join(elsewhere) or 'none'}")
        return asked
    fitting = [z for z in available if all(t in offered.get(z, set()) for t in wanted.values())]
    if not fitting:
        key, instance_type = next(iter(wanted.items()))
        raise ConfigError(f"{NAMESPACE}:{key}: no available zone offers all of "
                          f"{', '.join(sorted(set(wanted.values())))} together")
    return fitting[0]
