"""A small built-in table of EC2 instance families: enough to reject an instance
type with no NVIDIA GPU, an unknown family, and to pick an AMI architecture.

It is deliberately short; add a family here (with its architecture and GPU) when
you need one. Sources: the EC2 instance-type pages ("Accelerated computing") and
the hibernation prerequisites page ("Instance families"), which lists general
purpose, compute, memory and storage families but no GPU family.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

_TYPE = re.compile(r"(?P<family>[a-z][a-z0-9-]*)\.(?P<size>[a-z0-9]+)")   # matched whole (fullmatch)


_T = ("nano", "micro", "small", "medium", "large", "xlarge", "2xlarge")
_GRAVITON = ("medium", "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "metal")
_GEN6 = ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "32xlarge", "metal")
_GEN7 = ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge",
         "metal-24xl", "metal-48xl")
_GEN5 = ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "metal")
_G5_ON = ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")


@dataclass(frozen=True)
class Family:
    arch: str                  # "x86_64" or "arm64"
    sizes: tuple[str, ...]     # the sizes EC2's InstanceType list has for the family
    gpu: Optional[str] = None  # GPU maker, None for no GPU
    hibernation: bool = False  # on AWS's list of families that can hibernate
    dlami: bool = False        # the workers' Deep Learning AMI supports it


# Sizes from the EC2 API's InstanceType enumeration; which of them an AZ offers is
# checked at `pulumi up` time (get_instance_type_offerings). GPU families the Deep
# Learning Base OSS Nvidia Driver AMI lists in its release notes carry dlami=True
# (P3 and P3dn are no longer among them).
FAMILIES: dict[str, Family] = {
    # general purpose / burstable (lighthouse candidates)
    "t2": Family("x86_64", _T, hibernation=True), "t3": Family("x86_64", _T, hibernation=True),
    "t3a": Family("x86_64", _T, hibernation=True), "t4g": Family("arm64", _T),
    "m5": Family("x86_64", _GEN5, hibernation=True), "m6i": Family("x86_64", _GEN6, hibernation=True),
    "m7i": Family("x86_64", _GEN7, hibernation=True), "m6g": Family("arm64", _GRAVITON),
    "m7g": Family("arm64", _GRAVITON),
    "c5": Family("x86_64", ("large", "xlarge", "2xlarge", "4xlarge", "9xlarge", "12xlarge", "18xlarge",
                            "24xlarge", "metal"), hibernation=True),
    "c6i": Family("x86_64", _GEN6, hibernation=True), "c7i": Family("x86_64", _GEN7),
    "c6g": Family("arm64", _GRAVITON), "c7g": Family("arm64", _GRAVITON),
    "r5": Family("x86_64", _GEN5, hibernation=True), "r6i": Family("x86_64", _GEN6),
    "r6g": Family("arm64", _GRAVITON), "r7g": Family("arm64", _GRAVITON),
    # accelerated computing, NVIDIA on x86_64
    "g4dn": Family("x86_64", ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "metal"),
                   "nvidia", dlami=True),
    "g5": Family("x86_64", _G5_ON, "nvidia", dlami=True),
    "g6": Family("x86_64", _G5_ON, "nvidia", dlami=True),
    "g6e": Family("x86_64", _G5_ON, "nvidia", dlami=True),
    "gr6": Family("x86_64", ("4xlarge", "8xlarge"), "nvidia", dlami=True),
    "p3": Family("x86_64", ("2xlarge", "8xlarge", "16xlarge"), "nvidia"),
    "p3dn": Family("x86_64", ("24xlarge",), "nvidia"),
    "p4d": Family("x86_64", ("24xlarge",), "nvidia", dlami=True),
    "p4de": Family("x86_64", ("24xlarge",), "nvidia", dlami=True),
    "p5": Family("x86_64", ("4xlarge", "48xlarge"), "nvidia", dlami=True),
    "p5e": Family("x86_64", ("48xlarge",), "nvidia", dlami=True),
    "p5en": Family("x86_64", ("48xlarge",), "nvidia", dlami=True),
    # accelerated, but not usable here
    "g5g": Family("arm64", ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge", "metal"), "nvidia"),
    "g4ad": Family("x86_64", ("xlarge", "2xlarge", "4xlarge", "8xlarge", "16xlarge"), "amd"),
    "inf1": Family("x86_64", ("xlarge", "2xlarge", "6xlarge", "24xlarge"), "inferentia"),
    "inf2": Family("x86_64", ("xlarge", "8xlarge", "24xlarge", "48xlarge"), "inferentia"),
    "trn1": Family("x86_64", ("2xlarge", "32xlarge"), "trainium"),
}


def family_of(instance_type: str) -> Optional[str]:
    match = _TYPE.fullmatch(instance_type)
    return match.group("family") if match else None


def problem_with(instance_type: str) -> Optional[str]:
    """Why this is not a known instance type, or None."""
    family = family_of(instance_type)
    if family is None:
        return f"{instance_type!r} is not an instance type like t4g.nano"
    if family not in FAMILIES:
        return f"unknown instance family {family!r} in {instance_type!r} (known: {', '.join(sorted(FAMILIES))})"
    sizes = FAMILIES[family].sizes
    size = instance_type.split(".", 1)[1]
    if size not in sizes:
        return f"{family} has no size {size!r} (sizes: {', '.join(sizes)})"
    return None


def gpu_problem_with(instance_type: str) -> Optional[str]:
    """Why this known type cannot be a GPU worker, or None."""
    family = FAMILIES[family_of(instance_type)]
    if family.gpu != "nvidia":
        return f"{instance_type!r} has no NVIDIA GPU (use e.g. g4dn.xlarge, g5.xlarge, g6.xlarge)"
    if family.arch != "x86_64":
        return f"{instance_type!r} is arm64; the Deep Learning AMI used for workers is x86_64 only"
    if not family.dlami:
        return f"{instance_type!r} is not supported by the workers' Deep Learning AMI (use g4dn, g5, g6, g6e, p4d or p5)"
    return None


def architecture(instance_type: str) -> str:
    """`x86_64` or `arm64` for a type that passed `problem_with`."""
    return FAMILIES[family_of(instance_type)].arch


def can_hibernate(instance_type: str) -> bool:
    """Whether AWS lists the type's family as able to hibernate."""
    return FAMILIES[family_of(instance_type)].hibernation
