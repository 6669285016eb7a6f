"""The snapshot-controller add-on: CRDs, controller, RBAC and a default VolumeSnapshotClass."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pgpitr.errors import InvalidInput
from pgpitr.kubernetes import manifests as m
from pgpitr.kubernetes.crds import COMPONENT

NAMESPACE = "kube-system"
NAME = "snapshot-controller"
IMAGE = "registry.k8s.io/sig-storage/snapshot-controller:v8.2.0"
SNAPSHOT_CLASS = "default-vsc"
DEFAULT_CLASS_ANNOTATION = "snapshot.storage.kubernetes.io/is-default-class"

PLATFORM_DRIVERS = {
    "eks": "ebs.csi.aws.com",
    "gke": "pd.csi.storage.gke.io",
    "ack": "diskplugin.csi.alibabacloud.com",
    "aks": "disk.csi.azure.com",
}

# What each cloud writes into spec.providerID, and the node labels its node pools carry.
_PROVIDER_IDS = [
    ("eks", re.compile(r"^aws://")),
    ("gke", re.compile(r"^gce://")),
    ("aks", re.compile(r"^azure://")),
    ("ack", re.compile(r"^(alicloud://|[a-z]{2}-[a-z]+(-\d+)?\.i-)")),
]
_NODE_LABELS = [
    ("eks", "eks.amazonaws.com/nodegroup"),
    ("gke", "cloud.google.com/gke-nodepool"),
    ("aks", "kubernetes.azure.com/cluster"),
    ("ack", "alibabacloud.com/nodepool-id"),
]


def detect_platform(nodes: Iterable[dict[str, Any]]) -> str:
    """eks, gke, ack or aks, from the nodes' provider IDs (or node-pool labels)."""
    seen: list[str] = []
    for node in nodes:
        provider_id = (node.get("spec") or {}).get("providerID") or ""
        labels = (node.get("metadata") or {}).get("labels") or {}
        for platform, pattern in _PROVIDER_IDS:
            if pattern.match(provider_id):
                return platform
        for platform, label in _NODE_LABELS:
            if label in labels:
                return platform
        seen.append(provider_id or "(no providerID)")
    shown = ", ".join(sorted(set(seen))[:3]) or "no nodes"
    raise InvalidInput(
        f"cannot tell the platform from the nodes' provider IDs ({shown})",
        hint=f"pass --platform {'|'.join(PLATFORM_DRIVERS)} "
        f"(or --set platform={'|'.join(PLATFORM_DRIVERS)})",
    )


def driver_for(platform: str) -> str:
    try:
        return PLATFORM_DRIVERS[platform]
    except KeyError:
        raise InvalidInput(
            f"unknown platform {platform!r}", hint="valid: " + ", ".join(PLATFORM_DRIVERS)
        ) from None


def controller_manifests(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """ServiceAccount, RBAC and the controller Deployment (two replicas, leader election)."""
    snap = "snapshot.storage.k8s.io"
    rules = [
        m.rule([""], ["persistentvolumes"], ["get", "list", "watch"]),
        m.rule([""], ["persistentvolumeclaims"], ["get", "list", "watch", "update"]),
        m.rule([""], ["events"], ["list", "watch", "create", "update", "patch"]),
        m.rule([snap], ["volumesnapshotclasses"], ["get", "list", "watch"]),
        m.rule(
            [snap],
            ["volumesnapshotcontents"],
            ["create", "get", "list", "watch", "update", "delete", "patch"],
        ),
        m.rule([snap], ["volumesnapshotcontents/status"], ["patch"]),
        m.rule([snap], ["volumesnapshots"], ["get", "list", "watch", "update", "patch"]),
        m.rule([snap], ["volumesnapshots/status"], ["update", "patch"]),
    ]
    leases = [
        m.rule(
            ["coordination.k8s.io"],
            ["leases"],
            ["get", "watch", "list", "delete", "update", "create"],
        )
    ]
    selector = {"app.kubernetes.io/name": NAME}
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": m.metadata(NAME, namespace, component=COMPONENT),
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": selector},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": dict(selector)},
                "spec": {
                    "serviceAccountName": NAME,
                    "priorityClassName": "system-cluster-critical",
                    "containers": [
                        {
                            "name": NAME,
                            "image": IMAGE,
                            "args": [
                                "--v=2",
                                "--leader-election=true",
                                f"--leader-election-namespace={namespace}",
                            ],
                            "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}},
                        }
                    ],
                },
            },
        },
    }
    return [
        m.service_account(NAME, namespace, COMPONENT),
        m.cluster_role(f"{NAME}-runner", COMPONENT, rules),
        m.cluster_role_binding(f"{NAME}-role", COMPONENT, f"{NAME}-runner", NAME, namespace),
        m.role(f"{NAME}-leaderelection", namespace, COMPONENT, leases),
        m.role_binding(
            f"{NAME}-leaderelection", namespace, COMPONENT, f"{NAME}-leaderelection", NAME
        ),
        deployment,
    ]


def snapshot_class(platform: str, name: str = SNAPSHOT_CLASS) -> dict[str, Any]:
    """The default VolumeSnapshotClass for the platform's block-storage CSI driver."""
    return {
        "apiVersion": "snapshot.storage.k8s.io/v1",
        "kind": "VolumeSnapshotClass",
        "metadata": m.metadata(
            name, component=COMPONENT, annotations={DEFAULT_CLASS_ANNOTATION: "true"}
        ),
        "driver": driver_for(platform),
        "deletionPolicy": "Delete",
    }
