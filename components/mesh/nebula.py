"""The Nebula mesh: one CA, a certificate and a config per host, and for each AWS
host its files in SSM Parameter Store, which the host reads at every start.

Every host has its own certificate and address (a shared certificate once gave
every homelab node the same overlay IP). The host key goes only to a SecureString
parameter below the host's own SSM prefix, so an instance role can be allowed
exactly its own; homelab keys are exposed as secret outputs for the clusters
component to put into a Kubernetes Secret.

A GPU worker's certificate carries its k3s pod range (`Host.pod_cidr`) as an
unsafe network, and the homelab config routes each range via its worker: that is
the whole packet path between the clusters (DESIGN decision 8). The homelab
config names no node, so all homelab nodes but a lighthouse share it
(`homelab_config_yaml`, one ConfigMap key) and differ only in certificate and key
(`host_files`, a Secret per node); a homelab lighthouse has a config of its own
(`host_files[node].config_yaml`). `homelab_snat_script` source-NATs their pods'
traffic into the mesh.

Which hosts are lighthouses is `Host.lighthouse` (components/inventory.py);
`lighthouse_endpoints` says where each is found, an Elastic IP's output or a
user's `host:port`, so a config is rendered once every address is known.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Mapping, Optional

import pulumi
import pulumi_aws as aws

from components.mesh import nebula_config, snat
from components.addressing import MeshAddressPlan
from components.config import ConfigError, NAMESPACE
from components.generated import publish
from components.inventory import Host
from components.mesh.nebula_pki import NebulaCertificateAuthority, NebulaHostCertificate

# Parameter names below `{prefix}/nebula/`; the boot unit fetches exactly these.
FILES = ("ca.crt", "host.crt", "host.key", "config.yml")


@dataclass
class NebulaMeshArgs:
    hosts: list[Host]
    network: ipaddress.IPv4Network           # nebulaCidr: every certificate carries its prefix
    port: int
    lighthouse_endpoints: Mapping[str, pulumi.Input[str]]
    """Each lighthouse host's public `addr:port` (what hosts outside the home dial)."""
    ssm_prefixes: dict[str, str]              # AWS host name -> inventory.ssm_prefix(cfg, host)
    ca_validity_hours: int
    cert_validity_hours: int
    early_renewal_hours: int
    ca_name: Optional[str] = None             # default: the component's name
    lan_endpoints: Mapping[str, str] = field(default_factory=dict)
    """A homelab lighthouse's LAN `addr:port`, which the other homelab nodes dial."""


@dataclass
class NebulaHostFiles:
    """What one host needs in /etc/nebula (key_pem is a secret)."""

    ca_pem: pulumi.Output[str]
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]
    config_yaml: pulumi.Output[str]


def _check_hosts(args: NebulaMeshArgs) -> list[Host]:
    """The lighthouses; fails on hosts that would share a name or an address."""
    names = [h.name for h in args.hosts]
    ips = [h.overlay_ip for h in args.hosts]
    if len(set(names)) != len(names):
        raise ConfigError(f"{NAMESPACE}:homelabNodes: two mesh hosts are named the same ({names})")
    if len(set(ips)) != len(ips):
        raise ConfigError(f"{NAMESPACE}:nebulaCidr: two mesh hosts got the same overlay address")
    lighthouses = [h for h in args.hosts if h.lighthouse]
    if not lighthouses:
        raise ValueError("NebulaMesh: no host is a lighthouse")
    if sorted(args.lighthouse_endpoints) != sorted(h.name for h in lighthouses):
        raise ValueError(f"NebulaMesh: endpoints given for {sorted(args.lighthouse_endpoints)}, "
                         f"lighthouses are {[h.name for h in lighthouses]}")
    stray = [name for name in args.lan_endpoints
             if name not in args.lighthouse_endpoints or next(h for h in lighthouses if h.name == name).on_aws]
    if stray:
        raise ValueError(f"NebulaMesh: LAN endpoints only for homelab lighthouses, not {stray}")
    outside = [h.name for h in args.hosts if h.overlay_ip not in args.network]
    if outside:
        raise ConfigError(f"{NAMESPACE}:nebulaCidr: {args.network} does not hold host(s) {outside}")
    missing = [h.name for h in args.hosts if h.on_aws and h.name not in args.ssm_prefixes]
    if missing:
        raise ValueError(f"NebulaMesh: no SSM prefix for AWS host(s) {missing}")
    _check_pod_ranges(args)
    return lighthouses


def _check_pod_ranges(args: NebulaMeshArgs) -> None:
    """Pod ranges only behind GPU workers, apart from each other and from the mesh
    (Nebula refuses an unsafe route inside its own network)."""
    stray = [h.name for h in args.hosts if h.pod_cidr is not None and h.role != "gpu"]
    if stray:
        raise ValueError(f"NebulaMesh: only GPU workers route a pod range, not {stray}")
    ranges = [(h.name, h.pod_cidr) for h in args.hosts if h.pod_cidr is not None]
    for i, (name, pod_range) in enumerate(ranges):
        if pod_range.overlaps(args.network):
            raise ConfigError(f"{NAMESPACE}:gpuClusterPodCidr: {name}'s pod range {pod_range} overlaps "
                              f"{NAMESPACE}:nebulaCidr ({args.network})")
        for other, other_range in ranges[i + 1:]:
            if pod_range.overlaps(other_range):
                raise ConfigError(f"{NAMESPACE}:gpuClusterPodCidr: {name} and {other} share pod addresses "
                                  f"({pod_range}, {other_range})")


class NebulaMesh(pulumi.ComponentResource):
    """CA, host certificates, per-host configs and the AWS hosts' SSM parameters."""

    ca_cert_pem: pulumi.Output[str]
    host_files: dict[str, NebulaHostFiles]
    parameters: dict[str, list[aws.ssm.Parameter]]
    overlay_ips: dict[str, str]
    pod_ranges: dict[str, str]                # GPU worker name -> its k3s pod range
    homelab_config_yaml: Optional[pulumi.Output[str]]
    """The config.yml of every homelab node that is not a lighthouse (None: no such node)."""
    homelab_snat_script: str                  # run on each homelab node before Nebula
    lighthouse_endpoints: dict[str, pulumi.Output[str]]
    """Lighthouse name -> the public `addr:port` the others dial."""

    def __init__(self, name: str, args: NebulaMeshArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:NebulaMesh", name, None, opts)
        lighthouse_hosts = _check_hosts(args)
        child = pulumi.ResourceOptions(parent=self)
        plan = MeshAddressPlan(args.network)

        ca = NebulaCertificateAuthority(
            f"{name}-ca", ca_name=args.ca_name or name, validity_period_hours=args.ca_validity_hours,
            early_renewal_hours=args.early_renewal_hours, opts=child,
        )
        addresses = pulumi.Output.all(**dict(args.lighthouse_endpoints)).apply(
            lambda public: [nebula_config.LighthouseAddress(h.overlay_ip, public[h.name], args.lan_endpoints.get(h.name))
                            for h in lighthouse_hosts])

        workers = [h for h in args.hosts if h.role == "gpu"]
        self.lighthouse_endpoints = {name: pulumi.Output.from_input(value)
                                     for name, value in args.lighthouse_endpoints.items()}
        self.ca_cert_pem = ca.cert_pem
        self.host_files = {}
        self.parameters = {}
        self.overlay_ips = {}
        self.pod_ranges = {h.name: str(h.pod_cidr) for h in workers if h.pod_cidr is not None}
        plain_homelab = [h for h in args.hosts if h.role == "homelab" and not h.lighthouse]
        self.homelab_config_yaml = addresses.apply(
            lambda found: nebula_config.render(nebula_config.homelab_config(found, args.port, workers, plain_homelab[0]))
        ) if plain_homelab else None
        self.homelab_snat_script = snat.snat_script(args.network)
        for host in args.hosts:
            cert = NebulaHostCertificate(
                f"{name}-{host.name}", ca=ca, host_name=host.name, ip=plan.with_prefix(host.overlay_ip),
                groups=list(host.groups), subnets=[str(host.pod_cidr)] if host.pod_cidr else [],
                validity_period_hours=args.cert_validity_hours,
                early_renewal_hours=args.early_renewal_hours, opts=child,
            )
            if host.role == "homelab" and not host.lighthouse:
                config_yaml = self.homelab_config_yaml
            else:
                config_yaml = addresses.apply(
                    lambda found, h=host: nebula_config.render(nebula_config.node_config(h, found, args.port, workers))
                )
            files = NebulaHostFiles(ca_pem=ca.cert_pem, cert_pem=cert.cert_pem,
                                    key_pem=cert.private_key_pem, config_yaml=config_yaml)
            self.host_files[host.name] = files
            self.overlay_ips[host.name] = str(host.overlay_ip)
            contents = dict(zip(FILES, (files.ca_pem, files.cert_pem, files.key_pem, files.config_yaml)))
            for file_name, content in contents.items():
                publish(f"nebula/{host.name}/{file_name}", content)
            if host.on_aws:
                self.parameters[host.name] = self._parameters(name, host, args.ssm_prefixes[host.name], contents)

        self.register_outputs({
            "ca_cert_pem": self.ca_cert_pem,
            "overlay_ips": self.overlay_ips,
            "pod_ranges": self.pod_ranges,
            "homelab_config_yaml": self.homelab_config_yaml,
            "lighthouse_endpoints": self.lighthouse_endpoints,
        })

    def _parameters(self, name: str, host: Host, prefix: str,
                    contents: dict[str, pulumi.Output[str]]) -> list[aws.ssm.Parameter]:
        """`{prefix}/nebula/<file>`; the key as a SecureString, the rest as String.
        (pulumi-aws keeps every parameter `value` secret in state and previews.)"""
        out = []
        for file_name, content in contents.items():
            out.append(aws.ssm.Parameter(
                f"{name}-{host.name}-{file_name.replace('.', '-')}",
                name=f"{prefix}/nebula/{file_name}",
                type="SecureString" if file_name == "host.key" else "String",
                value=content,
                description=f"Nebula {file_name} of {host.name}",
                opts=pulumi.ResourceOptions(parent=self),
            ))
        return out

