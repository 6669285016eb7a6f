"""The steps of the Kubernetes platform operations; ``pgpitr.kubernetes.setup`` puts them in order.

Each step reads the cluster or changes one object, and checks its own result.  A changing step
returns a ``Change`` (what it did, and the patch that undoes it) and is marked
``@undone_by(undo_change)``: inside a transaction, a later failure removes what this run created
and restores what it patched, and nothing else.

In a dry run (``target.dry_run``) the same steps run in the same order, but a changing step
sends nothing: its ``Change`` is ``planned`` and carries the YAML it would apply, secrets
redacted.  A reading step reads the cluster when one answers; when none does
(``target.offline``) it returns what it assumes, which the operation reports.

Secret values never pass as step arguments: ``apply_s3_secret`` takes a function that returns
the credentials, called inside the step.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pgpitr.errors import InvalidInput, KubernetesError
from pgpitr.kubernetes import apply, csi_s3, dataprotection, snapshot, storageclass
from pgpitr.kubernetes.apply import Applied
from pgpitr.kubernetes.crds import snapshot_crds
from pgpitr.kubernetes.manifests import REDACTED, patch_yaml, to_yaml
from pgpitr.kubernetes.resources import TYPES, ObjectRef, ref_of
from pgpitr.kubernetes.target import KubeTarget
from pgpitr.steps import undone_by

log = logging.getLogger("pgpitr.kubernetes")

ACCESS_KEY_ENV = "PGPITR_S3_ACCESS_KEY"
SECRET_KEY_ENV = "PGPITR_S3_SECRET_KEY"
#: The platform of a dry run that has no cluster to detect it from.
DEFAULT_PLATFORM = "eks"

Credentials = Callable[[], tuple[str, str]]


@dataclass(frozen=True)
class Change:
    """What a changing step did to one object (``planned`` in a dry run), and on which cluster:
    enough to undo it.  ``applied.revert`` may hold an old Secret's data: memory only, never
    shown (``summary`` is what tables, logs and artifacts use)."""

    target: KubeTarget
    applied: Applied
    document: str = ""  # dry run: the manifest or the merge patch, as YAML, secrets redacted

    def summary(self) -> dict[str, str]:
        return self.applied.summary()


def undo_change(change: Change) -> None:
    """Rollback: remove what the step created, restore what it patched."""
    if change.applied.changed:
        log.warning("rollback: %s", apply.undo(change.target.connect(), change.applied))


def _done(target: KubeTarget, applied: Applied) -> Change:
    if applied.changed:
        log.info("%s %s", applied.action, applied.ref)
    return Change(target, applied)


def _planned(target: KubeTarget, ref: ObjectRef, document: str) -> Change:
    return Change(target, Applied(ref, "planned"), document)


# -- reading ------------------------------------------------------------------------------------


def reach(target: KubeTarget) -> KubeTarget:
    """The cluster this run works on.  A run that changes it fails here when it has no
    configuration; a dry run goes on without a cluster, and the target says why."""
    if not target.dry_run:
        target.connect()  # the kubeconfig and context are usable, before any other step
        return target
    try:
        target.connect(timeout=10.0).get(ObjectRef("v1", "Namespace", "kube-system"))
    except KubernetesError as exc:
        return target.without_cluster(exc.message)
    return target


def detect_platform(target: KubeTarget) -> str:
    """eks, gke, aks or ack, from the nodes; DEFAULT_PLATFORM in a dry run without a cluster."""
    if target.offline:
        return DEFAULT_PLATFORM
    return snapshot.detect_platform(target.connect().list(TYPES["v1", "Node"]))


def check_snapshot_crds(target: KubeTarget) -> None:
    """Before anything is created: an installed CRD of another version stops the run."""
    if target.offline:
        return
    kube = target.connect()
    for crd in snapshot_crds():
        existing = kube.get(ref_of(crd))
        if existing is not None:
            apply.check_crd_compatible(existing)


def default_storage_classes(target: KubeTarget) -> list[str]:
    """The classes annotated default; none in a dry run without a cluster."""
    if target.offline:
        return []
    classes = storageclass.list_classes(target.connect())
    return [sc["metadata"]["name"] for sc in classes if storageclass.is_default(sc)]


def check_only_default(target: KubeTarget, name: str) -> None:
    """After the change: ``name`` and nothing else is the default (nothing to check on paper)."""
    if target.dry_run:
        return
    found = default_storage_classes(target)
    if found != [name]:
        raise KubernetesError(
            f"expected {name} to be the only default storage class, found {found or 'none'}"
        )


def read_config(target: KubeTarget, namespace: str) -> dict[str, str]:
    """The data-protection settings kept in the cluster; none in a dry run without a cluster."""
    if target.offline:
        return {}
    return dataprotection.read_config(target.connect(), namespace)


def check_data_protection(target: KubeTarget, settings: Mapping[str, str]) -> None:
    """What the settings rely on exists (in a dry run, the earlier steps only planned it)."""
    if target.dry_run:
        return
    dataprotection.check_prerequisites(target.connect(), settings)


def wait_ready(target: KubeTarget, refs: list[ObjectRef], timeout: float, poll: float) -> None:
    """Each object in turn, each within ``timeout`` seconds: a step checks its own result."""
    if target.dry_run:
        return
    kube = target.connect()
    for ref in refs:
        where = apply.wait_ready(kube, ref, timeout=timeout, poll=poll)
        log.info("%s ready: %s", ref, where)


# -- changing -----------------------------------------------------------------------------------


@undone_by(undo_change)
def apply_manifest(target: KubeTarget, manifest: dict[str, Any]) -> Change:
    """Create-or-patch one object (never a Secret with credentials: see apply_s3_secret)."""
    if target.dry_run:
        return _planned(target, ref_of(manifest), to_yaml([manifest]))
    return _done(target, apply.ensure(target.connect(), manifest))


def env_credentials() -> tuple[str, str]:
    """The S3 keys from PGPITR_S3_ACCESS_KEY / PGPITR_S3_SECRET_KEY."""
    access, secret = os.environ.get(ACCESS_KEY_ENV), os.environ.get(SECRET_KEY_ENV)
    if not access or not secret:
        raise InvalidInput(
            "csi-s3 needs S3 credentials",
            hint=f"--set secret.accessKey=…,secret.secretKey=…, or {ACCESS_KEY_ENV} and "
            f"{SECRET_KEY_ENV} in the environment, or a Prefect Secret block",
        )
    return access, secret


def parse_credentials(value: Any, where: str) -> tuple[str, str]:
    """The keys of a stored JSON ``{"accessKey": …, "secretKey": …}`` (or that dict)."""
    try:
        data = json.loads(value) if isinstance(value, str) else dict(value)
        return str(data["accessKey"]), str(data["secretKey"])
    except (ValueError, TypeError, KeyError):
        raise InvalidInput(f"{where} must hold JSON with accessKey and secretKey") from None


@undone_by(undo_change)
def apply_s3_secret(
    target: KubeTarget, endpoint: str, region: str, namespace: str, credentials: Credentials
) -> Change:
    """The csi-s3 credentials Secret; the keys are read here, by ``credentials()``."""
    if target.dry_run:
        manifest = csi_s3.secret(REDACTED, REDACTED, endpoint, region, namespace=namespace)
        return _planned(target, ref_of(manifest), to_yaml([manifest]))
    access, secret = credentials()
    manifest = csi_s3.secret(access, secret, endpoint, region, namespace=namespace)
    return _done(target, apply.ensure(target.connect(), manifest))


@undone_by(undo_change)
def promote_storage_class(target: KubeTarget, name: str) -> Change:
    """Make an existing class the default."""
    if target.dry_run:
        patch = storageclass.promotion_patch()
        return _planned(target, storageclass.ref(name), patch_yaml("StorageClass", name, patch))
    return _done(target, storageclass.promote(target.connect(), name))


@undone_by(undo_change)
def demote_storage_class(target: KubeTarget, name: str, new_default: str) -> Change:
    """Mark one other default class as not default."""
    if target.dry_run:
        current = None if target.offline else target.connect().get(storageclass.ref(name))
        patch = (
            storageclass.demotion_patch(current)
            if current is not None
            else {"metadata": {"annotations": {storageclass.DEFAULT_ANNOTATION: "false"}}}
        )
        return _planned(target, storageclass.ref(name), patch_yaml("StorageClass", name, patch))
    return _done(target, storageclass.demote(target.connect(), name, new_default))


def remove_object(target: KubeTarget, ref: ObjectRef) -> str:
    """Delete an object pgpitr created; someone else's stays."""
    message = apply.remove(target.connect(), ref)
    log.info(message)
    return message
