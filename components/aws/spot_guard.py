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

`delete` uses boto3 in the stack's region with the credentials of whoever runs
the destroy, like the AWS provider: credentials in the environment first (keys,
`AWS_PROFILE`, a web identity token, container credentials), then a profile
recorded in the state (only by versions before the stack refused `aws:profile`),
only where this machine's shared config or credentials file has it, then boto3's
default chain. A recorded profile is a laptop's; a destroy from CI, where it does
not exist, must not fail on it (botocore lets an explicit profile override
environment credentials).

The provider is pickled into the stack's state by reference to this module, so
this file stays at `components/aws/spot_guard.py` once a stack exists (`pulumi
destroy` finds the provider by this path; keep a shim here if it must move).
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Optional

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


def environment_has_credentials(environ: Mapping[str, str] = os.environ) -> bool:
    """The environment names credentials, as botocore reads them before any file."""
    has = lambda *names: all(environ.get(n) for n in names)  # noqa: E731
    return (has("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") or has("AWS_PROFILE")
            or has("AWS_DEFAULT_PROFILE") or has("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN")
            or has("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") or has("AWS_CONTAINER_CREDENTIALS_FULL_URI"))


def deployer_session(region: str, profile: Optional[str]) -> Any:
    """A boto3 session with the credentials of whoever runs the delete."""
    import boto3  # only a delete talks to AWS; previews and mocks never import it

    if profile and not environment_has_credentials() and profile in boto3.session.Session().available_profiles:
        return boto3.session.Session(profile_name=profile, region_name=region)
    return boto3.session.Session(region_name=region)


def _ec2(region: str, profile: Optional[str]) -> Any:
    return deployer_session(region, profile).client("ec2")


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
