"""Fixtures of the orchestration tests: one Prefect API (the session's harness) for this process
and every child (CLI, `pgpitr serve`), one pgpitr home and S3 bucket for the module, a source
cluster made through the CLI, and the deployments served from a real `deployments.serve`."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import S3_KEY, S3_SECRET, cli, shared_home

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api_url(prefect_harness: str) -> Iterator[str]:
    """The harness's API, also in os.environ so that every child process reaches it."""
    import prefect.settings

    url = prefect.settings.PREFECT_API_URL.value()
    saved = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url
    yield url
    if saved is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = saved


@pytest.fixture(scope="module")
def s3_repo(moto_endpoint: str) -> Iterator[str]:
    """A bucket for the module; the keys in the environment, as `cluster create` expects."""
    import boto3

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TZ")}
    os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, TZ="UTC")
    bucket = f"pgpitr-flows-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    yield f"s3://{bucket}/backups?endpoint={moto_endpoint}&region=us-east-1"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


#: The host the module's clusters live on (PGPITR_HOST), in every name the flows give.
HOST = "flows-host"


@pytest.fixture(scope="module")
def flows_home(api_url: str, s3_repo: str) -> Iterator[Path]:
    saved = os.environ.get("PGPITR_HOST")
    os.environ["PGPITR_HOST"] = HOST
    try:
        with shared_home() as home:
            yield home
    finally:
        if saved is None:
            os.environ.pop("PGPITR_HOST", None)
        else:
            os.environ["PGPITR_HOST"] = saved


@pytest.fixture(scope="module")
def served(flows_home: Path, api_url: str) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m deployments.serve` in the background (started early: it takes seconds)."""
    log = open(flows_home / "serve.log", "wb")  # closed at teardown
    env = {**os.environ, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "deployments.serve"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield process
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def wait_served(process: subprocess.Popen[bytes], home: Path, timeout: float = 90) -> None:
    """Until every deployment is applied and the runner polls (the restore deployment READY)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            assert process.poll() is None, (home / "serve.log").read_text()[-3000:]
            try:
                deployment = client.read_deployment_by_name(f"grant-role/pgpitr-{HOST}")
                if getattr(deployment.status, "value", deployment.status) == "READY":
                    return
            except ObjectNotFound:
                pass
            time.sleep(0.5)
    log = (home / "serve.log").read_text()[-3000:]
    raise AssertionError(f"the deployments were not served in time:\n{log}")


@pytest.fixture(scope="module")
def source(flows_home: Path, s3_repo: str, served: subprocess.Popen[bytes]) -> str:
    """Cluster `src` on S3 with log backup on and one backup, all through the CLI's flows."""
    cli("cluster", "create", "src", "--backup-repo", s3_repo)
    cli(
        "cluster",
        "edit-backup-policy",
        "src-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=true",
    )
    cli("cluster", "backup", "src")
    return "src"
