"""Helpers for tests that talk to real clusters."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import psycopg

from pgpitr.postgres.cluster import Cluster
from tests.conftest import cli


def sql(cluster: str, query: str, params: tuple = ()) -> list[tuple]:
    with Cluster.get(cluster).connect() as db:
        cur = db.execute(query, params)
        return cur.fetchall() if cur.description else []


def commit_now(cluster: str, query: str) -> datetime:
    """Run one statement in its own transaction; return a time just after its commit."""
    sql(cluster, query)
    return datetime.now(UTC)


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


def can_connect(cluster: str) -> bool:
    try:
        sql(cluster, "SELECT 1")
        return True
    except (psycopg.Error, Exception):
        return False
