"""The csi-s3 add-on (k8s-csi-s3, driver ``ru.yandex.s3.csi``): S3 buckets as volumes.

The StorageClass names its Secret's namespace for every CSI operation, and the Secret is created
in exactly that namespace: the classic "csi-s3-secret not found" trap cannot happen by
construction.
"""

from __future__ import annotations

import base64
from typing import Any

from pgpitr.kubernetes import manifests as m

DRIVER = "ru.yandex.s3.csi"
NAMESPACE = "kube-system"
STORAGE_CLASS = "csi-s3"
SECRET = "csi-s3-secret"
COMPONENT = "csi-s3"
IMAGE = "cr.yandex/crp9ftr22d26age3hulg/csi-s3:0.43.0"
REGISTRAR_IMAGE = "registry.k8s.io/sig-storage/csi-node-driver-registrar:v2.12.0"
PROVISIONER_IMAGE = "registry.k8s.io/sig-storage/csi-provisioner:v5.1.0"
PLUGIN_DIR = f"/var/lib/kubelet/plugins/{DRIVER}"
SECRET_KEYS = ("accessKeyID", "secretAccessKey", "endpoint", "region")


def _b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


def secret(
    access_key: str, secret_key: str, endpoint: str, region: str = "", namespace: str = NAMESPACE
) -> dict[str, Any]:
    """The credentials Secret; ``data`` (base64) so that the stored object compares equal."""
    values = {
        "accessKeyID": access_key,
        "secretAccessKey": secret_key,
        "endpoint": endpoint,
        "region": region,
    }
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": m.metadata(SECRET, namespace, component=COMPONENT),
        "type": "Opaque",
        "data": {key: _b64(value) for key, value in values.items()},
    }


def storage_class(
    bucket: str, namespace: str = NAMESPACE, name: str = STORAGE_CLASS
) -> dict[str, Any]:
    parameters = {
        "mounter": "geesefs",
        "options": "--memory-limit 1000 --dir-mode 0777 --file-mode 0666",
        "bucket": bucket,
    }
    for step in ("provisioner", "controller-publish", "node-stage", "node-publish"):
        parameters[f"csi.storage.k8s.io/{step}-secret-name"] = SECRET
        parameters[f"csi.storage.k8s.io/{step}-secret-namespace"] = namespace
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": m.metadata(name, component=COMPONENT),
        "provisioner": DRIVER,
        "parameters": parameters,
        "reclaimPolicy": "Retain",  # deleting a PVC must never delete the backups in the bucket
        "volumeBindingMode": "Immediate",
        "allowVolumeExpansion": True,
    }


def _host_path(name: str, path: str, kind: str = "DirectoryOrCreate") -> dict[str, Any]:
    return {"name": name, "hostPath": {"path": path, "type": kind}}


def _driver_container(
    args: list[str], mounts: list[dict[str, Any]], env: list[dict[str, Any]], privileged: bool
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "csi-s3",
        "image": IMAGE,
        "args": args,
        "env": env,
        "volumeMounts": mounts,
        "resources": {"requests": {"cpu": "10m", "memory": "64Mi"}},
    }
    if privileged:
        container["securityContext"] = {
            "privileged": True,
            "allowPrivilegeEscalation": True,
            "capabilities": {"add": ["SYS_ADMIN"]},
        }
    return container


def node_plugin(namespace: str = NAMESPACE) -> dict[str, Any]:
    """The DaemonSet that mounts buckets on every node (FUSE, hence privileged)."""
    node_id = {"name": "NODE_ID", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    endpoint = {"name": "CSI_ENDPOINT", "value": "unix:///csi/csi.sock"}
    mounts = [
        {"name": "plugin-dir", "mountPath": "/csi"},
        {
            "name": "stage-dir",
            "mountPath": "/var/lib/kubelet/plugins/kubernetes.io/csi",
            "mountPropagation": "Bidirectional",
        },
        {
            "name": "pods-mount-dir",
            "mountPath": "/var/lib/kubelet/pods",
            "mountPropagation": "Bidirectional",
        },
        {"name": "fuse-device", "mountPath": "/dev/fuse"},
        {"name": "systemd-control", "mountPath": "/run/systemd"},
    ]
    registrar = {
        "name": "driver-registrar",
        "image": REGISTRAR_IMAGE,
        "args": [
            "--v=4",
            "--csi-address=/csi/csi.sock",
            f"--kubelet-registration-path={PLUGIN_DIR}/csi.sock",
        ],
        "volumeMounts": [
            {"name": "plugin-dir", "mountPath": "/csi"},
            {"name": "registration-dir", "mountPath": "/registration/"},
        ],
    }
    selector = {"app.kubernetes.io/name": "csi-s3"}
    return {
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": m.metadata("csi-s3", namespace, component=COMPONENT),
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": dict(selector)},
                "spec": {
                    "serviceAccountName": "csi-s3",
                    "hostNetwork": True,
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [
                        registrar,
                        _driver_container(
                            ["--endpoint=$(CSI_ENDPOINT)", "--nodeid=$(NODE_ID)", "--v=4"],
                            mounts,
                            [endpoint, node_id],
                            privileged=True,
                        ),
                    ],
                    "volumes": [
                        _host_path(
                            "registration-dir", "/var/lib/kubelet/plugins_registry/", "Directory"
                        ),
                        _host_path("plugin-dir", PLUGIN_DIR),
                        _host_path("stage-dir", "/var/lib/kubelet/plugins/kubernetes.io/csi"),
                        _host_path("pods-mount-dir", "/var/lib/kubelet/pods", "Directory"),
                        _host_path("fuse-device", "/dev/fuse", "CharDevice"),
                        _host_path("systemd-control", "/run/systemd", "Directory"),
                    ],
                },
            },
        },
    }


def provisioner(namespace: str = NAMESPACE) -> dict[str, Any]:
    """The Deployment that creates and deletes bucket prefixes for PVCs."""
    node_name = {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}}
    socket = [{"name": "socket-dir", "mountPath": PLUGIN_DIR}]
    selector = {"app.kubernetes.io/name": "csi-provisioner-s3"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": m.metadata("csi-provisioner-s3", namespace, component=COMPONENT),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": dict(selector)},
                "spec": {
                    "serviceAccountName": "csi-provisioner-sa",
                    "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"}],
                    "containers": [
                        {
                            "name": "csi-provisioner",
                            "image": PROVISIONER_IMAGE,
                            "args": ["--csi-address=$(ADDRESS)", "--v=4"],
                            "env": [{"name": "ADDRESS", "value": f"{PLUGIN_DIR}/csi.sock"}],
                            "volumeMounts": socket,
                        },
                        _driver_container(
                            ["--endpoint=$(CSI_ENDPOINT)", "--nodeid=$(NODE_NAME)", "--v=4"],
                            socket,
                            [
                                {"name": "CSI_ENDPOINT", "value": f"unix://{PLUGIN_DIR}/csi.sock"},
                                node_name,
                            ],
                            privileged=False,
                        ),
                    ],
                    "volumes": [{"name": "socket-dir", "emptyDir": {}}],
                },
            },
        },
    }


def driver_manifests(namespace: str = NAMESPACE) -> list[dict[str, Any]]:
    """CSIDriver, service accounts, RBAC and the two workloads."""
    csi_driver = {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "CSIDriver",
        "metadata": m.metadata(DRIVER, component=COMPONENT),
        "spec": {"attachRequired": False, "podInfoOnMount": True},
    }
    node_rules = [
        m.rule([""], ["secrets"], ["get", "list"]),
        m.rule([""], ["nodes"], ["get", "list", "update"]),
        m.rule([""], ["namespaces"], ["get", "list"]),
        m.rule([""], ["persistentvolumes"], ["get", "list", "watch", "update"]),
        m.rule(["storage.k8s.io"], ["volumeattachments"], ["get", "list", "watch", "update"]),
    ]
    provisioner_rules = [
        m.rule([""], ["secrets"], ["get", "list"]),
        m.rule([""], ["persistentvolumes"], ["get", "list", "watch", "create", "delete"]),
        m.rule([""], ["persistentvolumeclaims"], ["get", "list", "watch", "update"]),
        m.rule(["storage.k8s.io"], ["storageclasses"], ["get", "list", "watch"]),
        m.rule([""], ["events"], ["list", "watch", "create", "update", "patch"]),
    ]
    return [
        csi_driver,
        m.service_account("csi-s3", namespace, COMPONENT),
        m.cluster_role("csi-s3", COMPONENT, node_rules),
        m.cluster_role_binding("csi-s3", COMPONENT, "csi-s3", "csi-s3", namespace),
        m.service_account("csi-provisioner-sa", namespace, COMPONENT),
        m.cluster_role("csi-s3-external-provisioner-runner", COMPONENT, provisioner_rules),
        m.cluster_role_binding(
            "csi-s3-provisioner-role",
            COMPONENT,
            "csi-s3-external-provisioner-runner",
            "csi-provisioner-sa",
            namespace,
        ),
        node_plugin(namespace),
        provisioner(namespace),
    ]
