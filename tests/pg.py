"""Helpers for tests that talk to real clusters."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgpitr.postgres.cluster import Cluster
from pgpitr.state import ClusterState
from tests.conftest import cli


def serverless_cluster(home: Path, name: str, repository: str, system_id: int) -> ClusterState:
    """A cluster's state and a data directory without a server: enough for the WAL commands."""
    state = ClusterState(
        name=name,
        platform="local",
        port=1,
        os_user="root",
        bindir="/usr/lib/postgresql/15/bin",
        repository=repository,
        home=str(home),
        system_identifier=str(system_id),
    )
    (state.datadir / "global").mkdir(parents=True)
    (state.datadir / "global" / "pg_control").write_bytes(system_id.to_bytes(8, "little"))
    (state.datadir / "pg_wal" / "archive_status").mkdir(parents=True)
    state.spool.mkdir(parents=True)
    state.save()
    return state


def sql(cluster: str, query: str, params: tuple = ()) -> list[tuple]:
    with Cluster.get(cluster).connect() as db:
        cur = db.execute(query, params)
        return cur.fetchall() if cur.description else []


def commit_now(cluster: str, query: str) -> datetime:
    """Run one statement in its own transaction; return a time just after its commit."""
    sql(cluster, query)
    return datetime.now(UTC)


def rows_either_side_of_a_second(cluster: str) -> datetime:
    """Table msg with row 1 committed before the whole second returned and row 2 after it,
    both archived: a restore to that time has row 1 only."""
    sql(cluster, "CREATE TABLE msg (id int PRIMARY KEY)")
    after_1 = commit_now(cluster, "INSERT INTO msg VALUES (1)")
    noted = (after_1 + timedelta(seconds=1)).replace(microsecond=0)
    while datetime.now(UTC) < noted + timedelta(seconds=1):
        time.sleep(0.1)
    commit_now(cluster, "INSERT INTO msg VALUES (2)")
    archive_now(cluster)
    return noted


def archive_now(cluster: str, timeout: float = 30) -> str:
    """Switch WAL and wait until the finished segment is archived."""
    name = sql(cluster, "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        last = sql(cluster, "SELECT last_archived_wal FROM pg_stat_archiver")[0][0]
        if last and last[:24] >= name:
            return name
        time.sleep(0.1)
    raise AssertionError(f"{name} was not archived within {timeout} s")


def window(cluster: str) -> list[tuple[datetime, datetime]]:
    info = json.loads(cli("cluster", "describe", cluster, "-o", "json").stdout)
    return [
        (datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in info["recoverable_time"]
    ]


def rows(cluster: str) -> list[int]:
    return [r[0] for r in sql(cluster, "SELECT id FROM msg ORDER BY id")]
