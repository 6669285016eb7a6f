"""Data-protection settings, kept in the cluster (ConfigMap ``pgpitr-config``), and the backup PVC.

The cluster is the source of truth: every command reads the ConfigMap, nothing is cached locally.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pgpitr.errors import NotFound
from pgpitr.kubernetes import manifests as m
from pgpitr.kubernetes.resources import ObjectRef

if TYPE_CHECKING:  # the client library is imported only to talk to a cluster
    from pgpitr.kubernetes.client import Kube

NAMESPACE = "pgpitr-system"
CONFIG_MAP = "pgpitr-config"
COMPONENT = "data-protection"
PREFIX = "dataProtection."
SNAPSHOT_CRD = "volumesnapshots.snapshot.storage.k8s.io"


def config_ref(namespace: str = NAMESPACE) -> ObjectRef:
    return ObjectRef("v1", "ConfigMap", CONFIG_MAP, namespace)


def namespace_manifest(namespace: str = NAMESPACE) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": m.metadata(namespace, component=COMPONENT),
    }


def config_map(settings: Mapping[str, str], namespace: str = NAMESPACE) -> dict[str, Any]:
    """Only the keys given: a merge patch then changes those and keeps the others."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": m.metadata(CONFIG_MAP, namespace, component=COMPONENT),
        "data": {k: str(v) for k, v in settings.items() if k.startswith(PREFIX)},
    }


def read_config(kube: Kube, namespace: str = NAMESPACE) -> dict[str, str]:
    found = kube.get(config_ref(namespace))
    return dict((found or {}).get("data") or {})


def backup_pvc(settings: Mapping[str, str], namespace: str = NAMESPACE) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": m.metadata(
            settings["dataProtection.backupPVCName"], namespace, component=COMPONENT
        ),
        "spec": {
            # Every backup job, on any node, writes into the same bucket-backed volume.
            "accessModes": ["ReadWriteMany"],
            "storageClassName": settings["dataProtection.backupPVCStorageClassName"],
            "resources": {
                "requests": {"storage": settings["dataProtection.backupPVCInitCapacity"]}
            },
        },
    }


def check_prerequisites(kube: Kube, settings: Mapping[str, str]) -> None:
    """What the settings rely on must exist before anything is written."""
    class_name = settings["dataProtection.backupPVCStorageClassName"]
    if kube.get(ObjectRef("storage.k8s.io/v1", "StorageClass", class_name)) is None:
        hint = (
            "enable it: pgpitr addon enable csi-s3 --set "
            "secret.endpoint=…,storageClass.singleBucket=…"
            if class_name == "csi-s3"
            else f"create storage class {class_name}, or pick another"
        )
        raise NotFound(f"storage class {class_name} for the backup PVC does not exist", hint=hint)
    if settings.get("dataProtection.enableVolumeSnapshot") == "true":
        crd = ObjectRef("apiextensions.k8s.io/v1", "CustomResourceDefinition", SNAPSHOT_CRD)
        if kube.get(crd) is None:
            raise NotFound(
                "volume snapshots are enabled but this cluster has no VolumeSnapshot CRD",
                hint="pgpitr addon enable snapshot-controller",
            )
