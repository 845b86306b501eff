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

_TYPE = re.compile(r"^(?P<family>[a-z][a-z0-9-]*)\.(?P<size>[a-z0-9]+)$")


@dataclass(frozen=True)
class Family:
    arch: str                 # "x86_64" or "arm64"
    gpu: Optional[str] = None  # GPU maker, None for no GPU
    hibernation: bool = False  # on AWS's list of families that can hibernate


FAMILIES: dict[str, Family] = {
    # general purpose / burstable (lighthouse candidates)
    "t2": Family("x86_64", hibernation=True), "t3": Family("x86_64", hibernation=True),
    "t3a": Family("x86_64", hibernation=True), "t4g": Family("arm64"),
    "m5": Family("x86_64", hibernation=True), "m6i": Family("x86_64", hibernation=True),
    "m7i": Family("x86_64", hibernation=True), "m6g": Family("arm64"), "m7g": Family("arm64"),
    "c5": Family("x86_64", hibernation=True), "c6i": Family("x86_64", hibernation=True),
    "c7i": Family("x86_64"), "c6g": Family("arm64"), "c7g": Family("arm64"),
    "r5": Family("x86_64", hibernation=True), "r6i": Family("x86_64"),
    "r6g": Family("arm64"), "r7g": Family("arm64"),
    # accelerated computing, NVIDIA on x86_64
    "g4dn": Family("x86_64", "nvidia"), "g5": Family("x86_64", "nvidia"),
    "g6": Family("x86_64", "nvidia"), "g6e": Family("x86_64", "nvidia"),
    "gr6": Family("x86_64", "nvidia"), "p3": Family("x86_64", "nvidia"),
    "p3dn": Family("x86_64", "nvidia"), "p4d": Family("x86_64", "nvidia"),
    "p4de": Family("x86_64", "nvidia"), "p5": Family("x86_64", "nvidia"),
    "p5e": Family("x86_64", "nvidia"), "p5en": Family("x86_64", "nvidia"),
    # accelerated, but not usable here
    "g5g": Family("arm64", "nvidia"),   # NVIDIA on Graviton: no x86_64 Deep Learning AMI
    "g4ad": Family("x86_64", "amd"),
    "inf1": Family("x86_64", "inferentia"), "inf2": Family("x86_64", "inferentia"),
    "trn1": Family("x86_64", "trainium"),
}


def family_of(instance_type: str) -> Optional[str]:
    match = _TYPE.match(instance_type)
    return match.group("family") if match else None


def problem_with(instance_type: str) -> Optional[str]:
    """Why this is not a known instance type, or None."""
    family = family_of(instance_type)
    if family is None:
        return f"{instance_type!r} is not an instance type like t4g.nano"
    if family not in FAMILIES:
        return f"unknown instance family {family!r} in {instance_type!r} (known: {', '.join(sorted(FAMILIES))})"
    return None


def gpu_problem_with(instance_type: str) -> Optional[str]:
    """Why this known type cannot be a GPU worker, or None."""
    family = FAMILIES[family_of(instance_type)]
    if family.gpu != "nvidia":
        return f"{instance_type!r} has no NVIDIA GPU (use e.g. g4dn.xlarge, g5.xlarge, g6.xlarge)"
    if family.arch != "x86_64":
        return f"{instance_type!r} is arm64; the Deep Learning AMI used for workers is x86_64 only"
    return None


def architecture(instance_type: str) -> str:
    """`x86_64` or `arm64` for a type that passed `problem_with`."""
    return FAMILIES[family_of(instance_type)].arch


def can_hibernate(instance_type: str) -> bool:
    """Whether AWS lists the type's family as able to hibernate."""
    return FAMILIES[family_of(instance_type)].hibernation
