"""Storage classes: the EBS gp3 class, and exactly one default."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgpitr.errors import InvalidInput, NotFound, PitrError
from pgpitr.kubernetes import apply
from pgpitr.kubernetes import manifests as m
from pgpitr.kubernetes.errors import ApiUnavailable, ApiUnreachable
from pgpitr.kubernetes.resources import TYPES, ObjectRef

if TYPE_CHECKING:  # the client library is imported only to talk to a cluster
    from pgpitr.kubernetes.client import Kube

DEFAULT_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
BETA_DEFAULT_ANNOTATION = "storageclass.beta.kubernetes.io/is-default-class"
EBS_DRIVER = "ebs.csi.aws.com"
EBS_TYPES = ("gp3", "gp2", "io1", "io2", "st1", "sc1")
STORAGE_CLASS_TYPE = TYPES["storage.k8s.io/v1", "StorageClass"]
COLUMNS = (
    "NAME",
    "PROVISIONER",
    "RECLAIMPOLICY",
    "VOLUMEBINDINGMODE",
    "ALLOWVOLUMEEXPANSION",
    "DEFAULT",
)


def ref(name: str) -> ObjectRef:
    return ObjectRef("storage.k8s.io/v1", "StorageClass", name)


def ebs_class(
    name: str = "ebs-sc", volume_type: str = "gp3", *, default: bool = True
) -> dict[str, Any]:
    """An EBS CSI class: xfs, bound where the pod lands, expandable."""
    if volume_type not in EBS_TYPES:
        raise InvalidInput(
            f"unknown EBS volume type {volume_type!r}", hint="valid: " + ", ".join(EBS_TYPES)
        )
    annotations = {DEFAULT_ANNOTATION: "true" if default else "false"}
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": m.metadata(name, component="storage", annotations=annotations),
        "provisioner": EBS_DRIVER,
        "parameters": {"type": volume_type, "csi.storage.k8s.io/fstype": "xfs"},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowVolumeExpansion": True,
    }


def is_default(storage_class: dict[str, Any]) -> bool:
    annotations = (storage_class.get("metadata") or {}).get("annotations") or {}
    return any(annotations.get(a) == "true" for a in (DEFAULT_ANNOTATION, BETA_DEFAULT_ANNOTATION))


def demotion_patch(storage_class: dict[str, Any]) -> dict[str, Any]:
    """Set every default annotation the class carries (GA and beta) to "false"."""
    annotations = (storage_class.get("metadata") or {}).get("annotations") or {}
    flags = {
        a: "false"
        for a in (DEFAULT_ANNOTATION, BETA_DEFAULT_ANNOTATION)
        if annotations.get(a) == "true"
    }
    return {"metadata": {"annotations": flags}}


def promotion_patch() -> dict[str, Any]:
    return {"metadata": {"annotations": {DEFAULT_ANNOTATION: "true"}}}


def list_classes(kube: Kube) -> list[dict[str, Any]]:
    return sorted(kube.list(STORAGE_CLASS_TYPE), key=lambda sc: sc["metadata"]["name"])


def rows(classes: list[dict[str, Any]]) -> list[list[str]]:
    return [
        [
            sc["metadata"]["name"],
            sc.get("provisioner", ""),
            sc.get("reclaimPolicy", "Delete"),
            sc.get("volumeBindingMode", "Immediate"),
            str(bool(sc.get("allowVolumeExpansion", False))).lower(),
            "true" if is_default(sc) else "false",
        ]
        for sc in classes
    ]


def promote(kube: Kube, name: str) -> apply.Applied:
    """Make an existing class the default."""
    if kube.get(ref(name)) is None:
        raise NotFound(
            f"storage class {name} does not exist",
            hint=f"create it with: pgpitr storageclass set-default {name} --create gp3",
        )
    return apply.patch(kube, ref(name), promotion_patch())


def demote(kube: Kube, name: str, new_default: str) -> apply.Applied:
    """Mark one other default class as not default; say plainly when that is refused."""
    current = kube.get(ref(name))
    if current is None or not is_default(current):
        return apply.Applied(ref(name), "unchanged")
    try:
        return apply.patch(kube, ref(name), demotion_patch(current))
    except (ApiUnreachable, ApiUnavailable):
        raise
    except PitrError as exc:
        raise type(exc)(
            f"could not demote the default storage class {name}, so {name} and {new_default} "
            f"would both be default: {exc.message}",
            hint=f"kubectl annotate storageclass {name} {DEFAULT_ANNOTATION}=false --overwrite "
            "(needs the 'patch' verb on storageclasses), then run this again",
        ) from None
