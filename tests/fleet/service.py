"""Running pgpitr as its service account on a test's hosts (root only): the environment of a host
of its own, and its agent stopped hard at the end."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.fleet.netns import Host


def run_as_service(
    argv: list[str],
    env: dict[str, str],
    input: str | None = None,
    timeout: float = 300,
    on: Host | None = None,
) -> subprocess.CompletedProcess[str]:
    """ARGV as pgpitr's service account, in host ON's namespace if given (entering it takes
    root: the account is taken on inside it)."""
    from pgpitr.privilege import make_service_account

    account = make_service_account()
    identity = [f"--reuid={account.uid}", f"--regid={account.gid}", "--clear-groups"]
    return subprocess.run(
        on.command(["setpriv", *identity, *argv]) if on else ["setpriv", *identity, *argv],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )


def owned_by_service(path: Path) -> Path:
    from pgpitr.privilege import make_service_account

    account = make_service_account()
    os.chown(path, account.uid, account.gid)
    return path


def base_env(home: Path, **settings: str) -> dict[str, str]:
    """A clean environment: nothing of the test process's Prefect API or home."""
    prefect_home = home / "prefect-home"
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(prefect_home),
        "PREFECT_HOME": str(prefect_home),
        "PGPITR_HOME": str(home),
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        **settings,
    }


def stop_agent(home: Path) -> None:
    try:
        pid = json.loads((home / "agent" / "agent.json").read_text())["pid"]
        os.killpg(pid, signal.SIGKILL)
    except (OSError, ValueError, KeyError):
        pass


@contextlib.contextmanager
def s3_repository(address: str, prefix: str) -> Iterator[str]:
    """moto's S3 server on ADDRESS (the fleet's) with a bucket of its own: the repository URL
    the hosts share."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from tests.conftest import S3_KEY, S3_SECRET, free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per S3 request
    port = free_port()
    moto = ThreadedMotoServer(ip_address=address, port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://{address}:{port}"
        bucket = f"{prefix}-{os.urandom(5).hex()}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
        ).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}/backups?endpoint={endpoint}&region=us-east-1"
    finally:
        moto.stop()
