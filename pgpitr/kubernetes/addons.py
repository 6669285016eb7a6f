"""The add-ons kbcli users know (snapshot-controller, csi-s3): what they consist of, and their
status as the cluster reports it (never remembered locally)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pgpitr.errors import NotFound
from pgpitr.kubernetes import apply, csi_s3, snapshot
from pgpitr.kubernetes.crds import snapshot_crds
from pgpitr.kubernetes.resources import ObjectRef, ref_of
from pgpitr.kubernetes.settings import CSI_S3_KEYS, SNAPSHOT_KEYS, Key

if TYPE_CHECKING:  # the client library is imported only to talk to a cluster
    from pgpitr.kubernetes.client import Kube

COLUMNS = ("NAME", "TYPE", "STATUS", "EXTRAS", "AUTO-INSTALL")
WORKLOADS = ("Deployment", "DaemonSet")


def _snapshot_objects() -> list[dict[str, Any]]:
    # The platform only changes the class's driver, not which objects exist.
    return snapshot.controller_manifests() + [snapshot.snapshot_class("eks")]


def _csi_s3_objects() -> list[dict[str, Any]]:
    placeholders = csi_s3.secret("-", "-", "-")  # only its name and namespace matter here
    return csi_s3.driver_manifests() + [placeholders, csi_s3.storage_class("-")]


def _snapshot_extras(kube: Kube) -> str:
    vsc = kube.get(ref_of(snapshot.snapshot_class("eks")))
    return f"driver={vsc['driver']}" if vsc and vsc.get("driver") else ""


def _csi_s3_extras(kube: Kube) -> str:
    sc = kube.get(ref_of(csi_s3.storage_class("-")))
    bucket = ((sc or {}).get("parameters") or {}).get("bucket")
    return f"bucket={bucket}" if bucket else ""


@dataclass(frozen=True)
class Addon:
    name: str
    description: str
    keys: tuple[Key, ...]
    objects: Callable[[], list[dict[str, Any]]]
    extras: Callable[[Kube], str]
    crds: Callable[[], list[dict[str, Any]]] = list
    type: str = "Manifest"
    auto_install: bool = False

    def refs(self) -> list[ObjectRef]:
        return [ref_of(o) for o in self.objects()]

    def removal_order(self, *, with_crds: bool) -> list[ObjectRef]:
        """Dependants first: the reverse of the order they are applied in."""
        crds = [ref_of(c) for c in self.crds()] if with_crds else []
        return list(reversed(crds + self.refs()))


ADDONS: dict[str, Addon] = {
    addon.name: addon
    for addon in (
        Addon(
            "snapshot-controller",
            "CSI volume snapshots: CRDs, controller, default class",
            SNAPSHOT_KEYS,
            _snapshot_objects,
            _snapshot_extras,
            crds=snapshot_crds,
        ),
        Addon(
            "csi-s3",
            "S3 buckets as volumes (driver ru.yandex.s3.csi)",
            CSI_S3_KEYS,
            _csi_s3_objects,
            _csi_s3_extras,
        ),
    )
}


def get_addon(name: str) -> Addon:
    try:
        return ADDONS[name]
    except KeyError:
        raise NotFound(f"no add-on named {name!r}", hint="add-ons: " + ", ".join(ADDONS)) from None


def status(kube: Kube, addon: Addon) -> str:
    """Enabled, Disabled, NotReady (all there, a workload not ready) or Partial (some missing)."""
    found = {ref: kube.get(ref) for ref in addon.refs()}
    present = [obj for obj in found.values() if obj is not None]
    if not present:
        return "Disabled"
    if len(present) < len(found):
        return "Partial"
    for ref, obj in found.items():
        if ref.kind in WORKLOADS and obj is not None:
            obj.setdefault("kind", ref.kind)
            if not apply.readiness(kube, obj)[0]:
                return "NotReady"
    return "Enabled"


def list_rows(kube: Kube) -> list[list[str]]:
    return [
        [a.name, a.type, status(kube, a), a.extras(kube), str(a.auto_install).lower()]
        for a in ADDONS.values()
    ]
