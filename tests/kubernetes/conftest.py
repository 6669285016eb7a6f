"""Fixtures for the Kubernetes platform tests: an API emulator on 127.0.0.1 reached through a real
kubeconfig, the CLI run in-process, and the flows under the session's Prefect harness."""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import prefect  # noqa: F401  (see below)
import pytest
import yaml
from k8s_emulator import ApiEmulator, EmulatorThread

# Prefect binds its console log handler to sys.stderr when first imported.  Imported here, at
# collection, that is pytest's session-long capture stream; imported inside a test that uses
# capfd, it would be that test's stream, closed afterwards ("I/O operation on closed file").

SECRET_ENVS = ("PGPITR_S3_ACCESS_KEY", "PGPITR_S3_SECRET_KEY")
ACCESS_KEY = "AKIAEMULATORACCESS42"
SECRET_KEY = "wJalrXUtnFEMI-emulator-secret-key-7"
S3_SETTINGS = {
    "secret.endpoint": "https://s3.us-east-1.amazonaws.com",
    "secret.region": "us-east-1",
    "storageClass.singleBucket": "demo",
}


def kubeconfig_for(path: Path, server: str, context: str = "emulator") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emu", "cluster": {"server": server}}],
                "users": [{"name": "emu", "user": {"token": "emulator-token"}}],
                "contexts": [{"name": context, "context": {"cluster": "emu", "user": "emu"}}],
                "current-context": context,
            }
        )
    )
    return path


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ApiEmulator]:
    """An empty cluster; KUBECONFIG points at it, no S3 credentials in the environment."""
    with EmulatorThread() as server:
        assert server.emulator is not None
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig_for(tmp_path / "kubeconfig", server.url)))
        for name in SECRET_ENVS:
            monkeypatch.delenv(name, raising=False)
        yield server.emulator


@pytest.fixture
def eks(cluster: ApiEmulator) -> ApiEmulator:
    """An EKS-like cluster: two nodes with AWS provider IDs and the stock gp2 default class."""
    for i in (1, 2):
        cluster.put("v1/nodes", None, f"ip-10-0-0-{i}", {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": f"ip-10-0-0-{i}"},
            "spec": {"providerID": f"aws:///us-east-1a/i-0abc{i}"},
        })  # fmt: skip
    cluster.put("storage.k8s.io/v1/storageclasses", None, "gp2", storage_class("gp2"))
    return cluster


def storage_class(name: str, *, default: bool = True, beta: bool = False) -> dict[str, Any]:
    annotation = "storageclass.%skubernetes.io/is-default-class" % ("beta." if beta else "")
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": name, "annotations": {annotation: "true" if default else "false"}},
        "provisioner": "kubernetes.io/aws-ebs",
        "parameters": {"type": name, "fsType": "ext4"},
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }


def b64(value: str) -> str:
    return base64.b64encode(value.encode()).decode()


@pytest.fixture
def s3_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPITR_S3_ACCESS_KEY", ACCESS_KEY)
    monkeypatch.setenv("PGPITR_S3_SECRET_KEY", SECRET_KEY)


@pytest.fixture
def setup_flows(prefect_harness: None) -> Any:
    from flows import setup

    return setup


@dataclass
class Outcome:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Outcome]:
    """Run ``pgpitr ARGV`` in this process: exit code, and all it wrote to stdout and stderr
    (file-descriptor level, so Prefect's own console logging is included)."""
    monkeypatch.setenv("COLUMNS", "250")  # rich folds table cells at 80 columns otherwise

    def invoke(*argv: str) -> Outcome:
        from cli import run

        try:
            run(list(argv))
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        captured = capfd.readouterr()
        return Outcome(code, captured.out, captured.err)

    return invoke
