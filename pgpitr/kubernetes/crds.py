"""The three ``snapshot.storage.k8s.io/v1`` CustomResourceDefinitions, as data.

Modelled on the external-snapshotter v8 CRDs: the same names, scope, printer columns, status
subresource and required fields, with the OpenAPI schemas reduced to the structure (types and
required keys) that the API server needs to store and validate objects.
"""

from __future__ import annotations

from typing import Any

from pgpitr.kubernetes.manifests import metadata

GROUP = "snapshot.storage.k8s.io"
VERSION = "v1"
COMPONENT = "snapshot-controller"
# The API server flags CRDs in *.k8s.io groups that lack an approval link; this is upstream's.
APPROVAL = {
    "api-approved.kubernetes.io": "https://github.com/kubernetes-csi/external-snapshotter/pull/814"
}


def _obj(
    properties: dict[str, Any], required: list[str] | None = None, **extra: Any
) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_INT64 = {"type": "integer", "format": "int64"}
_TIME = {"type": "string", "format": "date-time"}
_QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True}
_ERROR = _obj({"message": _STR, "time": _TIME})
_POLICY = {"type": "string", "enum": ["Delete", "Retain"]}


def _column(
    name: str, path: str, kind: str = "string", priority: int | None = None
) -> dict[str, Any]:
    column: dict[str, Any] = {"name": name, "type": kind, "jsonPath": path}
    if priority is not None:
        column["priority"] = priority
    return column


def _crd(
    kind: str,
    plural: str,
    scope: str,
    schema: dict[str, Any],
    columns: list[dict[str, Any]],
    short_names: list[str],
    status: bool,
) -> dict[str, Any]:
    version: dict[str, Any] = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": schema},
        "additionalPrinterColumns": columns
        + [_column("Age", ".metadata.creationTimestamp", "date")],
    }
    if status:
        version["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": metadata(f"{plural}.{GROUP}", component=COMPONENT, annotations=APPROVAL),
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": kind.lower(),
                "shortNames": short_names,
            },
            "scope": scope,
            "versions": [version],
        },
    }


def _envelope(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    base = {"apiVersion": _STR, "kind": _STR, "metadata": {"type": "object"}}
    return _obj({**base, **properties}, required)


def volume_snapshot_class() -> dict[str, Any]:
    schema = _envelope(
        {
            "driver": _STR,
            "deletionPolicy": _POLICY,
            "parameters": {"type": "object", "additionalProperties": _STR},
        },
        ["deletionPolicy", "driver"],
    )
    columns = [_column("Driver", ".driver"), _column("DeletionPolicy", ".deletionPolicy")]
    return _crd(
        "VolumeSnapshotClass",
        "volumesnapshotclasses",
        "Cluster",
        schema,
        columns,
        ["vsclass", "vsclasses"],
        status=False,
    )


def volume_snapshot() -> dict[str, Any]:
    source = _obj({"persistentVolumeClaimName": _STR, "volumeSnapshotContentName": _STR})
    spec = _obj({"source": source, "volumeSnapshotClassName": _STR}, ["source"])
    status = _obj(
        {
            "boundVolumeSnapshotContentName": _STR,
            "creationTime": _TIME,
            "readyToUse": _BOOL,
            "restoreSize": _QUANTITY,
            "error": _ERROR,
            "volumeGroupSnapshotName": _STR,
        }
    )
    columns = [
        _column("ReadyToUse", ".status.readyToUse", "boolean"),
        _column("SourcePVC", ".spec.source.persistentVolumeClaimName"),
        _column("SourceSnapshotContent", ".spec.source.volumeSnapshotContentName"),
        _column("RestoreSize", ".status.restoreSize"),
        _column("SnapshotClass", ".spec.volumeSnapshotClassName"),
        _column("SnapshotContent", ".status.boundVolumeSnapshotContentName"),
        _column("CreationTime", ".status.creationTime", "date"),
    ]
    schema = _envelope({"spec": spec, "status": status}, ["spec"])
    return _crd(
        "VolumeSnapshot", "volumesnapshots", "Namespaced", schema, columns, ["vs"], status=True
    )


def volume_snapshot_content() -> dict[str, Any]:
    ref = _obj(
        {
            k: _STR
            for k in (
                "apiVersion",
                "kind",
                "name",
                "namespace",
                "uid",
                "resourceVersion",
                "fieldPath",
            )
        }
    )
    source = _obj({"snapshotHandle": _STR, "volumeHandle": _STR})
    spec = _obj(
        {
            "deletionPolicy": _POLICY,
            "driver": _STR,
            "source": source,
            "sourceVolumeMode": _STR,
            "volumeSnapshotClassName": _STR,
            "volumeSnapshotRef": ref,
        },
        ["deletionPolicy", "driver", "source", "volumeSnapshotRef"],
    )
    status = _obj(
        {
            "creationTime": _INT64,
            "error": _ERROR,
            "readyToUse": _BOOL,
            "restoreSize": {"type": "integer", "format": "int64", "minimum": 0},
            "snapshotHandle": _STR,
            "volumeGroupSnapshotHandle": _STR,
        }
    )
    columns = [
        _column("ReadyToUse", ".status.readyToUse", "boolean"),
        _column("RestoreSize", ".status.restoreSize", "integer"),
        _column("DeletionPolicy", ".spec.deletionPolicy"),
        _column("Driver", ".spec.driver"),
        _column("VolumeSnapshotClass", ".spec.volumeSnapshotClassName"),
        _column("VolumeSnapshot", ".spec.volumeSnapshotRef.name"),
        _column("VolumeSnapshotNamespace", ".spec.volumeSnapshotRef.namespace"),
    ]
    schema = _envelope({"spec": spec, "status": status}, ["spec"])
    return _crd(
        "VolumeSnapshotContent",
        "volumesnapshotcontents",
        "Cluster",
        schema,
        columns,
        ["vsc", "vscs"],
        status=True,
    )


def snapshot_crds() -> list[dict[str, Any]]:
    return [volume_snapshot_class(), volume_snapshot_content(), volume_snapshot()]
