"""One shape for every Kubernetes operation: composed once in the engine, run through the runner,
dry runs without a cluster, the client library an optional extra."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import ACCESS_KEY, S3_SETTINGS, SECRET_KEY, b64, storage_class
from k8s_emulator import ApiEmulator

from pgpitr.errors import KubernetesError
from pgpitr.kubernetes import setup as ops
from pgpitr.kubernetes.snapshot import PLATFORM_DRIVERS
from pgpitr.kubernetes.target import KubeTarget
from pgpitr.steps import Steps

ROOT = Path(__file__).resolve().parents[2]
SC = "storage.k8s.io/v1/storageclasses"
VSC = "snapshot.storage.k8s.io/v1/volumesnapshotclasses"
S3_SET = ",".join(f"{k}={v}" for k, v in S3_SETTINGS.items())
SECRET_SET = f"secret.accessKey={ACCESS_KEY},secret.secretKey={SECRET_KEY}"


@pytest.fixture
def no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cluster configured anywhere: no $KUBECONFIG, a HOME without ~/.kube, not in a pod."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(home))
    return home


def documents(out: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(out) if d]


def pgpitr(*argv: str, home: Path, block_kubernetes: bool = False) -> subprocess.CompletedProcess:
    """``pgpitr ARGV`` in a process of its own (Prefect imported there, as for a user), with no
    kubeconfig; ``block_kubernetes``: as if the optional extra were not installed."""
    prelude = "import sys; sys.modules['kubernetes'] = None; " if block_kubernetes else ""
    code = f"{prelude}from pgpitr.__main__ import main; main({list(argv)!r})"
    env = {k: v for k, v in os.environ.items() if k not in ("KUBECONFIG", "PYTHONPATH")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT), COLUMNS="200")
    env.pop("KUBERNETES_SERVICE_HOST", None)
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )


# -- dry runs need no cluster --------------------------------------------------------------------


def test_dry_run_without_any_kubeconfig(no_kubeconfig: Path, cli, setup_flows) -> None:
    snapshot = cli("addon", "enable", "snapshot-controller", "--dry-run")
    csi = cli("addon", "enable", "csi-s3", "--dry-run", "--set", f"{SECRET_SET},{S3_SET}")
    whole = cli("addon", "setup", "--dry-run")

    assert snapshot.code == 0, snapshot.err
    kinds = [d["kind"] for d in documents(snapshot.out)]
    assert kinds.count("CustomResourceDefinition") == 3 and kinds[-1] == "VolumeSnapshotClass"
    assert documents(snapshot.out)[-1]["driver"] == PLATFORM_DRIVERS["eks"]
    assert "no Kubernetes configuration found" in snapshot.err  # what it went without
    assert "assumed platform eks" in snapshot.err

    assert csi.code == 0, csi.err
    secret = next(d for d in documents(csi.out) if d["kind"] == "Secret")
    assert set(secret["data"].values()) == {"<redacted>"}
    for value in (ACCESS_KEY, SECRET_KEY, b64(ACCESS_KEY), b64(SECRET_KEY)):
        assert value not in csi.out + csi.err
    assert "bucket: demo" in csi.out
    assert "PGPITR_S3_ACCESS_KEY" not in os.environ

    assert whole.code == 0, whole.err
    kinds = {d.get("kind") for d in documents(whole.out)}
    assert {"VolumeSnapshotClass", "StorageClass", "Secret", "PersistentVolumeClaim"} <= kinds
    assert "placeholder for secret.endpoint, storageClass.singleBucket" in whole.err
    assert "assumed no other default storage class to demote" in whole.err
    assert "Traceback" not in snapshot.err + csi.err + whole.err


def test_dry_run_reads_a_cluster_that_answers(eks: ApiEmulator, cli, setup_flows) -> None:
    eks.put(SC, None, "standard", storage_class("standard", beta=True))

    result = cli("storageclass", "set-default", "ebs-sc", "--create", "gp3", "--dry-run")

    assert result.code == 0, result.err
    assert "# merge patch for StorageClass gp2" in result.out
    assert "storageclass.beta.kubernetes.io/is-default-class: 'false'" in result.out
    assert "assumed" not in result.err and "without a cluster" not in result.err
    assert eks.changing_requests() == []


@pytest.mark.parametrize("platform", sorted(PLATFORM_DRIVERS))
def test_platform_chooses_the_snapshot_class_driver(platform: str, no_kubeconfig: Path) -> None:
    outcome = ops.enable_addon(
        Steps(), KubeTarget(dry_run=True), "snapshot-controller", {"platform": platform}
    )

    vsc = documents(outcome.yaml())[-1]
    assert vsc["kind"] == "VolumeSnapshotClass"
    assert vsc["driver"] == PLATFORM_DRIVERS[platform]
    assert not any("assumed platform" in note for note in outcome.notes)


def test_platform_flag_overrides_detection(eks: ApiEmulator, cli, setup_flows) -> None:
    enabled = cli("addon", "enable", "snapshot-controller", "--platform", "aks")
    conflict = cli(
        "addon", "enable", "snapshot-controller", "--platform", "gke", "--set", "platform=eks"
    )
    not_for_csi = cli("addon", "enable", "csi-s3", "--platform", "gke", "--dry-run")
    unknown = cli("addon", "enable", "snapshot-controller", "--platform", "openshift")

    assert enabled.code == 0, enabled.err
    assert eks.stored(VSC, None, "default-vsc")["driver"] == "disk.csi.azure.com"  # not EKS's
    assert conflict.code == 2 and "disagree" in conflict.err
    assert not_for_csi.code == 2 and "--platform does not apply to add-on csi-s3" in not_for_csi.err
    assert unknown.code == 2 and "takes one of: eks, gke, ack, aks" in unknown.err


# -- the engine composes; plain Steps run it without Prefect -------------------------------------


def test_engine_rolls_back_with_plain_steps(eks: ApiEmulator) -> None:
    eks.fail("PATCH", "storageclasses", name="gp2", status=403)

    with pytest.raises(KubernetesError, match="could not demote the default storage class gp2"):
        ops.set_default_storage_class(Steps(), KubeTarget(), "ebs-sc", "gp3")

    assert eks.names(SC) == {"gp2"}  # ebs-sc, created by this run, is gone again


def test_engine_dry_run_sends_only_reads(eks: ApiEmulator) -> None:
    outcome = ops.setup(Steps(), KubeTarget(dry_run=True), dict(S3_SETTINGS))

    assert eks.changing_requests() == []
    assert {c.summary()["action"] for c in outcome.changes} == {"planned"}
    vsc = next(d for d in documents(outcome.yaml()) if d.get("kind") == "VolumeSnapshotClass")
    assert vsc["driver"] == "ebs.csi.aws.com"  # the platform detected from the nodes
    assert "# merge patch for StorageClass gp2" in outcome.yaml()
    assert outcome.notes == []


# -- failures: one line and a hint, never a traceback --------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ("addon", "enable", "snapshot-controller"),
        ("storageclass", "set-default", "ebs-sc"),
        ("config", "--set", "dataProtection.backupPVCName=b"),
        ("addon", "list"),
    ],
    ids=["addon-enable", "storageclass-set-default", "config", "addon-list"],
)
def test_a_failing_command_prints_one_line_and_a_hint(
    argv: tuple[str, ...], tmp_path: Path, prefect_harness: None
) -> None:
    result = pgpitr(*argv, "--kubeconfig", "/nonexistent", home=tmp_path)

    assert result.returncode == 10, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if not line.startswith("note:")]
    assert lines == [
        "error: kubeconfig /nonexistent does not exist",
        "  hint: pass --kubeconfig the file your cluster's tools wrote (e.g. ~/.kube/config)",
    ]


# -- the kubernetes client library is an optional extra ------------------------------------------


def test_without_the_kubernetes_extra(tmp_path: Path) -> None:
    help_all = pgpitr("--help", home=tmp_path, block_kubernetes=True)
    cluster = pgpitr("cluster", "--help", home=tmp_path, block_kubernetes=True)
    addon_help = pgpitr("addon", "enable", "--help", home=tmp_path, block_kubernetes=True)
    failures = [
        pgpitr(*argv, home=tmp_path, block_kubernetes=True)
        for argv in (
            ("addon", "enable", "snapshot-controller", "--dry-run"),
            ("addon", "list"),
            ("storageclass", "list"),
            ("config",),
        )
    ]

    assert help_all.returncode == 0, help_all.stderr
    assert "addon" in help_all.stdout and "cluster" in help_all.stdout
    assert cluster.returncode == 0, cluster.stderr
    assert addon_help.returncode == 0 and "--platform" in addon_help.stdout
    for failed in failures:
        assert failed.returncode == 1, failed.stderr
        assert "Traceback" not in failed.stderr
        error, hint = failed.stderr.splitlines()  # one line of error, one of hint
        assert error == "error: the Kubernetes commands need the optional extra pgpitr[kubernetes]"
        assert hint.startswith("  hint: install it: pip install 'pgpitr[kubernetes]'")


def test_error_text_is_not_markup(capsys: pytest.CaptureFixture[str]) -> None:
    from cli import console

    console.error("the Kubernetes commands need the optional extra pgpitr[kubernetes]")

    assert "pgpitr[kubernetes]" in capsys.readouterr().err


ALLOWED = {"tasks/kubernetes.py", "flows/setup.py"} | {
    f"cli/{group}.py" for group in ("addon", "config", "storageclass")
}
IMPORTS_KUBERNETES = re.compile(r"^\s*(import kubernetes\b|from kubernetes[\s.])", re.MULTILINE)


def test_only_the_kubernetes_modules_import_the_client() -> None:
    importing = sorted(
        str(path.relative_to(ROOT))
        for top in ("pgpitr", "tasks", "flows", "deployments")
        for path in (ROOT / top).rglob("*.py")
        if IMPORTS_KUBERNETES.search(path.read_text())
    )
    outside = [p for p in importing if p not in ALLOWED and not p.startswith("pgpitr/kubernetes/")]
    assert outside == []
    assert importing == ["pgpitr/kubernetes/client.py"]  # and there, only on connect
