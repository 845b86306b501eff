"""Files the program generates (boot scripts, Nebula configs, manifests, IAM policy
documents), collected so `tools/plan.py --render DIR` can show a reviewer exactly
what would reach the machines.

Components call `publish` beside the resource that carries the content; nothing
here changes what is deployed. Secret content stays an `Output` marked secret, so
the plan tool can redact it.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi

_FILES: list["GeneratedFile"] = []


@dataclass(frozen=True)
class GeneratedFile:
    path: str                   # relative path below the render directory
    content: pulumi.Output[str]


def publish(path: str, content: pulumi.Input[str]) -> None:
    """Record a generated file; a secret `Output` stays secret."""
    if path.startswith("/") or ".." in path.split("/"):
        raise ValueError(f"generated file path must be relative: {path}")
    _FILES.append(GeneratedFile(path, pulumi.Output.from_input(content)))


def published() -> list[GeneratedFile]:
    return list(_FILES)


def reset() -> None:
    """Forget earlier files (the plan harness runs the program more than once)."""
    _FILES.clear()
