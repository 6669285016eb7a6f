"""S3 on 127.0.0.1 (moto's server, one per run) and barman-cloud, the S3 peer.

barman-cloud is installed into a virtualenv of its own (``/var/tmp/pgpitr-bench-barman``, kept
between bench runs as a tool cache, readable by the server's account); when it cannot be
installed or run, the reason is recorded and the comparison skipped.  barman-cloud has no zstd:
it runs with lz4, its fastest compression, and ``-J`` jobs matching pgpitr's workers.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from bench.proc import BenchError, User, free_port, kill_group, run, timed, wait_until

BARMAN_VENV = Path("/var/tmp/pgpitr-bench-barman")
#: moto accepts any keys; these are not secrets.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BUCKET = "bench"


class MotoServer:
    """``moto_server`` on 127.0.0.1; started by ``with``, stopped (its process group) after."""

    def __init__(self, log: Path) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> MotoServer:
        moto = Path(sys.executable).with_name("moto_server")
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                [str(moto), "-H", "127.0.0.1", "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._answers, 60, "moto server start", 0.2)
        self.client().create_bucket(Bucket=BUCKET)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            kill_group(self.process.pid)
            self.process.wait(30)

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise BenchError(f"moto server exited: {self.log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return True
        except OSError:
            return False

    def client(self):  # noqa: ANN201 - a boto3 client
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )

    def stored_bytes(self, prefix: str) -> int:
        total = 0
        for page in (
            self.client().get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        ):
            total += sum(item["Size"] for item in page.get("Contents", []))
        return total

    def pgpitr_url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}?endpoint={self.endpoint}&region=us-east-1"


# -- barman-cloud ------------------------------------------------------------------------------


def ensure_barman(timeout: float = 900) -> tuple[str | None, str | None]:
    """(version, None) when barman-cloud-backup runs here, else (None, why not)."""
    backup = BARMAN_VENV / "bin" / "barman-cloud-backup"
    try:
        python = BARMAN_VENV / "bin" / "python"
        probe = [python, "-c", "import boto3, lz4.frame, psycopg2"]
        if not backup.exists() or run(probe, check=False, timeout=120).returncode != 0:
            uv = ["python3", "-m", "uv"]  # as the Makefile installs it
            run([*uv, "venv", "-q", "--python", "/usr/bin/python3.11", BARMAN_VENV], timeout=300)
            run(
                [
                    *uv,
                    "pip",
                    "install",
                    "-q",
                    "--python",
                    python,
                    "barman[cloud]",
                    "boto3>=1.34",  # else the resolver may pick an ancient, broken boto3
                    "psycopg2-binary",
                    "lz4",
                ],
                timeout=timeout,
            )
        version = run([backup, "--version"], timeout=60).stdout.strip()
        return version, None
    except (BenchError, OSError) as exc:
        return None, f"barman-cloud could not be installed or run: {str(exc)[:500]}"


def barman_archive_command(endpoint: str, prefix: str) -> str:
    keys = " ".join(f"{k}={v}" for k, v in CREDENTIALS.items())
    tool = BARMAN_VENV / "bin" / "barman-cloud-wal-archive"
    return (
        f"env {keys} {tool} --cloud-provider aws-s3 --endpoint-url {endpoint} --lz4 "
        f"s3://{BUCKET}/{prefix} bench %p"
    )


def barman_backup(
    endpoint: str, prefix: str, socket_dir: Path, port: int, jobs: int, user: User, log: Path
) -> float:
    return timed(
        [
            BARMAN_VENV / "bin" / "barman-cloud-backup",
            "--cloud-provider",
            "aws-s3",
            "--endpoint-url",
            endpoint,
            "--lz4",
            "--jobs",
            str(jobs),
            "--immediate-checkpoint",
            "--host",
            str(socket_dir),
            "--port",
            str(port),
            "--user",
            "postgres",
            f"s3://{BUCKET}/{prefix}",
            "bench",
        ],
        user=user,
        env=CREDENTIALS,
        timeout=7200,
        log=log,
    ).seconds
