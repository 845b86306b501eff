"""Wakes a stopped GPU worker for `pulumi destroy`, so the homelab's Liqo objects
can let go of it, or, when it cannot wake, tells Liqo the peer is gone.

Why: the homelab's NamespaceOffloading, ResourceSlice and Identity carry Liqo
finalizers that are released only when the worker's API server confirms the
remote side is gone (liqotech/liqo v1.2.0: `namespaceoffloading-controller`
`deletionLogic`, `crdReplicator` `reflection/handler.go` `deleteRemoteObject`,
`crdReplicator-operator.go`), and pulumi-kubernetes waits for a deleted object to
disappear. A stopped worker, the usual state, answers nothing.

Mechanism: a Python dynamic resource per worker that depends on that worker's
Liqo objects (and on Ollama's), so the engine deletes it, running `delete` below,
before any of them; the homelab's activator depends on it, so it is gone before
(it would only start the worker too). It is deleted by `pulumi destroy`, and also
by an `up` that removes the homelab side or this worker: their peerings need the
worker as much. `delete`:

1. tags the worker `hybrid-llm:teardown-hold=<now + TEARDOWN_HOLD_MINUTES>`, which
   the scaler honours (scaler_lambda/handler.py `held_for_teardown`): no idle
   check stops this worker while its peering comes down, and the schedule keeps
   working for the others (disabling the shared rule would leave every worker
   running after an `up` that only removed the homelab);
2. starts the worker if it is stopped and waits until it runs; k3s and Liqo come
   up within the Liqo objects' delete timeout (components/homelab/liqo_peering.py);
3. if it cannot run (terminated, gone, or refused: EC2 restarts a stopped spot
   instance only itself, after an interruption), marks the peer as gone the way
   Liqo does (`liqoctl force unpeer`, pkg/liqoctl/force/unpeer): the
   `liqo.io/foreign-cluster-permanently-unreachable` annotation on its
   ForeignCluster (pkg/consts/annotations.go; `IsDead` in
   pkg/utils/foreigncluster/conditions.go then skips every remote call), and
   deletes its ResourceSlice first, whose virtual node must be gone before the
   NamespaceOffloading can let go (the NamespaceMap goes with it).

Creating it calls nothing. Its inputs update in place (a replaced worker's new
id, a renewed kubeconfig), so a worker replacement never deletes, and so never
runs, it. Credentials: those of whoever runs the destroy, as for the spot guard
(`spot_guard.deployer_session`). The provider is pickled into the state by reference to this
module: this file stays at `components/teardown_wake.py` once a stack exists.
"""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

from components.aws.spot_guard import deployer_session
from scaler_lambda.handler import TEARDOWN_HOLD_TAG

UNREACHABLE_ANNOTATION = "liqo.io/foreign-cluster-permanently-unreachable"
# A teardown takes minutes (each Liqo delete waits at most
# components/homelab/liqo_peering.py TEARDOWN_TIMEOUT); after the hold the scaler
# treats the worker as any other, so a worker kept by an `up` is stopped when idle.
TEARDOWN_HOLD_MINUTES = 90
# EC2 errors that mean the worker cannot run for the teardown; any other error
# (throttling, credentials, permissions) is reported, not taken for a dead peer.
CANNOT_RUN = ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed", "IncorrectInstanceState",
              "IncorrectSpotRequestState", "InsufficientInstanceCapacity", "UnsupportedOperation")
FOREIGN_CLUSTER = ("core.liqo.io", "v1beta1", "foreignclusters")
RESOURCE_SLICE = ("authentication.liqo.io", "v1beta1", "resourceslices")
RUNNING_WAIT_SECONDS = 600
GONE_WAIT_SECONDS = 300
_POLL = 5.0


class TeardownError(Exception):
    """The peering cannot be released: one line naming the worker and what to do."""


def hold_for_teardown(ec2: Any, instance_id: str, now: Optional[datetime] = None) -> None:
    """Tag the worker so the scaler leaves it running through the teardown; a
    worker already gone has nothing to hold."""
    from botocore.exceptions import ClientError

    until = (now or datetime.now(timezone.utc)) + timedelta(minutes=TEARDOWN_HOLD_MINUTES)
    try:
        ec2.create_tags(Resources=[instance_id], Tags=[
            {"Key": TEARDOWN_HOLD_TAG, "Value": f"{until:%Y-%m-%dT%H:%M:%SZ}"}])
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in CANNOT_RUN:
            raise


def start_for_teardown(ec2: Any, instance_id: str) -> bool:
    """True once the worker runs (started if it was stopped); False when it cannot:
    gone, terminated, or its start refused."""
    from botocore.exceptions import ClientError

    deadline = time.monotonic() + RUNNING_WAIT_SECONDS
    while True:
        try:
            reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        except ClientError as err:
            if _code(err) in CANNOT_RUN:
                return False                               # InvalidInstanceID.NotFound
            raise
        if not reservations:
            return False
        state = reservations[0]["Instances"][0]["State"]["Name"]
        if state == "running":
            return True
        if state in ("terminated", "shutting-down"):
            return False
        if state == "stopped":
            try:
                ec2.start_instances(InstanceIds=[instance_id])
            except ClientError as err:
                if _code(err) in CANNOT_RUN:
                    return False                           # e.g. a spot instance stopped by an interruption
                raise
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)                                  # pending, stopping


def _code(err: Any) -> str:
    return err.response.get("Error", {}).get("Code", "")


def _not_found(err: Exception) -> bool:
    return getattr(err, "status", None) == 404          # kubernetes.client.ApiException


def mark_peer_gone(api: Any, cluster_id: str, tenant_namespace: str, resource_slice: str) -> None:
    """Liqo's own way to give up on a peer: annotate its ForeignCluster as
    permanently unreachable, delete its ResourceSlice and wait until it is gone.
    `api` is a kubernetes CustomObjectsApi for the homelab."""
    group, version, plural = FOREIGN_CLUSTER
    try:
        api.patch_cluster_custom_object(group, version, plural, cluster_id,
                                        {"metadata": {"annotations": {UNREACHABLE_ANNOTATION: "true"}}})
    except Exception as err:  # noqa: BLE001 - a missing ForeignCluster leaves nothing to release
        if not _not_found(err):
            raise
    group, version, plural = RESOURCE_SLICE
    deadline = time.monotonic() + GONE_WAIT_SECONDS
    try:
        api.delete_namespaced_custom_object(group, version, tenant_namespace, plural, resource_slice)
    except Exception as err:  # noqa: BLE001
        if not _not_found(err):
            raise
    while True:
        try:
            api.get_namespaced_custom_object(group, version, tenant_namespace, plural, resource_slice)
        except Exception as err:  # noqa: BLE001
            if _not_found(err):
                return
            raise
        if time.monotonic() >= deadline:
            raise TimeoutError(f"ResourceSlice {tenant_namespace}/{resource_slice} still there after "
                               f"{GONE_WAIT_SECONDS:g}s")
        time.sleep(_POLL)


def _homelab_api(kubeconfig: str) -> Any:
    import yaml
    from kubernetes import client, config

    api_client = config.new_client_from_config_dict(yaml.safe_load(kubeconfig))
    return client.CustomObjectsApi(api_client)


class _Provider(ResourceProvider):
    def create(self, props: dict) -> CreateResult:
        return CreateResult(id_=f"teardown-wake-{props['cluster_id']}", outs=props)

    def diff(self, _id: str, olds: dict, news: dict) -> DiffResult:
        return DiffResult(changes=olds != news, replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict, news: dict) -> UpdateResult:
        return UpdateResult(outs=news)

    def delete(self, _id: str, props: dict) -> None:
        instance_id, cluster_id = props["instance_id"], props["cluster_id"]
        try:
            ec2 = deployer_session(props["region"], None).client("ec2")
            hold_for_teardown(ec2, instance_id)
            if start_for_teardown(ec2, instance_id):
                return
            mark_peer_gone(_homelab_api(props["kubeconfig"]), cluster_id, props["tenant_namespace"],
                           props["resource_slice"])
        except Exception as err:  # botocore, kubernetes and config errors alike
            raise TeardownError(
                f"cannot release the Liqo peering with {cluster_id} ({instance_id}): {type(err).__name__}: "
                f"{str(err).splitlines()[0] if str(err) else ''}; on the homelab run "
                f"`liqoctl force unpeer {cluster_id} --skip-confirm`, then `pulumi destroy` again") from None


class TeardownWake(Resource):
    """Present while the peering exists; its deletion wakes the worker, or lets the peer go."""

    def __init__(self, name: str, *, instance_id: pulumi.Input[str], region: str, kubeconfig: pulumi.Input[str], cluster_id: str,
                 tenant_namespace: str, resource_slice: str, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__(_Provider(), name, {
            "instance_id": instance_id, "region": region, "kubeconfig": pulumi.Output.secret(kubeconfig),
            "cluster_id": cluster_id, "tenant_namespace": tenant_namespace, "resource_slice": resource_slice,
        }, pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(additional_secret_outputs=["kubeconfig"])))
