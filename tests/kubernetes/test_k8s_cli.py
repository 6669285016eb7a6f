"""The ``pgpitr addon | storageclass | config`` commands, run in-process against the emulator."""

from __future__ import annotations

import json
import logging
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import ACCESS_KEY, S3_SETTINGS, SECRET_KEY, b64, kubeconfig_for, storage_class
from k8s_emulator import ApiEmulator

SC = "storage.k8s.io/v1/storageclasses"
S3_SET = ",".join(f"{k}={v}" for k, v in S3_SETTINGS.items())
SECRET_SET = f"secret.accessKey={ACCESS_KEY},secret.secretKey={SECRET_KEY}"


def table(out: str) -> dict[str, list[str]]:
    """Rows of a printed table by their first cell (empty cells vanish in the split)."""
    return {line.split()[0]: line.split() for line in out.strip().splitlines()}


def flow_runs_and_logs(flow_name: str, since: datetime) -> tuple[list[dict], list[str]]:
    """Parameters of every run of the flow created since ``since`` (other tests of the session
    run the same flow) and every log line they sent, read from the API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )  # fmt: skip
    from prefect.logging.handlers import APILogHandler

    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
        runs = [r for r in runs if r.created is not None and r.created >= since]
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[r.id for r in runs]))
        )
    return [r.parameters for r in runs], [log.message for log in logs]


@pytest.fixture
def chatty_prefect() -> None:
    """Prefect at DEBUG for the test, so that every line it could write is looked at."""
    logger = logging.getLogger("prefect")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    yield
    logger.setLevel(level)


def test_secret_values_never_leak(
    eks: ApiEmulator, cli, setup_flows, chatty_prefect, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    started = datetime.now(UTC)
    ok = cli("addon", "enable", "csi-s3", "--set", f"{SECRET_SET},{S3_SET}")
    # A server that echoes the request body in its error (some admission webhooks do).
    eks.fail("PATCH", "secrets", status=422, echo=True)
    other_keys = f"secret.accessKey=OTHER{ACCESS_KEY},secret.secretKey=OTHER{SECRET_KEY}"
    failed = cli("addon", "enable", "csi-s3", "--set", f"{other_keys},{S3_SET}")

    assert ok.code == 0, ok.err
    assert "Secret" in ok.out and "csi-s3-secret" in ok.out
    assert failed.code == 10 and "rejected patch secrets/csi-s3-secret" in failed.err
    assert "***" in failed.err  # the echoed values were redacted
    stored = eks.stored("v1/secrets", "kube-system", "csi-s3-secret")
    assert stored["data"]["accessKeyID"] == b64(ACCESS_KEY)  # the first run's, restored
    parameters, api_logs = flow_runs_and_logs("addon-enable", started)
    assert len(parameters) == 2 and parameters[0]["settings"]["storageClass.singleBucket"] == "demo"
    seen = "\n".join(
        [ok.out, ok.err, failed.out, failed.err, caplog.text, *api_logs, json.dumps(parameters)]
    )  # fmt: skip
    other = (f"OTHER{ACCESS_KEY}", f"OTHER{SECRET_KEY}")
    for secret in (
        ACCESS_KEY,
        SECRET_KEY,
        b64(ACCESS_KEY),
        b64(SECRET_KEY),
        *other,
        *map(b64, other),
    ):
        assert secret not in seen
    assert "PGPITR_S3_ACCESS_KEY" not in os.environ  # handed to the flow, then taken back


def test_dry_run_changes_nothing(eks: ApiEmulator, cli, setup_flows) -> None:
    result = cli("addon", "setup", "--dry-run", "--set", f"{SECRET_SET},{S3_SET}")

    assert result.code == 0, result.err
    assert eks.changing_requests() == []
    assert all(r.method == "GET" for r in eks.all_requests())
    out = result.out
    assert out.count("kind: CustomResourceDefinition") == 3
    assert "driver: ebs.csi.aws.com" in out  # platform detected from the nodes (a read)
    assert "# merge patch for StorageClass gp2" in out
    assert "accessKeyID: <redacted>" in out and "bucket: demo" in out
    assert ACCESS_KEY not in out and SECRET_KEY not in out and b64(SECRET_KEY) not in out


def test_addon_list_reads_status_from_the_cluster(eks: ApiEmulator, cli, setup_flows) -> None:
    before = cli("addon", "list")
    enabled = cli("addon", "enable", "snapshot-controller", "--set", "platform=gke")
    listed = cli("addon", "list")
    eks.objects["apps/v1/deployments", "kube-system", "snapshot-controller"].patch(
        {"status": {"readyReplicas": 0}}
    )
    not_ready = cli("addon", "list")
    eks.objects["v1/serviceaccounts", "kube-system", "snapshot-controller"].delete()
    partial = cli("addon", "list")

    assert table(before.out)["NAME"] == ["NAME", "TYPE", "STATUS", "EXTRAS", "AUTO-INSTALL"]
    assert table(before.out)["snapshot-controller"] == [
        "snapshot-controller", "Manifest", "Disabled", "false"
    ]  # fmt: skip
    assert enabled.code == 0, enabled.err
    assert table(listed.out)["snapshot-controller"][2:] == [
        "Enabled", "driver=pd.csi.storage.gke.io", "false"
    ]  # fmt: skip
    assert table(not_ready.out)["snapshot-controller"][2] == "NotReady"
    assert table(partial.out)["snapshot-controller"][2] == "Partial"
    assert table(partial.out)["csi-s3"][2] == "Disabled"


def test_addon_disable_removes_only_what_pgpitr_created(eks: ApiEmulator, cli, setup_flows) -> None:
    cli("addon", "enable", "snapshot-controller", "--set", "platform=eks")
    theirs = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
              "metadata": {"name": "snapshot-controller-runner"}, "rules": []}  # fmt: skip
    eks.put("rbac.authorization.k8s.io/v1/clusterroles", None, "snapshot-controller-runner", theirs)

    kept_crds = cli("addon", "disable", "snapshot-controller")
    assert kept_crds.code == 0, kept_crds.err
    assert "kept ClusterRole snapshot-controller-runner: not created by pgpitr" in kept_crds.err
    assert eks.stored("apps/v1/deployments", "kube-system", "snapshot-controller") is None
    assert len(eks.names("apiextensions.k8s.io/v1/customresourcedefinitions")) == 3

    cli("addon", "disable", "snapshot-controller", "--remove-crds")
    assert eks.names("apiextensions.k8s.io/v1/customresourcedefinitions") == set()
    # someone else's ClusterRole of the same name is still there
    assert table(cli("addon", "list").out)["snapshot-controller"][2] == "Partial"


def test_storageclass_commands(eks: ApiEmulator, cli, setup_flows) -> None:
    eks.put(SC, None, "standard", storage_class("standard", beta=True))

    result = cli("storageclass", "set-default", "ebs-sc", "--create", "gp3")
    listing = cli("storageclass", "list")

    assert result.code == 0, result.err
    header, *rows = [line.split() for line in listing.out.strip().splitlines()]
    assert header == ["NAME", "PROVISIONER", "RECLAIMPOLICY", "VOLUMEBINDINGMODE",
                      "ALLOWVOLUMEEXPANSION", "DEFAULT"]  # fmt: skip
    assert rows[0] == [
        "ebs-sc",
        "ebs.csi.aws.com",
        "Delete",
        "WaitForFirstConsumer",
        "true",
        "true",
    ]
    assert [row[-1] for row in rows] == ["true", "false", "false"]


def test_config_persists_settings_and_creates_the_pvc(eks: ApiEmulator, cli, setup_flows) -> None:
    missing_class = cli("config", "--set", "dataProtection.backupPVCName=backup-data")
    eks.put(SC, None, "csi-s3", {**storage_class("csi-s3", default=False),
                                 "volumeBindingMode": "Immediate"})  # fmt: skip
    result = cli(
        "config", "--set", "dataProtection.backupPVCName=backup-data",
        "--set", "dataProtection.backupPVCStorageClassName=csi-s3",
        "--set", "dataProtection.enableVolumeSnapshot=false",
    )  # fmt: skip
    shown = cli("config")

    assert (
        missing_class.code == 3 and "storage class csi-s3 for the backup PVC" in missing_class.err
    )
    assert "pgpitr addon enable csi-s3" in missing_class.err
    assert result.code == 0, result.err
    assert "backup-data" in result.out
    assert "dataProtection.backupPVCStorageClassName  csi-s3" in shown.out
    pvc = eks.stored("v1/persistentvolumeclaims", "pgpitr-system", "backup-data")
    assert pvc["spec"]["storageClassName"] == "csi-s3"


def test_set_keys_unknown_or_missing(cluster: ApiEmulator, cli) -> None:
    unknown = cli("addon", "enable", "csi-s3", "--set", "secret.acessKey=x")
    missing = cli("addon", "enable", "csi-s3", "--set", "secret.endpoint=https://s3")
    bad_choice = cli("config", "--set", "dataProtection.enableVolumeSnapshot=yes")
    malformed = cli("addon", "setup", "--set", f"{SECRET_KEY}")
    no_addon = cli("addon", "enable", "csi-s4")

    assert (
        unknown.code == 2 and "unknown --set key for add-on csi-s3: secret.acessKey" in unknown.err
    )
    assert "valid keys: secret.accessKey, secret.secretKey, secret.endpoint" in unknown.err
    assert missing.code == 2
    assert "needs secret.accessKey (or $PGPITR_S3_ACCESS_KEY)" in missing.err
    assert "storageClass.singleBucket" in missing.err
    assert bad_choice.code == 2 and "takes one of: true, false" in bad_choice.err
    assert malformed.code == 2 and SECRET_KEY not in malformed.err
    assert no_addon.code == 3 and "add-ons: snapshot-controller, csi-s3" in no_addon.err
    assert cluster.all_requests() == []


def test_unreachable_api_server_names_the_context(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = kubeconfig_for(tmp_path / "kubeconfig", f"http://127.0.0.1:{port}", "prod-eks")
    monkeypatch.setenv("KUBECONFIG", str(config))

    result = cli("addon", "list")

    assert result.code == 10
    assert f"no Kubernetes API server answered at http://127.0.0.1:{port}" in result.err
    assert f"context 'prod-eks' of {config}" in result.err


def test_no_kubeconfig_anywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cli) -> None:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))

    result = cli("storageclass", "list")

    assert result.code == 10 and "no Kubernetes configuration found" in result.err


def test_unknown_context(cluster: ApiEmulator, cli) -> None:
    result = cli("addon", "list", "--context", "staging")

    assert result.code == 10 and "contexts in that file: emulator" in result.err


def test_rbac_forbidden_names_verb_and_resource(cluster: ApiEmulator, cli) -> None:
    cluster.fail("GET", "storageclasses", status=403)

    result = cli("storageclass", "list")

    assert result.code == 10
    assert "forbidden: context 'emulator'" in result.err
    assert "may not list storageclasses.storage.k8s.io" in result.err
    assert "kubectl auth can-i list storageclasses.storage.k8s.io" in result.err
