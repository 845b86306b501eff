"""Cancels a spot worker's persistent spot request before the worker is destroyed.

A persistent spot request outlives its instance: terminate the instance and the
request opens again and launches a new, untracked GPU instance that bills until
someone notices (terraform-provider-aws issue 38142: deleting an `aws_instance`
with persistent `instance_market_options` can leave the request open). Cancelling
the request while the instance still exists is the safe order: a cancelled
request never relaunches. Cancelling leaves a *running* instance running, but
AWS terminates a *stopped* spot instance whose request is cancelled; the model
volume's attachment depends on this guard, so it is deleted first (stopping the
instance and detaching the volume), then the guard cancels and the instance
goes, with the volume safe (docs/lifecycle.md).

Mechanism: a Python dynamic resource that depends on the instance, so Pulumi
deletes it (and runs `delete` below) before the instance, both on `pulumi
destroy` and when the instance is replaced. Creating it calls no AWS API.
`delete` uses boto3 with the stack's region and `aws:profile`, otherwise the
standard credential chain, the same credentials `pulumi destroy` runs with.

The provider is pickled into the stack's state by reference to this module, so
this file stays at `components/aws/spot_guard.py` once a stack exists (`pulumi
destroy` finds the provider by this path; keep a shim here if it must move).
"""

from __future__ import annotations

from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

# Requests in these states can still launch an instance.
_LIVE_STATES = ["open", "active", "disabled"]


class SpotGuardError(Exception):
    """A request could not be cancelled: one line naming the instance."""


def cancel_requests(ec2: Any, instance_id: str) -> list[str]:
    """Cancel every live spot request that launched `instance_id`; the ids cancelled."""
    found = ec2.describe_spot_instance_requests(Filters=[
        {"Name": "instance-id", "Values": [instance_id]},
        {"Name": "state", "Values": _LIVE_STATES},
    ])["SpotInstanceRequests"]
    ids = sorted(r["SpotInstanceRequestId"] for r in found)
    if ids:
        ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=ids)
    return ids


def _ec2(region: str, profile: Optional[str]) -> Any:
    import boto3  # only a delete talks to AWS; previews and mocks never import it

    return boto3.session.Session(profile_name=profile, region_name=region).client("ec2")


class _Provider(ResourceProvider):
    def create(self, props: dict) -> CreateResult:
        return CreateResult(id_=f"spot-guard-{props['instance_id']}", outs=props)

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        replaces = [k for k in ("instance_id", "region") if olds.get(k) != news.get(k)]
        changed = replaces or olds.get("profile") != news.get("profile")
        return DiffResult(changes=bool(changed), replaces=replaces, delete_before_replace=False)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(outs=news)

    def delete(self, _id: str, props: dict) -> None:
        instance_id = props["instance_id"]
        try:
            cancel_requests(_ec2(props["region"], props.get("profile")), instance_id)
        except Exception as err:  # botocore errors, missing credentials
            raise SpotGuardError(
                f"cannot cancel the spot request of {instance_id} ({type(err).__name__}: {err}); "
                f"cancel it by hand before destroying the instance") from None


class SpotGuard(Resource):
    """Present while the instance exists; its deletion cancels the instance's spot request."""

    instance_id: pulumi.Output[str]

    def __init__(self, name: str, *, instance_id: pulumi.Input[str], region: str,
                 profile: Optional[str] = None, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(_Provider(), name, {"instance_id": instance_id, "region": region, "profile": profile}, opts)
