"""Streaming across switches (issue 16, item 3) on a real PostgreSQL 15: from archive_command to
streaming and back, and a new timeline (a cluster restored from a streamed source) streamed in
turn.  The supervisor runs in this process, in a thread, as the agent runs it; one source
cluster for the module.

After every switch the recoverable window is one period reaching the last commit (no gap),
every WAL file name in the repository has exactly one object (no second version, no streamed
partial left behind), and restores have exactly the rows committed up to their target.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from pgpitr import cluster_repository, policy_store
from pgpitr.operations import create, delete, describe, log_backup
from pgpitr.postgres import slots
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import Repository
from pgpitr.wal import archive, stream
from tests import engine
from tests.conftest import shared_home
from tests.pg import rows, sql

NAME = "switching"


def _wait(what: str, check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.1)


def periods(cluster: Cluster) -> list[tuple[datetime, datetime]]:
    return [
        (datetime.fromisoformat(a), datetime.fromisoformat(b))
        for a, b in describe.describe(cluster).as_json()["recoverable_time"]
    ]


def commit(cluster: Cluster, value: int) -> datetime:
    """Insert one row; a time at or before its commit record's (taken just before it)."""
    before = datetime.now(UTC)
    sql(cluster.name, "INSERT INTO msg VALUES (%s)", (value,))
    return before


def covered(cluster: Cluster, since: datetime) -> None:
    """Wait until the window, in one period without a gap, reaches a commit made after
    ``since``."""

    def reached() -> bool:
        found = periods(cluster)
        return len(found) == 1 and found[0][1] >= since

    _wait("one period of the window reaching the commit", reached)


def objects_per_name(repo: Repository, stanza: str) -> Counter[str]:
    names = Counter()
    for info in repo.list(f"{stanza}/wal/"):
        parsed = archive.split_object_key(info.key)
        if parsed:
            names[parsed[0]] += 1
    return names


def one_object_per_name(repo: Repository, stanza: str) -> Counter[str]:
    names = objects_per_name(repo, stanza)
    assert not [n for n, count in names.items() if count > 1], "a WAL file stored twice"
    return names


def streamed_partials(names: Counter[str]) -> list[str]:
    return [n for n in names if archive.STREAMED_PARTIAL_RE.match(n)]


@pytest.fixture(scope="module")
def source() -> Iterator[tuple[Cluster, stream.Supervisor]]:
    """A cluster archiving into a file repository, with a full backup, and the supervisor in a
    thread of this process (pinned to this home)."""
    with shared_home() as home:
        cluster = create.create(NAME)
        log_backup.set_log_backup(cluster, True)
        sql(NAME, "CREATE TABLE msg (id int PRIMARY KEY)")
        engine.backup(cluster)
        thread, stop, supervisor = stream.start(tick=0.5, home=home)
        try:
            yield Cluster.get(NAME), supervisor
        finally:
            stop.set()
            thread.join(timeout=60)


def _next(cluster: Cluster) -> int:
    return max(rows(cluster.name), default=0) + 1


def _stream(cluster: Cluster, on: bool) -> None:
    log_backup.set_streaming(cluster, on, False)
    if on:
        _wait("the receiver streams", lambda: slots.slot_state(cluster).active)


def test_archive_to_stream_and_back_leaves_no_gap_and_one_object_per_name(
    source: tuple[Cluster, stream.Supervisor],
) -> None:
    cluster, supervisor = source
    repo = cluster_repository.repository(cluster)
    if policy_store.load_policy(cluster).logfile_method == "stream":
        _stream(cluster, False)
    before_all = set(rows(NAME))

    # archive_command: a commit reaches the window once its segment is archived
    first = _next(cluster)
    since = commit(cluster, first)
    log_backup.switch_and_confirm(cluster, repo)
    covered(cluster, since)

    # streaming: commits reach the window without a switch (the partial), and across one
    _stream(cluster, True)
    since = commit(cluster, first + 1)
    covered(cluster, since)
    segment = sql(NAME, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
    assert archive.streamed_partials(repo, NAME, segment), "the commit is in a streamed partial"
    sql(NAME, "SELECT pg_switch_wal()")
    since = commit(cluster, first + 2)
    covered(cluster, since)
    inside = datetime.now(UTC)  # the restore target inside the stream phase
    time.sleep(0.05)
    since = commit(cluster, first + 3)
    covered(cluster, since)

    # archive_command again: the partials go, the next commits arrive by archiving
    _stream(cluster, False)
    _wait("the receiver stops", lambda: NAME not in supervisor.receivers)
    since = commit(cluster, first + 4)
    log_backup.switch_and_confirm(cluster, repo)
    covered(cluster, since)

    # the receiver left nothing in the spool: no partial to upload after the switch back, none
    # for a later receiver to start from (a segment the server may have recycled by then)
    spool = stream.spool_dir(cluster)
    assert not [n for n in os.listdir(spool) if archive.WAL_FILE_RE.match(n)]
    names = one_object_per_name(repo, NAME)
    assert not streamed_partials(names), "a streamed partial left after switching back"
    assert archive.SEGMENT_RE.match(segment) and segment in names
    expected = before_all | set(range(first, first + 5))
    assert set(rows(NAME)) == expected

    latest = engine.restore("switching-latest", NAME, None)
    try:
        assert set(rows("switching-latest")) == expected
        assert latest.timeline == 2
    finally:
        delete.delete(Cluster.get("switching-latest"))
    engine.restore("switching-inside", NAME, inside)
    try:
        assert set(rows("switching-inside")) == before_all | set(range(first, first + 3))
    finally:
        delete.delete(Cluster.get("switching-inside"))


def test_a_new_timeline_is_streamed_with_its_history(
    source: tuple[Cluster, stream.Supervisor],
) -> None:
    cluster, supervisor = source
    _stream(cluster, True)
    value = _next(cluster)
    since = commit(cluster, value)
    covered(cluster, since)
    expected = set(rows(NAME))

    # restored to latest from what was streamed: the copy runs on a timeline of its own
    result = engine.restore("switched", NAME, None)
    copy = Cluster.get("switched")
    try:
        assert set(rows("switched")) == expected
        tli = result.timeline
        assert tli >= 2
        history = f"{tli:08X}.history"
        repo = cluster_repository.repository(copy)
        # the history file reaches the copy's own stanza by archive_command (the archiver marks
        # it done once wal-push stored it); pg_receivewal, started on timeline tli, fetches it
        # too (TIMELINE_HISTORY) and the receiver's push finds the same bytes: one object
        _wait(
            "archive_command archived the history file",
            lambda: (
                sql(
                    "switched",
                    "SELECT count(*) FROM pg_ls_dir('pg_wal/archive_status') AS f WHERE f = %s",
                    (f"{history}.done",),
                )[0][0]
                == 1
            ),
        )
        assert archive.stored_versions(repo, "switched", history)
        on_server = sql("switched", "SELECT pg_read_file(%s)", (f"pg_wal/{history}",))[0][0]
        stored = archive.stored_versions(repo, "switched", history)
        assert len(stored) == 1
        assert repo.get_document(stored[0][0], stored[0][1]).decode() == on_server

        engine.backup(copy)
        _stream(copy, True)
        assert policy_store.load_policy(copy).logfile_method == "stream"
        value = max(expected) + 1
        since = commit(copy, value)
        covered(copy, since)
        # the receiver streams the new timeline: the segment it writes is one of timeline tli
        spool = stream.spool_dir(copy)
        assert [n for n in os.listdir(spool) if n.startswith(f"{tli:08X}")]
        assert "switched" in supervisor.receivers
        one_object_per_name(repo, "switched")

        again = engine.restore("switched-again", "switched", None)
        try:
            assert set(rows("switched-again")) == expected | {value}
            assert again.timeline > tli
        finally:
            delete.delete(Cluster.get("switched-again"))
    finally:
        delete.delete(Cluster.get("switched"))
