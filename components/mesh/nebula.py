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
config names no node, so all homelab nodes share it (`homelab_config_yaml`, one
ConfigMap) and differ only in certificate and key (`host_files`, a Secret per
node); `homelab_snat_script` source-NATs their pods' traffic into the mesh.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Optional

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
    lighthouse_public_ip: pulumi.Input[str]
    ssm_prefixes: dict[str, str]              # AWS host name -> inventory.ssm_prefix(cfg, host)
    ca_validity_hours: int
    cert_validity_hours: int
    early_renewal_hours: int
    ca_name: Optional[str] = None             # default: the component's name


@dataclass
class NebulaHostFiles:
    """What one host needs in /etc/nebula (key_pem is a secret)."""

    ca_pem: pulumi.Output[str]
    cert_pem: pulumi.Output[str]
    key_pem: pulumi.Output[str]
    config_yaml: pulumi.Output[str]


def _check_hosts(args: NebulaMeshArgs) -> Host:
    """The lighthouse; fails on hosts that would share a name or an address."""
    names = [h.name for h in args.hosts]
    ips = [h.overlay_ip for h in args.hosts]
    if len(set(names)) != len(names):
        raise ConfigError(f"{NAMESPACE}:homelabNodes: two mesh hosts are named the same ({names})")
    if len(set(ips)) != len(ips):
        raise ConfigError(f"{NAMESPACE}:nebulaCidr: two mesh hosts got the same overlay address")
    lighthouses = [h for h in args.hosts if h.role == "lighthouse"]
    if len(lighthouses) != 1:
        raise ConfigError(f"{NAMESPACE}:nebulaCidr: the mesh needs exactly one lighthouse, got {len(lighthouses)}")
    outside = [h.name for h in args.hosts if h.overlay_ip not in args.network]
    if outside:
        raise ConfigError(f"{NAMESPACE}:nebulaCidr: {args.network} does not hold host(s) {outside}")
    missing = [h.name for h in args.hosts if h.on_aws and h.name not in args.ssm_prefixes]
    if missing:
        raise ValueError(f"NebulaMesh: no SSM prefix for AWS host(s) {missing}")
    _check_pod_ranges(args)
    return lighthouses[0]


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
    homelab_config_yaml: pulumi.Output[str]   # the config.yml of every homelab node
    homelab_snat_script: str                  # run on each homelab node before Nebula

    def __init__(self, name: str, args: NebulaMeshArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("hybrid-llm:index:NebulaMesh", name, None, opts)
        lighthouse = _check_hosts(args)
        child = pulumi.ResourceOptions(parent=self)
        plan = MeshAddressPlan(args.network)

        ca = NebulaCertificateAuthority(
            f"{name}-ca", ca_name=args.ca_name or name, validity_period_hours=args.ca_validity_hours,
            early_renewal_hours=args.early_renewal_hours, opts=child,
        )
        endpoint = pulumi.Output.from_input(args.lighthouse_public_ip).apply(
            lambda ip: nebula_config.endpoint(ip, args.port)
        )

        workers = [h for h in args.hosts if h.role == "gpu"]
        self.ca_cert_pem = ca.cert_pem
        self.host_files = {}
        self.parameters = {}
        self.overlay_ips = {}
        self.pod_ranges = {h.name: str(h.pod_cidr) for h in workers if h.pod_cidr is not None}
        self.homelab_config_yaml = endpoint.apply(
            lambda ep: nebula_config.render(nebula_config.homelab_config(lighthouse, ep, args.port, workers))
        )
        self.homelab_snat_script = snat.snat_script(args.network)
        for host in args.hosts:
            cert = NebulaHostCertificate(
                f"{name}-{host.name}", ca=ca, host_name=host.name, ip=plan.with_prefix(host.overlay_ip),
                groups=list(host.groups), subnets=[str(host.pod_cidr)] if host.pod_cidr else [],
                validity_period_hours=args.cert_validity_hours,
                early_renewal_hours=args.early_renewal_hours, opts=child,
            )
            if host.role == "homelab":
                config_yaml = self.homelab_config_yaml
            else:
                config_yaml = endpoint.apply(
                    lambda ep, h=host: nebula_config.render(nebula_config.node_config(h, lighthouse, ep, args.port))
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

