"""Create-or-patch, wait-until-ready and undo, for manifests given as dicts.

``ensure`` is idempotent by construction: it reads the object, creates it when missing, and
otherwise sends a merge patch with only the fields that differ (nothing at all when the object
already says what the manifest says).  It reports what it did, with the patch that would undo a
change, so that a transaction can remove what this run created and restore what it patched.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pgpitr.errors import AlreadyExists
from pgpitr.kubernetes.errors import CrdIncompatible, ImmutableField, NotReady
from pgpitr.kubernetes.resources import ObjectRef, ref_of

if TYPE_CHECKING:  # the client library is imported only to talk to a cluster
    from pgpitr.kubernetes.client import Kube

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "pgpitr"

# Fields the API server refuses to change after creation: a difference is an error to report,
# not a patch to send (which would fail with an opaque 422).
IMMUTABLE: dict[str, tuple[tuple[str, ...], ...]] = {
    "StorageClass": (("provisioner",), ("parameters",), ("reclaimPolicy",), ("volumeBindingMode",)),
    "PersistentVolumeClaim": (("spec", "storageClassName"), ("spec", "accessModes")),
    "CSIDriver": (("spec", "attachRequired"),),
    "Deployment": (("spec", "selector"),),
    "DaemonSet": (("spec", "selector"),),
}
# Fields left alone on an existing object: a PVC's size may only grow and is not ours to manage.
NOT_PATCHED: dict[str, tuple[str, ...]] = {"PersistentVolumeClaim": ("spec",)}


@dataclass(frozen=True)
class Applied:
    """What ``ensure`` or ``patch`` did to one object."""

    ref: ObjectRef
    action: str  # created | patched | unchanged | present (someone else's, left as it was)
    revert: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def changed(self) -> bool:
        return self.action in ("created", "patched")

    def summary(self) -> dict[str, str]:
        """For tables, logs and artifacts: never the object's content."""
        return {
            "kind": self.ref.kind,
            "name": self.ref.name,
            "namespace": self.ref.namespace or "",
            "action": self.action,
        }


def is_managed(obj: dict[str, Any]) -> bool:
    labels = (obj.get("metadata") or {}).get("labels") or {}
    return labels.get(MANAGED_BY_LABEL) == MANAGED_BY


def covers(actual: Any, desired: Any) -> bool:
    """Whether ``actual`` says all that ``desired`` says (server defaults may add more)."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(
            key in actual and covers(actual[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(desired)
            and all(covers(a, d) for a, d in zip(actual, desired, strict=True))
        )
    return actual == desired


def changes(actual: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The smallest merge patch after which ``actual`` covers ``desired``."""
    patch: dict[str, Any] = {}
    for key, value in desired.items():
        current = actual.get(key)
        if key in actual and covers(current, value):
            continue
        if isinstance(value, dict) and isinstance(current, dict):
            patch[key] = changes(current, value)
        else:
            patch[key] = value
    return patch


def revert_patch(actual: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """The merge patch that undoes ``patch`` applied to ``actual``."""
    revert: dict[str, Any] = {}
    for key, value in patch.items():
        if key not in actual:
            revert[key] = None
        elif isinstance(value, dict) and isinstance(actual[key], dict):
            revert[key] = revert_patch(actual[key], value)
        else:
            revert[key] = actual[key]
    return revert


def _dig(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return None
        obj = obj[key]
    return obj


def _patchable(manifest: dict[str, Any], *, adopt: bool) -> dict[str, Any]:
    """The part of a manifest that a patch may carry."""
    kind = manifest["kind"]
    meta = manifest.get("metadata") or {}
    body: dict[str, Any] = {
        k: v
        for k, v in manifest.items()
        if k not in ("apiVersion", "kind", "metadata", "status")
        and k not in NOT_PATCHED.get(kind, ())
    }
    for path in IMMUTABLE.get(kind, ()):
        if len(path) == 1:
            body.pop(path[0], None)
    labels = dict(meta.get("labels") or {})
    if adopt:  # someone else's object stays theirs: `disable` must not delete it later
        labels.pop(MANAGED_BY_LABEL, None)
    new_meta = {
        k: v for k, v in (("labels", labels), ("annotations", meta.get("annotations"))) if v
    }
    if new_meta:
        body["metadata"] = new_meta
    return body


def check_crd_compatible(existing: dict[str, Any], wanted_version: str = "v1") -> None:
    """Refuse a CRD that does not serve the version pgpitr and the snapshot-controller speak."""
    versions = (existing.get("spec") or {}).get("versions") or []
    served = [v.get("name") for v in versions if v.get("served")]
    if wanted_version not in served:
        name = (existing.get("metadata") or {}).get("name")
        storage = [v.get("name") for v in versions if v.get("storage")]
        raise CrdIncompatible(
            f"CustomResourceDefinition {name} is installed serving {served or 'no version'} "
            f"(storage {storage or '?'}); pgpitr and snapshot-controller v6+ need {wanted_version}",
            hint=f"upgrade the external-snapshotter CRDs to a release that serves {wanted_version} "
            f"(v4 or later), or delete {name} if nothing uses it, then run setup again",
        )


def _register_secret_values(kube: Kube, manifest: dict[str, Any]) -> None:
    if manifest.get("kind") != "Secret":
        return
    for value in (manifest.get("stringData") or {}).values():
        kube.add_secret(str(value))
    for value in (manifest.get("data") or {}).values():
        kube.add_secret(str(value))
        try:
            kube.add_secret(base64.b64decode(value).decode())
        except ValueError:
            pass


def ensure(kube: Kube, manifest: dict[str, Any]) -> Applied:
    """Create the object, or patch the fields that differ; report which."""
    ref = ref_of(manifest)
    _register_secret_values(kube, manifest)
    existing = kube.get(ref)
    if existing is None:
        try:
            kube.create(manifest)
            return Applied(ref, "created")
        except AlreadyExists:  # created by someone else between our read and our create
            existing = kube.get(ref) or {}
    if ref.kind == "CustomResourceDefinition":
        check_crd_compatible(existing)
        if not is_managed(existing):  # e.g. installed by the cloud's add-on: not ours to edit
            return Applied(ref, "present")
    for path in IMMUTABLE.get(ref.kind, ()):
        want, have = _dig(manifest, path), _dig(existing, path)
        if want is not None and have is not None and not covers(have, want):
            raise ImmutableField(
                f"{ref} exists with {'.'.join(path)}={have!r}, not {want!r}, and the API server "
                "does not allow changing it",
                hint=f"delete {ref} (kubectl delete {ref.type.plural} {ref.name}"
                + (f" -n {ref.namespace}" if ref.namespace else "")
                + ") or choose another name",
            )
    patch = changes(existing, _patchable(manifest, adopt=not is_managed(existing)))
    if not patch:
        return Applied(ref, "unchanged")
    revert = revert_patch(existing, patch)
    kube.patch(ref, patch)
    return Applied(ref, "patched", revert)


def patch(kube: Kube, ref: ObjectRef, body: dict[str, Any]) -> Applied:
    """Apply a merge patch to an existing object, unless it already says so; keep the undo."""
    existing = kube.get(ref)
    if existing is None:
        raise NotReady(f"{ref} disappeared before it could be patched")
    needed = changes(existing, body)
    if not needed:
        return Applied(ref, "unchanged")
    revert = revert_patch(existing, needed)
    kube.patch(ref, needed)
    return Applied(ref, "patched", revert)


def undo(kube: Kube, applied: Applied) -> str:
    """Remove what ``applied`` created, restore what it patched; say what was done."""
    if applied.action == "created":
        gone = kube.delete(applied.ref)
        return f"deleted {applied.ref}" if gone else f"{applied.ref} was already gone"
    if applied.action == "patched" and applied.revert:
        kube.patch(applied.ref, applied.revert)
        return f"restored {applied.ref}"
    return f"left {applied.ref} as it was"


def remove(kube: Kube, ref: ObjectRef, *, only_managed: bool = True) -> str:
    """Delete an object pgpitr created; someone else's object is left in place."""
    existing = kube.get(ref)
    if existing is None:
        return f"{ref} is not there"
    if only_managed and not is_managed(existing):
        return f"kept {ref}: not created by pgpitr"
    kube.delete(ref)
    return f"deleted {ref}"


# -- readiness -------------------------------------------------------------------------------


def readiness(kube: Kube, obj: dict[str, Any]) -> tuple[bool, str]:
    """Whether the object does its job yet, and a short description of where it stands."""
    kind = obj.get("kind") or ""
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    if kind == "CustomResourceDefinition":
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        return conditions.get("Established") == "True", f"conditions {conditions or 'none yet'}"
    if kind == "Deployment":
        want, ready = spec.get("replicas", 1), status.get("readyReplicas") or 0
        return ready >= want, f"{ready}/{want} replicas ready"
    if kind == "DaemonSet":
        want, ready = status.get("desiredNumberScheduled"), status.get("numberReady") or 0
        if not want:
            return False, "not scheduled on any node yet"
        return ready >= want, f"{ready}/{want} nodes ready"
    if kind == "PersistentVolumeClaim":
        phase = status.get("phase") or "Pending"
        if phase == "Bound":
            return True, "Bound"
        class_name = spec.get("storageClassName")
        sc = (
            kube.get(ObjectRef("storage.k8s.io/v1", "StorageClass", class_name))
            if class_name
            else None
        )
        if phase == "Pending" and sc and sc.get("volumeBindingMode") == "WaitForFirstConsumer":
            return True, "Pending until a pod uses it (WaitForFirstConsumer)"
        return False, phase
    return True, "exists"


def _ready_hint(ref: ObjectRef) -> str:
    ns = f" -n {ref.namespace}" if ref.namespace else ""
    describe = f"kubectl describe {ref.type.plural} {ref.name}{ns}"
    if ref.kind == "PersistentVolumeClaim":
        return f"{describe}: look for provisioning events (for csi-s3: the secret and the bucket)"
    if ref.kind in ("Deployment", "DaemonSet"):
        return f"{describe}; kubectl logs {ref.kind.lower()}/{ref.name}{ns} --all-containers"
    return describe


def wait_ready(
    kube: Kube,
    ref: ObjectRef,
    *,
    timeout: float,
    poll: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> str:
    """Poll until the object is ready; NotReady names where it stopped after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        obj = kube.get(ref)
        if obj is not None:
            obj.setdefault("kind", ref.kind)
            ready, where = readiness(kube, obj)
            if ready:
                return where
        else:
            where = "not found"
        if time.monotonic() >= deadline:
            raise NotReady(
                f"{ref} is not ready after {timeout:g} s: {where}", hint=_ready_hint(ref)
            )
        sleep(min(poll, max(0.0, deadline - time.monotonic())))
