"""The kinds pgpitr manages, and how an object of each is addressed on the API server.

A small explicit table instead of API discovery: setup touches a fixed set of kinds, and knowing
them up front means no discovery round trips and a clear error for a kind we do not handle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pgpitr.errors import InvalidInput


@dataclass(frozen=True)
class ResourceType:
    api_version: str  # "v1", "apps/v1", ...
    kind: str
    plural: str
    namespaced: bool

    @property
    def group(self) -> str:
        return self.api_version.rpartition("/")[0]

    @property
    def qualified_plural(self) -> str:
        """``customresourcedefinitions.apiextensions.k8s.io``: the name RBAC and kubectl use."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/apis/{self.api_version}" if self.group else f"/api/{self.api_version}"
        if self.namespaced and namespace:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        return f"{base}/{name}" if name else base


_TYPES = [
    ResourceType("v1", "Namespace", "namespaces", False),
    ResourceType("v1", "Node", "nodes", False),
    ResourceType("v1", "Secret", "secrets", True),
    ResourceType("v1", "ConfigMap", "configmaps", True),
    ResourceType("v1", "ServiceAccount", "serviceaccounts", True),
    ResourceType("v1", "PersistentVolumeClaim", "persistentvolumeclaims", True),
    ResourceType("apps/v1", "Deployment", "deployments", True),
    ResourceType("apps/v1", "DaemonSet", "daemonsets", True),
    ResourceType("rbac.authorization.k8s.io/v1", "ClusterRole", "clusterroles", False),
    ResourceType(
        "rbac.authorization.k8s.io/v1", "ClusterRoleBinding", "clusterrolebindings", False
    ),
    ResourceType("rbac.authorization.k8s.io/v1", "Role", "roles", True),
    ResourceType("rbac.authorization.k8s.io/v1", "RoleBinding", "rolebindings", True),
    ResourceType("storage.k8s.io/v1", "StorageClass", "storageclasses", False),
    ResourceType("storage.k8s.io/v1", "CSIDriver", "csidrivers", False),
    ResourceType(
        "apiextensions.k8s.io/v1", "CustomResourceDefinition", "customresourcedefinitions", False
    ),
    ResourceType(
        "snapshot.storage.k8s.io/v1", "VolumeSnapshotClass", "volumesnapshotclasses", False
    ),
    ResourceType("snapshot.storage.k8s.io/v1", "VolumeSnapshot", "volumesnapshots", True),
    ResourceType(
        "snapshot.storage.k8s.io/v1", "VolumeSnapshotContent", "volumesnapshotcontents", False
    ),
]
TYPES: dict[tuple[str, str], ResourceType] = {(t.api_version, t.kind): t for t in _TYPES}


def resource_type(api_version: str, kind: str) -> ResourceType:
    try:
        return TYPES[api_version, kind]
    except KeyError:
        known = ", ".join(sorted(f"{k} ({v})" for v, k in TYPES))
        raise InvalidInput(
            f"pgpitr does not manage {kind} ({api_version}); it knows {known}"
        ) from None


@dataclass(frozen=True)
class ObjectRef:
    """Which object: enough to read, patch or delete it, and to name it in a message."""

    api_version: str
    kind: str
    name: str
    namespace: str | None = None

    @property
    def type(self) -> ResourceType:
        return resource_type(self.api_version, self.kind)

    @property
    def path(self) -> str:
        return self.type.path(self.namespace, self.name)

    def __str__(self) -> str:
        where = f"{self.namespace}/" if self.namespace else ""
        return f"{self.kind} {where}{self.name}"

    def as_dict(self) -> dict[str, str | None]:
        return {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "name": self.name,
            "namespace": self.namespace,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ObjectRef:
        return cls(data["apiVersion"], data["kind"], data["name"], data.get("namespace"))


def ref_of(manifest: dict[str, Any]) -> ObjectRef:
    meta = manifest.get("metadata") or {}
    rtype = resource_type(manifest["apiVersion"], manifest["kind"])
    namespace = meta.get("namespace") if rtype.namespaced else None
    if rtype.namespaced and not namespace:
        raise InvalidInput(f"{manifest['kind']} {meta.get('name')} needs a namespace")
    return ObjectRef(manifest["apiVersion"], manifest["kind"], meta["name"], namespace)
