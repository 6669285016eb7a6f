"""Building blocks for the fault suite: real clusters driven through the engine's own calls."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import UTC, datetime

from pgpitr.operations import create, log_backup
from pgpitr.postgres.cluster import Cluster
from tests import engine
from tests.pg import sql


def archived_cluster(name: str, repository: str | None = None) -> Cluster:
    """A running cluster with log backup on and one completed backup."""
    cluster = create.create(name, repository_url=repository)
    log_backup.set_log_backup(cluster, True)
    engine.backup(cluster)
    return cluster


def pgbench(cluster: Cluster, *args: str, check: bool = True) -> subprocess.Popen | None:
    argv = [
        str(cluster.bindir / "pgbench"),
        "-h",
        str(cluster.state.socket_dir),
        "-p",
        str(cluster.state.port),
        "-U",
        "postgres",
        *args,
        "postgres",
    ]
    if not check:
        return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(argv, check=True, capture_output=True)
    return None


def wait_archived(cluster: Cluster, name: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = sql(cluster.name, "SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
        if last and last[:24] >= name:
            return
        time.sleep(0.1)
    raise AssertionError(f"{name} not archived within {timeout} s")


def now() -> datetime:
    return datetime.now(UTC)


def in_child(code: str) -> subprocess.Popen:
    """Run engine code in a child process (so that a test can kill it)."""
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
