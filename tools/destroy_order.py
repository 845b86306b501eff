"""The order in which `pulumi destroy` deletes a plan's resources, as the engine
computes it, so a test can replay it against what each delete needs.

The engine (pulumi/pulumi `pkg/resource/deploy/step_generator.go` `ScheduleDeletes`,
with `pkg/resource/graph/dependency_graph.go` `DependenciesOf`) groups deletes into
antichains and runs them in reverse dependency order: a resource is deleted only
after everything that depends on it is gone, and the resources of one antichain
are deleted in parallel. A resource depends on what its inputs came from and its
`depends_on` (both in `dependencies`), on its parent, and on its provider.

`waves(resources)` returns those antichains, first deleted first; a resource's
wave is set by its longest chain of dependencies, not by what depends on it. Two resources in
the same wave may be deleted at the same moment: "B is deleted after A" holds
only when B's wave comes strictly after A's.
"""

from __future__ import annotations

from typing import Iterable, Protocol, Sequence


class Node(Protocol):
    urn: str
    parent: str | None
    dependencies: Sequence[str]
    provider: str | None


def provider_urn(reference: str) -> str:
    """The provider's URN from a provider reference (`urn::id`)."""
    return reference.rsplit("::", 1)[0]


def depends_on(resource: Node, known: set[str]) -> set[str]:
    """The URNs `resource` depends on for ordering: inputs and `depends_on`,
    its parent, and its provider (a provider reference is `urn::id`)."""
    out = set(resource.dependencies)
    if resource.parent:
        out.add(resource.parent)
    if resource.provider:
        out.add(provider_urn(resource.provider))
    return {urn for urn in out if urn in known and urn != resource.urn}


def waves(resources: Iterable[Node]) -> list[list[str]]:
    """Antichains of URNs in delete order. As `ScheduleDeletes` does: repeatedly
    take every resource none of whose remaining dependencies is left, then reverse,
    so a resource's wave is set by its longest dependency chain."""
    nodes = {r.urn: r for r in resources}
    known = set(nodes)
    needs = {urn: depends_on(node, known) for urn, node in nodes.items()}
    left = set(nodes)
    rounds: list[list[str]] = []
    while left:
        ready = sorted(urn for urn in left if not needs[urn] & left)
        if not ready:
            raise ValueError(f"dependency cycle among {sorted(left)[:5]}")
        rounds.append(ready)
        left -= set(ready)
    return list(reversed(rounds))


def wave_of(order: list[list[str]]) -> dict[str, int]:
    return {urn: index for index, wave in enumerate(order) for urn in wave}
