"""Prefect tasks for the Kubernetes platform: one retryable step each, a thin call into pgpitr.

Tasks that change the cluster keep what they did in their transaction (``applied``) and register
``undo_applied`` as their rollback hook, so a failed setup removes what this run created and
restores what it patched, and nothing else.  Only transient failures (no answer, 429, 5xx) are
retried; RBAC refusals and bad input fail at once.  Secret values never pass as task parameters:
``apply_s3_secret`` reads them from a Prefect Secret block or the environment itself.
"""

from __future__ import annotations

import json
import os
from typing import Any

from prefect import task
from prefect.transactions import Transaction, get_transaction

from pgpitr.errors import InvalidInput
from pgpitr.kubernetes import apply, csi_s3, dataprotection, snapshot, storageclass
from pgpitr.kubernetes.client import KubeTarget
from pgpitr.kubernetes.crds import snapshot_crds
from pgpitr.kubernetes.resources import TYPES, ObjectRef, ref_of
from tasks._common import RETRYING, logger

ACCESS_KEY_ENV = "PGPITR_S3_ACCESS_KEY"
SECRET_KEY_ENV = "PGPITR_S3_SECRET_KEY"


def _remember(target: KubeTarget, applied: apply.Applied) -> dict[str, str]:
    """Keep the undo in this task's transaction (memory only) and log a content-free summary."""
    txn = get_transaction()
    if txn is not None:
        txn.set("target", target)
        txn.set("applied", applied)
    if applied.changed:
        logger().info("%s %s", applied.action, applied.ref)
    return applied.summary()


def undo_applied(txn: Transaction) -> None:
    """Rollback hook: remove what the task created, restore what it patched."""
    applied: apply.Applied | None = txn.get("applied", None)
    if applied is None or not applied.changed:
        return
    target: KubeTarget = txn.get("target")
    logger().warning("rollback: %s", apply.undo(target.connect(), applied))


@task(name="apply-manifest", timeout_seconds=120, **RETRYING)
def apply_manifest(manifest: dict[str, Any], target: KubeTarget) -> dict[str, str]:
    """Create-or-patch one object (never a Secret with credentials: see apply_s3_secret)."""
    return _remember(target, apply.ensure(target.connect(), manifest))


def _s3_credentials(block: str | None) -> tuple[str, str]:
    if block:
        from prefect.blocks.system import Secret

        value = Secret.load(block).get()
        try:
            data = json.loads(value) if isinstance(value, str) else dict(value)
            return str(data["accessKey"]), str(data["secretKey"])
        except (ValueError, TypeError, KeyError):
            raise InvalidInput(
                f"Prefect Secret block {block!r} must hold JSON with accessKey and secretKey"
            ) from None
    access, secret = os.environ.get(ACCESS_KEY_ENV), os.environ.get(SECRET_KEY_ENV)
    if not access or not secret:
        raise InvalidInput(
            "csi-s3 needs S3 credentials",
            hint=f"--set secret.accessKey=…,secret.secretKey=…, or {ACCESS_KEY_ENV} and "
            f"{SECRET_KEY_ENV} in the environment, or a Prefect Secret block",
        )
    return access, secret


@task(name="apply-s3-secret", timeout_seconds=120, **RETRYING)
def apply_s3_secret(
    target: KubeTarget, endpoint: str, region: str, namespace: str, credentials_block: str | None
) -> dict[str, str]:
    access, secret = _s3_credentials(credentials_block)
    manifest = csi_s3.secret(access, secret, endpoint, region, namespace=namespace)
    return _remember(target, apply.ensure(target.connect(), manifest))


@task(name="promote-storage-class", timeout_seconds=120, **RETRYING)
def promote_storage_class(target: KubeTarget, name: str) -> dict[str, str]:
    return _remember(target, storageclass.promote(target.connect(), name))


@task(name="demote-storage-class", timeout_seconds=120, **RETRYING)
def demote_storage_class(target: KubeTarget, name: str, new_default: str) -> dict[str, str]:
    return _remember(target, storageclass.demote(target.connect(), name, new_default))


for _changing in (apply_manifest, apply_s3_secret, promote_storage_class, demote_storage_class):
    _changing.on_rollback(undo_applied)


@task(name="default-storage-classes", timeout_seconds=60, **RETRYING)
def default_storage_classes(target: KubeTarget) -> list[str]:
    classes = storageclass.list_classes(target.connect())
    return [sc["metadata"]["name"] for sc in classes if storageclass.is_default(sc)]


@task(name="wait-ready", timeout_seconds=1800, **RETRYING)
def wait_ready(target: KubeTarget, refs: list[ObjectRef], timeout: float, poll: float) -> None:
    """Each object in turn, each within ``timeout`` seconds: a step checks its own result."""
    kube = target.connect()
    for ref in refs:
        where = apply.wait_ready(kube, ref, timeout=timeout, poll=poll)
        logger().info("%s ready: %s", ref, where)


@task(name="detect-platform", timeout_seconds=60, **RETRYING)
def detect_platform(target: KubeTarget) -> str:
    return snapshot.detect_platform(target.connect().list(TYPES["v1", "Node"]))


@task(name="check-snapshot-crds", timeout_seconds=60, **RETRYING)
def check_snapshot_crds(target: KubeTarget) -> None:
    """Before anything is created: an installed CRD of another version stops the run."""
    kube = target.connect()
    for crd in snapshot_crds():
        existing = kube.get(ref_of(crd))
        if existing is not None:
            apply.check_crd_compatible(existing)


@task(name="check-data-protection", timeout_seconds=60, **RETRYING)
def check_data_protection(target: KubeTarget, settings: dict[str, str]) -> None:
    dataprotection.check_prerequisites(target.connect(), settings)


@task(name="read-config", timeout_seconds=60, **RETRYING)
def read_config(target: KubeTarget, namespace: str) -> dict[str, str]:
    return dataprotection.read_config(target.connect(), namespace)


@task(name="remove-object", timeout_seconds=120, **RETRYING)
def remove_object(target: KubeTarget, ref: ObjectRef) -> str:
    message = apply.remove(target.connect(), ref)
    logger().info(message)
    return message
