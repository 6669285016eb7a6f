"""The setup flows, run for real under Prefect against the API emulator."""

from __future__ import annotations

import base64

import pytest
from conftest import ACCESS_KEY, S3_SETTINGS, SECRET_KEY, storage_class
from k8s_emulator import ApiEmulator

from pgpitr.errors import InvalidInput, KubernetesError
from pgpitr.kubernetes.apply import MANAGED_BY_LABEL
from pgpitr.kubernetes.errors import ApiForbidden, CrdIncompatible, NotReady
from pgpitr.kubernetes.storageclass import DEFAULT_ANNOTATION

SC = "storage.k8s.io/v1/storageclasses"
CRD = "apiextensions.k8s.io/v1/customresourcedefinitions"
FAST = {"poll_interval": 0.02, "wait_timeout": 5.0}


def defaults(cluster: ApiEmulator) -> list[str]:
    found = []
    for name in sorted(cluster.names(SC)):
        annotations = cluster.stored(SC, None, name)["metadata"].get("annotations") or {}
        if "true" in (
            annotations.get(DEFAULT_ANNOTATION),
            annotations.get("storageclass.beta.kubernetes.io/is-default-class"),
        ):
            found.append(name)
    return found


def managed(cluster: ApiEmulator) -> list[str]:
    """Every object that carries pgpitr's label."""
    return sorted(
        f"{key[0].plural}/{key[2]}"
        for key, obj in cluster.objects.items()
        if not obj.deleted
        and (obj.raw.get("metadata") or {}).get("labels", {}).get(MANAGED_BY_LABEL)
    )


def test_full_setup_from_empty_then_again_without_change(
    eks: ApiEmulator, s3_credentials: None, setup_flows
) -> None:
    result = setup_flows.setup(settings=dict(S3_SETTINGS), **FAST)

    actions = {(r["kind"], r["name"]): r["action"] for r in result["applied"]}
    assert actions.pop(("StorageClass", "gp2")) == "patched"
    assert set(actions.values()) == {"created"}
    assert len(actions) == 25
    # snapshot-controller, with the class for the platform detected from the nodes
    assert eks.names(CRD) == {
        f"{p}.snapshot.storage.k8s.io"
        for p in ("volumesnapshots", "volumesnapshotclasses", "volumesnapshotcontents")
    }
    assert eks.stored("apps/v1/deployments", "kube-system", "snapshot-controller")
    vsc = eks.stored("snapshot.storage.k8s.io/v1/volumesnapshotclasses", None, "default-vsc")
    assert vsc["driver"] == "ebs.csi.aws.com"
    # exactly one default: the new gp3 class
    assert defaults(eks) == ["ebs-sc"]
    ebs = eks.stored(SC, None, "ebs-sc")
    assert ebs["parameters"] == {"type": "gp3", "csi.storage.k8s.io/fstype": "xfs"}
    assert ebs["volumeBindingMode"] == "WaitForFirstConsumer" and ebs["allowVolumeExpansion"]
    # csi-s3: the secret in the namespace its class names, the single bucket, Retain
    secret = eks.stored("v1/secrets", "kube-system", "csi-s3-secret")
    assert base64.b64decode(secret["data"]["secretAccessKey"]).decode() == SECRET_KEY
    csi = eks.stored(SC, None, "csi-s3")
    assert csi["provisioner"] == "ru.yandex.s3.csi" and csi["reclaimPolicy"] == "Retain"
    assert csi["parameters"]["bucket"] == "demo"
    assert csi["parameters"]["csi.storage.k8s.io/node-publish-secret-namespace"] == "kube-system"
    # data protection: settings in the cluster, the PVC on csi-s3
    config = eks.stored("v1/configmaps", "pgpitr-system", "pgpitr-config")
    assert config["data"]["dataProtection.backupPVCName"] == "backup-data"
    pvc = eks.stored("v1/persistentvolumeclaims", "pgpitr-system", "backup-data")
    assert pvc["spec"]["storageClassName"] == "csi-s3"

    # Every step can run twice: the second run reads, finds everything in place, writes nothing.
    before = len(eks.changing_requests())
    again = setup_flows.setup(settings=dict(S3_SETTINGS), **FAST)
    assert {r["action"] for r in again["applied"]} == {"unchanged"}
    assert eks.changing_requests()[before:] == []
    assert defaults(eks) == ["ebs-sc"]


def test_failure_at_csi_s3_rolls_back_only_this_run(
    eks: ApiEmulator, s3_credentials: None, setup_flows
) -> None:
    # Someone else installed the VolumeSnapshotClass CRD and the controller's ServiceAccount.
    theirs_crd = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "volumesnapshotclasses.snapshot.storage.k8s.io"},
        "spec": {"group": "snapshot.storage.k8s.io",
                 "versions": [{"name": "v1", "served": True, "storage": True}]},
        "status": {"conditions": [{"type": "Established", "status": "True"}]},
    }  # fmt: skip
    eks.put(CRD, None, theirs_crd["metadata"]["name"], theirs_crd)
    theirs_sa = {
        "apiVersion": "v1", "kind": "ServiceAccount",
        "metadata": {"name": "snapshot-controller", "namespace": "kube-system"},
    }  # fmt: skip
    eks.put("v1/serviceaccounts", "kube-system", "snapshot-controller", theirs_sa)
    eks.fail("POST", "daemonsets", status=403)

    with pytest.raises(
        ApiForbidden, match="may not create daemonsets.apps/csi-s3 in namespace kube-system"
    ):
        setup_flows.setup(settings=dict(S3_SETTINGS), **FAST)

    assert managed(eks) == []  # everything this run created is gone
    assert eks.stored(CRD, None, theirs_crd["metadata"]["name"]) == theirs_crd
    assert eks.stored("v1/serviceaccounts", "kube-system", "snapshot-controller") == theirs_sa
    assert eks.names(SC) == {"gp2"} and defaults(eks) == ["gp2"]  # the demotion was undone
    assert eks.stored("v1/secrets", "kube-system", "csi-s3-secret") is None


def test_default_class_with_two_defaults(eks: ApiEmulator, setup_flows) -> None:
    eks.put(SC, None, "standard", storage_class("standard", beta=True))
    eks.put(SC, None, "io1", storage_class("io1", default=False))
    assert defaults(eks) == ["gp2", "standard"]

    result = setup_flows.set_default_storage_class(name="ebs-sc", create="gp3")

    assert defaults(eks) == ["ebs-sc"]
    beta = eks.stored(SC, None, "standard")["metadata"]["annotations"]
    assert beta == {"storageclass.beta.kubernetes.io/is-default-class": "false"}
    assert sorted(r["name"] for r in result["applied"] if r["action"] == "patched") == [
        "gp2", "standard"
    ]  # fmt: skip
    assert eks.stored(SC, None, "io1")["metadata"]["annotations"][DEFAULT_ANNOTATION] == "false"


def test_default_class_that_cannot_be_patched(eks: ApiEmulator, setup_flows) -> None:
    eks.fail("PATCH", "storageclasses", name="gp2", status=403)

    with pytest.raises(KubernetesError) as failure:
        setup_flows.set_default_storage_class(name="ebs-sc", create="gp3")

    message = str(failure.value)
    assert "could not demote the default storage class gp2" in message
    assert "may not patch storageclasses.storage.k8s.io/gp2" in message
    assert "kubectl annotate storageclass gp2" in message
    assert eks.names(SC) == {"gp2"} and defaults(eks) == ["gp2"]  # ebs-sc rolled back


def test_incompatible_crd_stops_before_any_change(eks: ApiEmulator, setup_flows) -> None:
    old = {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "volumesnapshots.snapshot.storage.k8s.io"},
        "spec": {"versions": [{"name": "v1beta1", "served": True, "storage": True}]},
    }  # fmt: skip
    eks.put(CRD, None, old["metadata"]["name"], old)

    with pytest.raises(CrdIncompatible, match=r"serving \['v1beta1'\].*need v1"):
        setup_flows.enable_addon(name="snapshot-controller", settings={"platform": "eks"})

    assert eks.changing_requests() == []


def test_stuck_pvc_times_out_with_a_hint(eks: ApiEmulator, setup_flows) -> None:
    eks.put(SC, None, "csi-s3", {**storage_class("csi-s3", default=False),
                                 "volumeBindingMode": "Immediate"})  # fmt: skip
    eks.held_back.add("persistentvolumeclaims")

    with pytest.raises(NotReady, match="backup-data is not ready after 0.2 s: Pending") as failure:
        setup_flows.configure(
            settings={"dataProtection.backupPVCName": "backup-data"},
            wait_timeout=0.2, poll_interval=0.05,
        )  # fmt: skip

    assert "kubectl describe persistentvolumeclaims backup-data -n pgpitr-system" in str(
        failure.value
    )
    assert managed(eks) == []


def test_transient_error_is_retried(eks: ApiEmulator, setup_flows) -> None:
    eks.put(SC, None, "csi-s3", storage_class("csi-s3", default=False))
    eks.fail("POST", "configmaps", status=503, times=1)

    setup_flows.configure(settings={"dataProtection.enableVolumeSnapshot": "false"}, **FAST)

    config = eks.stored("v1/configmaps", "pgpitr-system", "pgpitr-config")
    assert config["data"] == {"dataProtection.enableVolumeSnapshot": "false"}


def test_secret_settings_are_refused_as_flow_parameters(cluster: ApiEmulator, setup_flows) -> None:
    with pytest.raises(InvalidInput, match="must not be flow parameters") as failure:
        setup_flows.enable_addon(
            name="csi-s3", settings={**S3_SETTINGS, "secret.accessKey": ACCESS_KEY}
        )
    assert ACCESS_KEY not in str(failure.value)


def test_credentials_from_a_prefect_secret_block(eks: ApiEmulator, setup_flows) -> None:
    from prefect.blocks.system import Secret

    Secret(value={"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}).save(
        "csi-s3-credentials", overwrite=True
    )

    setup_flows.enable_addon(
        name="csi-s3", settings=dict(S3_SETTINGS), s3_credentials_block="csi-s3-credentials", **FAST
    )

    secret = eks.stored("v1/secrets", "kube-system", "csi-s3-secret")
    assert base64.b64decode(secret["data"]["accessKeyID"]).decode() == ACCESS_KEY
