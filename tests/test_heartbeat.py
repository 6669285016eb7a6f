"""pgpitr/heartbeat.py on a real PostgreSQL 15: rows written, old ones removed, identifiers quoted,
only the clusters the policy asks for."""

from __future__ import annotations

import dataclasses
import time
from datetime import timedelta
from pathlib import Path

import pytest

from pgpitr import heartbeat, policy_store
from pgpitr.operations import create, log_backup
from pgpitr.postgres.cluster import Cluster
from tests.pg import sql


@pytest.fixture
def archived(home: Path) -> Cluster:
    cluster = create.create("beat")
    log_backup.set_log_backup(cluster, True)
    return cluster


def test_a_beat_writes_a_row_with_its_lsn_and_removes_old_ones(archived: Cluster) -> None:
    first = heartbeat.beat(archived)
    second = heartbeat.beat(archived)
    rows = sql("beat", "SELECT beat_at, lsn::text FROM pgpitr.heartbeat ORDER BY beat_at")
    assert [r[0] for r in rows] == [first.beat_at, second.beat_at]
    assert rows[1][1] == second.lsn and second.beat_at > first.beat_at
    assert heartbeat.newest(archived) == second.beat_at
    assert heartbeat.newest(archived, at_or_before=second.beat_at - timedelta(microseconds=1)) == (
        first.beat_at
    )
    assert heartbeat.after(archived, first.beat_at) == [second.beat_at]
    # bounded: a beat removes what is older than ``keep``
    third = heartbeat.beat(archived, keep=timedelta(0))
    assert third.removed == 2
    assert sql("beat", "SELECT count(*) FROM pgpitr.heartbeat") == [(1,)]


def test_identifiers_are_quoted_not_pasted(
    archived: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heartbeat, "SCHEMA", 'pg"pitr; DROP TABLE x')
    monkeypatch.setattr(heartbeat, "TABLE", "Beat Rows")
    heartbeat.beat(archived)
    assert sql("beat", 'SELECT count(*) FROM "pg""pitr; DROP TABLE x"."Beat Rows"') == [(1,)]
    assert sql("beat", "SELECT to_regclass('pgpitr.heartbeat')") == [(None,)]


def test_only_clusters_with_log_backup_and_heartbeat_on_get_beats(home: Path) -> None:
    quiet = create.create("quiet")  # log backup off
    loud = create.create("loud")
    log_backup.set_log_backup(loud, True)
    off = create.create("off")
    log_backup.set_log_backup(off, True)
    policy = policy_store.load_policy(off)
    policy_store.save_policy(off, dataclasses.replace(policy, heartbeat_enabled=False))
    assert [b.cluster for b in heartbeat.beat_all()] == ["loud"]
    assert heartbeat.newest(quiet) is None and heartbeat.newest(off) is None
    quiet.stop()
    assert heartbeat.beat_all()[0].cluster == "loud"  # a stopped cluster is left alone


def test_the_loop_beats_until_stopped(archived: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(heartbeat.INTERVAL_ENV, "0.2")
    assert heartbeat.interval() == 0.2
    thread, stop = heartbeat.start()
    deadline = time.monotonic() + 60
    while sql("beat", "SELECT count(*) FROM pg_tables WHERE schemaname = 'pgpitr'") != [(1,)] or (
        sql("beat", "SELECT count(*) FROM pgpitr.heartbeat")[0][0] < 3
    ):
        assert time.monotonic() < deadline, "the loop wrote fewer than 3 beats in 60 s"
        time.sleep(0.1)
    stop.set()
    thread.join(timeout=30)
    assert not thread.is_alive()
    monkeypatch.setenv(heartbeat.INTERVAL_ENV, "soon")
    assert heartbeat.interval() == heartbeat.DEFAULT_INTERVAL
