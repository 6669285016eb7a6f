"""Streaming WAL when things break: pg_receivewal killed, the repository away, a slot holding
back too much, the agent stopped and started again.

These clusters stream with archive_command off (``/bin/true``), so that the repository gets WAL
from the receiver only: an unbroken window then proves the stream itself left no gap (with the
fallback on, archive_command would hide one).  The supervisor runs in this process, pinned to the
test's home, as the agent runs it; the last test goes through `pgpitr agent start`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgpitr import cluster_repository, policy_store
from pgpitr.catalog import window
from pgpitr.operations import create, delete, describe, log_backup
from pgpitr.postgres import conf, slots
from pgpitr.postgres.cluster import Cluster
from pgpitr.state import write_json_atomic
from pgpitr.wal import stream
from pgpitr.wal.stream import files as stream_files
from pgpitr.wal.stream import receiver as stream_receiver
from tests import engine
from tests.conftest import cli, shared_home
from tests.faults.test_archiving_faults import own_moto  # noqa: F401
from tests.pg import rows, sql

pytestmark = pytest.mark.timeout(600)


def _wait(what: str, check, timeout: float = 90, cluster: Cluster | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s" + diagnosis(cluster))
        time.sleep(0.2)


def diagnosis(cluster: Cluster | None) -> str:
    """The receiver's and the server's logs, for a failure's message."""
    if cluster is None:
        return ""
    logs = [cluster.state.spool / "stream.log", cluster.state.log_file]
    tails = [p.read_text(errors="replace")[-3000:] for p in logs if p.exists()]
    return "\n" + "\n---\n".join(tails) + f"\nspool: {os.listdir(stream.spool_dir(cluster))}"


def periods(cluster: Cluster) -> list[tuple[datetime, datetime]]:
    repo = cluster_repository.repository(cluster)
    return window.recoverable_window(repo, cluster.name, cluster.bindir).periods


def passes(cluster: Cluster, moment: datetime) -> bool:
    found = periods(cluster)
    return bool(found) and found[-1][1] > moment


def stream_only(name: str, repository: str | None = None) -> Cluster:
    """A streaming cluster whose repository gets WAL from the receiver alone."""
    cluster = create.create(name, repository_url=repository)
    log_backup.set_log_backup(cluster, True)
    sql(name, "CREATE TABLE msg (id int PRIMARY KEY)")
    engine.backup(cluster)
    log_backup.set_streaming(cluster, True, False)
    cluster.set_archive_command(conf.ARCHIVE_OFF)
    return cluster


def commit_rows(name: str, count: int, wal_bytes: int = 0) -> datetime:
    """``count`` rows, each its own commit (and ``wal_bytes`` of padding WAL); a time before
    the last commit."""
    if wal_bytes:
        sql(name, "CREATE TABLE IF NOT EXISTS pad (b text)")
        sql(
            name,
            "INSERT INTO pad SELECT repeat(md5(i::text), 32) FROM generate_series(1, %s) i",
            (wal_bytes // 1100,),
        )
    start = max(rows(name), default=0) + 1
    for i in range(start, start + count - 1):
        sql(name, "INSERT INTO msg VALUES (%s)", (i,))
    before = datetime.now(UTC)
    sql(name, "INSERT INTO msg VALUES (%s)", (start + count - 1,))
    return before


@pytest.fixture(scope="module")
def fleet() -> Iterator[tuple[Path, stream.Supervisor]]:
    with shared_home() as home:
        thread, stop, supervisor = stream.start(tick=0.5, home=home)
        try:
            yield home, supervisor
        finally:
            stop.set()
            thread.join(timeout=60)


def test_a_killed_receiver_is_restarted_and_the_slot_kept_the_wal(
    fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, supervisor = fleet
    # the restart held back long enough for a checkpoint to recycle what no slot kept
    monkeypatch.setattr(stream_receiver, "RESTART_PAUSE", (20.0, 30.0))
    cluster = stream_only("killed")
    _wait(
        "a receiver",
        lambda: (
            "killed" in supervisor.receivers and supervisor.receivers["killed"].process is not None
        ),
    )
    supervisor.receivers["killed"].pause = 20.0
    first = supervisor.receivers["killed"].process.pid
    os.kill(first, signal.SIGKILL)
    # WAL while no receiver runs: two segments' worth, switched past, so that a gap would show
    before = commit_rows("killed", 5, wal_bytes=24 * 2**20)
    sql("killed", "SELECT pg_switch_wal()")
    sql("killed", "CHECKPOINT")
    running = supervisor.receivers["killed"].process
    assert running is None or running.pid == first, "restarted before the checkpoint"
    # the slot held it back: its restart point's segment is still in pg_wal after a checkpoint
    assert (slots.slot_state(cluster).retained or 0) > 24 * 2**20
    # (+ 1: pg_walfile_name names the segment before when the LSN is on a segment's boundary)
    (kept,) = sql(
        "killed",
        "SELECT count(*) FROM pg_ls_waldir() WHERE name = (SELECT pg_walfile_name(restart_lsn + 1)"
        " FROM pg_replication_slots WHERE slot_name = %s)",
        (slots.SLOT,),
    )[0]
    assert kept == 1
    _wait(
        "a new receiver",
        lambda: (p := supervisor.receivers["killed"].process) is not None and p.pid != first,
    )
    assert supervisor.receivers["killed"].restarts >= 1
    _wait("the window passes the last commit", lambda: passes(cluster, before), cluster=cluster)
    assert len(periods(cluster)) == 1, "no gap"
    result = engine.restore("killed-copy", "killed", None)
    try:
        assert rows("killed-copy") == rows("killed") == [1, 2, 3, 4, 5]
        assert result.last_commit is not None and result.last_commit > before
    finally:
        delete.delete(Cluster.get("killed-copy"))


def test_retained_wal_beyond_the_limit_is_reported_and_described(
    fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    home, supervisor = fleet
    monkeypatch.setattr(stream_receiver, "RETAINED_EVERY", 0.5)
    seen: list[tuple[str, int, int]] = []
    monkeypatch.setattr(supervisor, "on_retained", lambda *args: seen.append(args))
    cluster = stream_only("retains")
    policy = policy_store.load_policy(cluster)
    policy_store.save_policy(cluster, dataclasses.replace(policy, stream_max_retained="1MB"))
    _wait("a receiver", lambda: "retains" in supervisor.receivers)
    # the receiver reports a flush at each segment's end: until then the slot holds back what
    # was written since; more WAL each time, until a look finds over 1MB held back
    _wait("the event", lambda: seen or commit_rows("retains", 1, wal_bytes=2**20) and seen)
    name, retained, limit = seen[0]
    assert name == "retains" and limit == 2**20 and retained > limit
    warnings = describe.describe(cluster).as_json()["stream_warnings"]
    assert any("over stream.maxRetained 1MB" in w for w in warnings)


def test_a_repository_outage_while_streaming_loses_nothing(fleet, own_moto) -> None:  # noqa: F811
    home, supervisor = fleet
    cluster = stream_only("away", own_moto.url)
    _wait("a receiver", lambda: "away" in supervisor.receivers)
    commit_rows("away", 1)
    own_moto.stop()
    before = commit_rows("away", 3, wal_bytes=20 * 2**20)
    sql("away", "SELECT pg_switch_wal()")
    spool = stream.spool_dir(cluster)
    _wait(
        "the spool keeps completed segments",
        lambda: [n for n in os.listdir(spool) if len(n) == 24],
    )
    _wait("the outage noticed", lambda: supervisor.receivers["away"].last_error)
    own_moto.start()
    _wait(
        "the spool emptied of completed segments",
        lambda: not [n for n in os.listdir(spool) if len(n) == 24],
        timeout=120,
    )
    _wait("the window passes the last commit", lambda: passes(cluster, before))
    assert len(periods(cluster)) == 1, "no gap"


def test_the_agent_stopped_and_started_again_catches_up(home: Path) -> None:
    """End to end: `pgpitr agent start` streams the cluster the CLI put in stream mode."""
    cli("cluster", "create", "caught")
    cli(
        "cluster",
        "edit-backup-policy",
        "caught-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=true,schedule.logfile.method=stream",
    )
    sql("caught", "CREATE TABLE msg (id int PRIMARY KEY)")
    cli("cluster", "backup", "caught")
    cluster = Cluster.get("caught")
    cluster.set_archive_command(conf.ARCHIVE_OFF)
    try:
        cli("agent", "start")
        _wait("the agent's receiver", lambda: slots.slot_state(cluster).active, timeout=180)
        before = commit_rows("caught", 1)
        _wait("the window passes the commit", lambda: passes(cluster, before))
        cli("agent", "stop")
        _wait("the receiver gone", lambda: not slots.slot_state(cluster).active)
        before = commit_rows("caught", 3, wal_bytes=20 * 2**20)
        sql("caught", "SELECT pg_switch_wal()")
        assert slots.slot_state(cluster).retained > 16 * 2**20, "the slot holds the WAL"
        described = json.loads(cli("cluster", "describe", "caught", "-o", "json").stdout)
        assert any("no receiver streams" in w for w in described["stream_warnings"])
        cli("agent", "start")
        _wait(
            "the window passes the commits made meanwhile",
            lambda: passes(cluster, before),
            timeout=180,
        )
        assert len(periods(cluster)) == 1, "no gap"
        text = cli("cluster", "describe", "caught").stdout
        assert "WAL Streaming:" in text and "running (pid" in text
    finally:
        cli("agent", "stop", check=False)


def test_a_receiver_left_by_a_killed_agent_is_stopped_by_the_next_one(home: Path) -> None:
    cluster = stream_only("orphan")
    thread, stop, supervisor = stream.start(tick=0.5, home=home)
    _wait(
        "a receiver",
        lambda: (
            "orphan" in supervisor.receivers and supervisor.receivers["orphan"].process is not None
        ),
    )
    # the agent dies with -9: its receiver goes on, and the status file still names it
    left = supervisor.receivers["orphan"].process
    supervisor.receivers["orphan"].process = None
    stop.set()
    thread.join(timeout=60)
    status = stream_files.read_status(cluster) or {}
    write_json_atomic(stream_files.status_path(cluster), {**status, "pid": left.pid})
    assert left.poll() is None and slots.slot_state(cluster).active
    thread, stop, supervisor = stream.start(tick=0.5, home=home)
    try:
        _wait("the left receiver stopped", lambda: left.poll() is not None)
        _wait(
            "a new receiver streams",
            lambda: (
                (p := supervisor.receivers["orphan"].process) is not None
                and p.poll() is None
                and slots.slot_state(cluster).active
            ),
        )
        before = commit_rows("orphan", 1)
        _wait("the window passes the commit", lambda: passes(cluster, before), cluster=cluster)
    finally:
        stop.set()
        thread.join(timeout=60)
