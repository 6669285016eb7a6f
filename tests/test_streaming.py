"""Streaming WAL (pgpitr/wal/stream/) on a real PostgreSQL 15: the supervisor runs in this
process, in a thread, as the agent runs it; one cluster for the module.

A row committed without any WAL switch is inside describe's window within seconds and a restore
to latest has it; completed segments replace their partials, leaving one object per name;
synchronous streaming names the receiver in synchronous_standby_names and undoes it; stream
mode off drops the slot and the partials.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgpitr import cluster_repository, policy_store
from pgpitr import policy as pol
from pgpitr.catalog import walindex
from pgpitr.errors import ClusterStateError, InvalidInput
from pgpitr.operations import create, delete, describe, edit_policy, log_backup
from pgpitr.postgres import slots
from pgpitr.postgres.cluster import Cluster
from pgpitr.wal import archive
from pgpitr.wal import stream as wal_stream
from pgpitr.wal.stream import files as stream_files
from pgpitr.wal.stream import receiver as stream_receiver
from pgpitr.wal.stream import segments as stream_segments
from tests import engine
from tests.conftest import shared_home
from tests.pg import archive_now, rows, sql

NAME = "streamed"


# -- without a server ------------------------------------------------------------------------


def test_written_extent_finds_the_end_of_what_was_written(tmp_path: Path) -> None:
    path = tmp_path / "000000010000000000000003.partial"
    segment = bytearray(16 * 2**20)
    path.write_bytes(segment)
    assert stream_segments.written_extent(path) == 0
    for page in range(5):  # five pages written, the fifth up to byte 100 of it
        segment[page * stream_segments.PAGE : page * stream_segments.PAGE + 2] = b"\x10\xd1"
    segment[4 * stream_segments.PAGE + 99] = 7
    path.write_bytes(segment)
    assert stream_segments.written_extent(path) == 4 * stream_segments.PAGE + 100


def test_the_receivers_log_is_set_aside_once_over_its_limit(tmp_path: Path) -> None:
    log = tmp_path / "stream.log"
    stream_receiver._rotate(log, limit=10)  # no log yet: nothing to do
    log.write_text("short\n")
    stream_receiver._rotate(log, limit=10)
    assert log.read_text() == "short\n" and not (tmp_path / "stream.log.1").exists()
    log.write_text("a longer log\n")
    (tmp_path / "stream.log.1").write_text("the oldest\n")
    stream_receiver._rotate(log, limit=10)
    assert not log.exists() and (tmp_path / "stream.log.1").read_text() == "a longer log\n"


def test_policy_keys_for_streaming() -> None:
    base = pol.BackupPolicy(cluster="p", create_time="2026-12-01T00:00:00+00:00")
    assert (base.logfile_method, base.logfile_synchronous) == ("archive", False)
    streamed = pol.apply_settings(
        base,
        [
            "schedule.logfile.method=STREAM,schedule.logfile.synchronous=true,"
            "stream.maxRetained=512MB"
        ],
    )
    assert (streamed.logfile_method, streamed.logfile_synchronous) == ("stream", True)
    assert pol.parse_size(streamed.stream_max_retained) == 512 * 2**20
    assert pol.from_yaml(pol.to_yaml(streamed), base) == streamed
    assert pol.from_dict(pol.to_dict(streamed)) == streamed
    with pytest.raises(InvalidInput, match="needs schedule.logfile.method=stream"):
        pol.apply_settings(base, ["schedule.logfile.synchronous=true"])
    with pytest.raises(InvalidInput, match="not a log backup method"):
        pol.apply_settings(base, ["schedule.logfile.method=rsync"])
    with pytest.raises(InvalidInput, match="not a size"):
        pol.apply_settings(base, ["stream.maxRetained=lots"])


def test_the_streaming_switch_follows_log_backup_method_and_synchronous() -> None:
    base = pol.BackupPolicy(cluster="p", create_time="", logfile_enabled=True)
    stream = pol.apply_settings(base, ["schedule.logfile.method=stream"])
    synchronous = pol.apply_settings(stream, ["schedule.logfile.synchronous=true"])
    assert edit_policy.PolicyChange(base, stream).streaming_switch
    assert edit_policy.PolicyChange(stream, synchronous).streaming_switch
    assert edit_policy.PolicyChange(synchronous, stream).streaming_switch
    # log backup off stops streaming too; a method kept while log backup stays off changes nothing
    off = pol.apply_settings(stream, ["schedule.logfile.enable=false"])
    assert edit_policy.PolicyChange(stream, off).streaming_switch
    idle = pol.apply_settings(base, ["schedule.logfile.enable=false"])
    assert not edit_policy.PolicyChange(
        idle, pol.apply_settings(idle, ["retention.ttl=3d"])
    ).streaming_switch
    assert not edit_policy.PolicyChange(
        base, pol.apply_settings(base, ["rpo.max=1m"])
    ).streaming_switch


# -- on a server -----------------------------------------------------------------------------


def _wait(what: str, check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what} within {timeout:.0f} s"
        time.sleep(0.1)


def window_end(cluster: Cluster) -> datetime | None:
    periods = describe.describe(cluster).as_json()["recoverable_time"]
    return datetime.fromisoformat(periods[-1][1]) if periods else None


@pytest.fixture(scope="module")
def streamed_cluster() -> Iterator[tuple[Cluster, Path]]:
    """A cluster in stream mode into a file repository, with a backup; its home."""
    with shared_home() as home:
        cluster = create.create(NAME)
        log_backup.set_log_backup(cluster, True)
        sql(NAME, "CREATE TABLE msg (id int PRIMARY KEY)")
        engine.backup(cluster)
        log_backup.set_streaming(cluster, True, False)
        yield cluster, home


@pytest.fixture
def streamed(streamed_cluster: tuple[Cluster, Path]) -> Iterator[Cluster]:
    """The module's cluster streaming asynchronously, under a supervisor (in a thread of this
    process, as the agent runs it) of this test's own: a receiver an earlier test ended, in any
    order, would otherwise come back only after the supervisor's restart pause (up to 30 s)."""
    cluster, home = streamed_cluster
    log_backup.set_streaming(cluster, True, False)
    # pinned to this home: another test's home must not get this supervisor's receivers
    thread, stop, _ = wal_stream.start(tick=0.5, home=home)
    try:
        _wait("the receiver streams", lambda: slots.slot_state(cluster).active)
        yield Cluster.get(NAME)
    finally:
        stop.set()
        thread.join(timeout=60)


def test_a_commit_without_a_switch_is_in_the_window_and_restored_to_latest(
    streamed: Cluster,
) -> None:
    # a segment of this test's own: a receiver of an earlier test's supervisor may have left a
    # partial of the current one, which only that receiver knew to replace
    archive_now(NAME)
    # no switch at all while it waits, not even archive_timeout's
    streamed.change_settings({"archive_timeout": "0"})
    try:
        first = max(rows(NAME), default=0) + 1
        sql(NAME, "INSERT INTO msg VALUES (%s)", (first,))
        before = datetime.now(UTC)
        sql(NAME, "INSERT INTO msg VALUES (%s)", (first + 1,))
        at_commit = sql(NAME, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
        archived = sql(NAME, "SELECT archived_count FROM pg_stat_archiver")[0][0]
        # nothing else commits here (no agent, no heartbeat): a window ending at or after
        # `before` holds the second row's commit, which is in a segment no switch completed
        _wait("the window passes the commit", lambda: (window_end(streamed) or before) > before)
        assert sql(NAME, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0] == at_commit
        assert sql(NAME, "SELECT archived_count FROM pg_stat_archiver")[0][0] == archived
    finally:
        streamed.change_settings({"archive_timeout": None})
    info = describe.describe(streamed).as_json()
    assert info["log_method"] == "stream" and info["stream"]["receiver_running"]
    assert info["stream"]["slot_active"]
    repo = cluster_repository.repository(streamed)
    index = walindex.wal_index(repo, NAME, streamed.state.wal_segment_size)
    current = sql(NAME, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
    # partials are never indexed: the listing of the segment's log directory shows them
    segment = archive.Segment.parse(current, streamed.state.wal_segment_size)
    assert not index.has_partial(segment)
    index.look(segment)
    assert index.has_partial(segment) and not index.has(segment)
    assert len(archive.streamed_partials(repo, NAME, current)) == 1, "older partials are removed"

    expected = rows(NAME)
    sql(NAME, "INSERT INTO msg VALUES (%s)", (first + 2,))  # after the restore's snapshot
    result = engine.restore("streamed-copy", NAME, None)
    try:
        restored = rows("streamed-copy")
        assert restored[: len(expected)] == expected and first + 1 in restored
        assert set(restored) <= set(expected) | {first + 2}
        assert result.last_commit is not None and result.last_commit > before
    finally:
        delete.delete(Cluster.get("streamed-copy"))


def test_a_completed_segment_replaces_its_partials_once(streamed: Cluster) -> None:
    sql(NAME, "INSERT INTO msg VALUES (%s)", (max(rows(NAME), default=0) + 1,))
    segment = sql(NAME, "SELECT pg_walfile_name(pg_current_wal_lsn())")[0][0]
    repo = cluster_repository.repository(streamed)
    _wait("a partial of the segment", lambda: archive.streamed_partials(repo, NAME, segment))
    sql(NAME, "SELECT pg_switch_wal()")
    _wait(
        "the completed segment without partials",
        lambda: (
            archive.stored_versions(repo, NAME, segment)
            and not archive.streamed_partials(repo, NAME, segment)
        ),
    )
    # archive_command stores the same segment too: same name, same bytes, one object
    _wait(
        "archive_command's copy",
        lambda: sql(NAME, "SELECT last_archived_wal FROM pg_stat_archiver")[0][0] >= segment,
    )
    assert len(archive.stored_versions(repo, NAME, segment)) == 1
    spool = wal_stream.spool_dir(streamed)
    _wait("the spool keeps no stored segment", lambda: segment not in os.listdir(spool))


def test_synchronous_streaming_names_the_receiver_and_is_undone(streamed: Cluster) -> None:
    log_backup.set_streaming(streamed, True, True)
    try:
        assert slots.synchronous_names(streamed) == slots.APPLICATION_NAME
        assert policy_store.load_policy(streamed).logfile_synchronous
        _wait(
            "the receiver is synchronous", lambda: slots.slot_state(streamed).sync_state == "sync"
        )
        # returns: the receiver flushed it
        sql(NAME, "INSERT INTO msg VALUES (%s)", (max(rows(NAME), default=0) + 1,))
        warnings = describe.describe(streamed).as_json()["stream_warnings"]
        assert any(w.startswith("SYNCHRONOUS") and "synchronous=false" in w for w in warnings)
    finally:
        log_backup.set_streaming(streamed, True, False)
    assert slots.synchronous_names(streamed) == ""
    assert not policy_store.load_policy(streamed).logfile_synchronous


def test_a_stuck_synchronous_receiver_holds_commits_until_synchronous_is_off(
    streamed: Cluster,
) -> None:
    log_backup.set_streaming(streamed, True, True)
    try:
        _wait(
            "the receiver is synchronous", lambda: slots.slot_state(streamed).sync_state == "sync"
        )
        query = "SELECT pid FROM pg_stat_replication WHERE application_name = %s"
        (sender,) = sql(NAME, query, (slots.APPLICATION_NAME,))[0]
        value = max(rows(NAME), default=0) + 1
        committed = threading.Event()

        def commit() -> None:
            sql(NAME, "INSERT INTO msg VALUES (%s)", (value,))
            committed.set()

        os.kill(sender, signal.SIGSTOP)  # the receiver gets nothing more, as if it hung
        try:
            threading.Thread(target=commit, daemon=True).start()
            assert not committed.wait(3), "a commit returned that no receiver flushed"
            # the way out the warning names: synchronous off (edit-backup-policy runs this)
            log_backup.set_streaming(streamed, True, False)
            assert committed.wait(60), "the waiting commit was not released"
        finally:
            os.kill(sender, signal.SIGCONT)
    finally:
        log_backup.set_streaming(streamed, True, False)
    assert value in rows(NAME)
    assert slots.synchronous_names(streamed) == ""


def test_a_streamed_file_that_conflicts_with_the_archived_copy_is_kept_aside_and_said(
    home: Path,
) -> None:
    cluster = create.create("conflict")
    log_backup.set_log_backup(cluster, True)
    log_backup.set_streaming(cluster, True, False)  # stream mode; no receiver needed here
    repo = cluster_repository.repository(cluster)
    name = "0000000100000000000000F0"  # far ahead of anything the server writes here
    size = cluster.state.wal_segment_size
    archived = home / name
    archived.write_bytes(os.urandom(size))
    archive.push_file(repo, "conflict", archived)  # as archive_command stored it
    spool = wal_stream.spool_dir(cluster)
    spool.mkdir(parents=True, exist_ok=True)
    (spool / name).write_bytes(os.urandom(size))  # the stream's, other bytes

    stream_receiver.Receiver("conflict", home=home).upload(cluster)
    assert not (spool / name).exists()
    assert (stream_files.conflict_dir(cluster) / name).exists()
    assert len(archive.stored_versions(repo, "conflict", name)) == 1
    archive.fetch_file(repo, "conflict", name, home / "fetched")
    assert (home / "fetched").read_bytes() == archived.read_bytes(), "the stored copy stays"
    warnings = describe.describe(cluster).as_json()["stream_warnings"]
    assert any(name in w and "differ from the archived copies" in w for w in warnings), warnings
    log_backup.set_streaming(cluster, False, False)


def test_synchronous_is_refused_without_a_receiver(home: Path) -> None:
    cluster = create.create("nosync")
    log_backup.set_log_backup(cluster, True)
    with pytest.raises(ClusterStateError, match="no pgpitr receiver streams") as caught:
        log_backup.set_streaming(cluster, True, True, receiver_timeout=2)
    assert "pgpitr agent start" in (caught.value.hint or "")
    assert slots.synchronous_names(cluster) == "", "commits must not wait for nobody"
    policy = policy_store.load_policy(cluster)
    assert policy.logfile_method == "stream" and not policy.logfile_synchronous
    assert slots.slot_state(cluster).exists
    log_backup.set_streaming(cluster, False, False)
    assert not slots.slot_state(cluster).exists


def test_stream_mode_off_drops_the_slot_and_leaves_no_partial(home: Path) -> None:
    cluster = create.create("onoff")
    log_backup.set_log_backup(cluster, True)
    repo = cluster_repository.repository(cluster)
    thread, stop, _ = wal_stream.start(tick=0.5, home=home)
    try:
        log_backup.set_streaming(cluster, True, False)
        sql("onoff", "SELECT pg_current_xact_id()")
        _wait(
            "a partial",
            lambda: any(
                archive.STREAMED_PARTIAL_RE.match(n[0])
                for n in (archive.split_object_key(i.key) for i in repo.list("onoff/wal/"))
                if n
            ),
        )
        log_backup.set_streaming(cluster, False, False)
    finally:
        stop.set()
        thread.join(timeout=60)
    assert not slots.slot_state(cluster).exists
    assert policy_store.load_policy(cluster).logfile_method == "archive"
    names = [archive.split_object_key(i.key) for i in repo.list("onoff/wal/")]
    assert not [n for n in names if n and archive.STREAMED_PARTIAL_RE.match(n[0])]


def test_the_spool_is_kept_while_streaming_is_on_and_emptied_once_it_is_off(home: Path) -> None:
    """A receiver stopped with streaming on (the agent stops) leaves its partial for the next
    one to go on from; turned off, by the switch with no agent running or while a receiver
    stops (the supervisor's pass can stop it before its own pass saw the change), nothing is
    left in the spool for a later receiver to start from."""
    cluster = create.create("spooled")
    log_backup.set_log_backup(cluster, True)
    spool = wal_stream.spool_dir(cluster)

    def partials() -> list[str]:
        names = os.listdir(spool) if spool.exists() else []
        return [n for n in names if archive.WAL_FILE_RE.match(n)]

    def streamed_for_a_while() -> stream_receiver.Receiver:
        receiver = stream_receiver.Receiver("spooled", tick=0.2, home=home)
        receiver.start()
        sql("spooled", "SELECT pg_current_xact_id()")
        _wait("a partial in the spool", partials)
        return receiver

    log_backup.set_streaming(cluster, True, False)
    streamed_for_a_while().stop()
    assert partials(), "kept for the next receiver"
    log_backup.set_streaming(cluster, False, False)  # no receiver runs
    assert not partials()

    log_backup.set_streaming(cluster, True, False)
    receiver = streamed_for_a_while()
    policy = policy_store.load_policy(cluster)
    policy_store.save_policy(cluster, dataclasses.replace(policy, logfile_method="archive"))
    receiver.stop()  # at once, as the supervisor does when it sees the change first
    assert not receiver.thread.is_alive() and not partials()
    slots.drop_slot(cluster)
