"""The catalog index (pgpitr/wal/index/) and the WAL index the chains read from it
(pgpitr/catalog/walindex.py ``WalIndex``): kept by every push and delete, rebuilt when absent, never
trusted over what the repository holds, and read in requests that do not grow with the archive.

The first part runs on real repositories (file and moto S3) with WAL objects named as pushes name
them; the end runs real PostgreSQL: pushes by the archiver, a delete-backup, retention, a kill -9
of a process in the middle of an index update, and a restore refused before it creates anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgpitr import cluster_repository
from pgpitr.catalog import timelines, walindex, window
from pgpitr.errors import NotFound, RecoveryTargetError, RepositoryError
from pgpitr.operations import create as operations_create
from pgpitr.operations import describe as catalog_describe
from pgpitr.operations import log_backup, retention
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import open_repository
from pgpitr.repository.base import REQUESTS, document_frame, request_counts
from pgpitr.targets import RestoreTarget
from pgpitr.wal import archive, index
from pgpitr.wal.index import loading as index_loading
from tests import engine
from tests.conftest import cli, shared_home
from tests.pg import archive_now, sql

#: 1 GB segments (PostgreSQL's largest): four per log directory, so that a few objects make
#: chains that span several directories
SEG = 1 << 30
PER_LOG = archive.segments_per_log(SEG)


@pytest.fixture
def repo(repo_url: str):
    return open_repository(repo_url)


def _push(repo, stanza: str, tmp: Path, name: str, body: bytes | None = None) -> archive.PushResult:
    path = tmp / name
    path.write_bytes(body if body is not None else f"segment {name}\n".encode())
    return archive.push_file(repo, stanza, path)


def _fill(repo, stanza: str, numbers, *, indexed: bool = True) -> None:
    """Segments stored as the push worker stores them (an object each, one index delta for the
    batch), or, not ``indexed``, as a pgpitr without the index did."""
    journal = index.Journal(repo, stanza)
    for name in _names(1, numbers):
        frame = document_frame(name.encode())
        sha = hashlib.sha256(frame).hexdigest()
        repo.put_frame(archive.object_key(stanza, name, sha), frame)
        journal.add(name, sha)
    if indexed:
        journal.flush()


def _names(tli: int, numbers, size: int = SEG) -> list[str]:
    return [archive.Segment(tli, n).name(size) for n in numbers]


def _segments(ix: walindex.WalIndex, tli: int, numbers) -> list[int]:
    return [n for n in numbers if ix.has(archive.Segment(tli, n))]


def _delete_object(repo, stanza: str, name: str) -> None:
    (key, _sha), *_ = archive.stored_versions(repo, stanza, name)
    repo.delete(key)  # behind pgpitr's back: no index record


# -- what the index holds --------------------------------------------------------------------


def test_pushes_are_indexed_and_read_back_without_listing_the_wal(repo, tmp_path: Path) -> None:
    assert walindex.wal_index(repo, "s", SEG).state.rebuilt  # none yet: built (empty), stored
    for name in _names(1, range(1, 6)) + _names(1, range(8, 10)):
        _push(repo, "s", tmp_path, name)
    history = "1\t0/9000000\tno recovery target specified\n"
    _push(repo, "s", tmp_path, "00000002.history", history.encode())
    ix = walindex.wal_index(repo, "s", SEG)
    assert _segments(ix, 1, range(0, 12)) == [1, 2, 3, 4, 5, 8, 9]
    assert ix.history == {2: [(1, 0x9000000)]}
    assert ix.timelines() == {1, 2}
    # runs, not names: the chain is followed a run at a time
    assert ix.state.timelines[1].runs == [[1, 5], [8, 9]]
    assert (
        ix.objects["00000002.history"]
        == archive.stored_versions(repo, "s", "00000002.history")[0][0]
    )
    # a push whose index record was lost (killed between the two) is indexed by the re-push
    for key in [i.key for i in repo.list(index.prefix("s")) if "delta-" in i.key][-1:]:
        repo.delete(key)  # the history's delta
    assert walindex.wal_index(repo, "s", SEG).history == {}
    assert _push(repo, "s", tmp_path, "00000002.history", history.encode()).already_there
    assert walindex.wal_index(repo, "s", SEG).history == {2: [(1, 0x9000000)]}


def test_deltas_are_compacted_into_a_summary_and_readers_stay_bounded(
    repo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = _names(1, range(1, 2 * index.COMPACT_AT + 3))
    for name in names:
        _push(repo, "s", tmp_path, name)
    walindex.wal_index(repo, "s", SEG)  # the first read builds base.json and a summary
    keys = lambda: sorted(i.key.rsplit("/", 1)[-1] for i in repo.list("s/index/00000001/"))  # noqa: E731
    # a read folds what it finds once there are COMPACT_AT deltas or more
    for name in _names(1, range(100, 100 + index.COMPACT_AT)):
        _push(repo, "s", tmp_path, name)
    state = index.load(repo, "s", SEG)
    assert state.objects_read == 1 + index.COMPACT_AT
    assert index.load(repo, "s", SEG).objects_read == 1  # the summary folds them all
    # folded deltas are deleted by a later compaction, once the summary is GRACE old
    monkeypatch.setattr(index_loading, "GRACE", 0.0)
    for name in _names(1, range(200, 200 + index.COMPACT_AT)):
        _push(repo, "s", tmp_path, name)
    index.load(repo, "s", SEG)
    assert len([k for k in keys() if k.startswith("delta-")]) == index.COMPACT_AT
    ix = walindex.wal_index(repo, "s", SEG)
    assert ix.state.timelines[1].runs == [
        [1, len(names)],
        [100, 99 + index.COMPACT_AT],
        [200, 199 + index.COMPACT_AT],
    ]


def test_a_missing_or_damaged_index_is_rebuilt_from_a_listing(repo, tmp_path: Path) -> None:
    for name in _names(1, range(1, 5)):
        _push(repo, "s", tmp_path, name)
    walindex.wal_index(repo, "s", SEG)
    repo.delete_prefix(index.prefix("s"))
    ix = walindex.wal_index(repo, "s", SEG)
    assert ix.state.rebuilt and _segments(ix, 1, range(6)) == [1, 2, 3, 4]
    assert repo.exists(f"{index.prefix('s')}{index.BASE}")  # stored: the next read is not one
    assert not walindex.wal_index(repo, "s", SEG).state.rebuilt
    repo.put_frame("s/index/00000001/summary.json", b"not a zstd frame")
    ix = walindex.wal_index(repo, "s", SEG)
    assert ix.state.rebuilt and _segments(ix, 1, range(6)) == [1, 2, 3, 4]


def test_retention_records_its_drop_before_deleting(repo, tmp_path: Path) -> None:
    from tests.test_retention import SEG as SEG16
    from tests.test_retention import _backup

    archive.check_archive_info(
        repo, "s", "1", create={"wal_segment_size": SEG16}
    )  # starts the index
    for name in _names(1, range(1, 7), SEG16):
        _push(repo, "s", tmp_path, name)
    _backup(repo, "b4", 0, start_lsn="0/4000028")
    assert retention.prune_wal(repo, "s") == 3
    ix = walindex.wal_index(repo, "s", SEG16)
    assert not ix.state.rebuilt and _segments(ix, 1, range(8)) == [4, 5, 6]
    # a rebuild agrees with the index kept by the pushes and the prune
    repo.delete_prefix(index.prefix("s"))
    assert walindex.wal_index(repo, "s", SEG16).state.timelines[1].runs == [[4, 6]]


# -- never trusted over what exists ------------------------------------------------------------


def test_chains_check_their_start_and_end_against_the_repository(repo) -> None:
    index.start(repo, "s")
    _fill(repo, "s", range(1, 2 * PER_LOG + 10))  # three log directories
    path = [(1, 0)]
    start = archive.Segment(1, 3)
    end_name = archive.Segment(1, 2 * PER_LOG + 9).name(SEG)
    _delete_object(repo, "s", end_name)
    ix = walindex.wal_index(repo, "s", SEG)
    assert timelines.chain_end(ix, start, path).number == 2 * PER_LOG + 9  # the index alone
    assert window._checked_end(ix, start, path, False).number == 2 * PER_LOG + 8
    # a segment in the middle is seen only by a restore's check of every segment
    _delete_object(repo, "s", archive.Segment(1, PER_LOG + 5).name(SEG))
    ix = walindex.wal_index(repo, "s", SEG)
    assert window._checked_end(ix, start, path, False).number == 2 * PER_LOG + 8
    ix = walindex.wal_index(repo, "s", SEG)
    assert window._checked_end(ix, start, path, True).number == PER_LOG + 4
    # the start gone: no chain at all
    _delete_object(repo, "s", start.name(SEG))
    with pytest.raises(NotFound):
        window._checked_end(walindex.wal_index(repo, "s", SEG), start, path, False)


def test_a_segment_the_index_missed_extends_the_chain(repo) -> None:
    index.start(repo, "s")
    _fill(repo, "s", range(1, 5))
    _fill(repo, "s", range(5, PER_LOG + 3), indexed=False)
    ix = walindex.wal_index(repo, "s", SEG)
    assert window._checked_end(ix, archive.Segment(1, 1), [(1, 0)], False).number == PER_LOG + 2


def _put_back(repo, stanza: str, name: str) -> None:
    """A segment object of ``_fill`` stored again behind pgpitr's back (no index record)."""
    frame = document_frame(name.encode())
    repo.put_frame(archive.object_key(stanza, name, hashlib.sha256(frame).hexdigest()), frame)


def test_a_hole_found_by_a_full_check_is_written_back_into_the_index(repo) -> None:
    index.start(repo, "s")
    _fill(repo, "s", range(1, 2 * PER_LOG + 10))  # five log directories of four segments
    path, start = [(1, 0)], archive.Segment(1, 3)
    hole = archive.Segment(1, PER_LOG + 5).name(SEG)
    _delete_object(repo, "s", hole)
    # describe lists the ends only: the hole in the middle directory is not seen
    describe = walindex.wal_index(repo, "s", SEG)
    assert window._checked_end(describe, start, path, False).number == 2 * PER_LOG + 9
    assert describe.repairs == 0
    # a full check (a refresh, a restore plan) lists the middle directory and corrects the index
    full = walindex.wal_index(repo, "s", SEG)
    assert window._checked_end(full, start, path, True).number == PER_LOG + 4
    assert full.repairs == 1
    # the next reader knows from the index alone: no listing of the middle directory needed
    after = walindex.wal_index(repo, "s", SEG)
    assert timelines.chain_end(after, start, path).number == PER_LOG + 4
    assert window._checked_end(after, start, path, False).number == PER_LOG + 4
    # the directories past the hole, where the old end was, are not listed
    assert not after.listed(archive.Segment(1, PER_LOG + 5 + PER_LOG))
    assert not after.listed(archive.Segment(1, 2 * PER_LOG + 9))
    assert after.repairs == 0  # what it listed agrees with the corrected index
    # the segment put back (behind pgpitr's back too): it is the segment after the chain's
    # end, whose directory every reader lists, so the first one finds it, adds it back, and
    # the chain is whole again
    _put_back(repo, "s", hole)
    found = walindex.wal_index(repo, "s", SEG)
    assert window._checked_end(found, start, path, False).number == 2 * PER_LOG + 9
    assert found.repairs == 1
    again = walindex.wal_index(repo, "s", SEG)
    assert again.state.timelines[1].runs == [[1, 2 * PER_LOG + 9]]  # before any listing
    assert window._checked_end(again, start, path, True).number == 2 * PER_LOG + 9
    assert again.repairs == 0


def test_a_repair_never_drops_a_segment_pushed_after_its_listing(repo, tmp_path: Path) -> None:
    """A slow checker lists a directory, a push stores the missing segment, then the checker
    writes its drop: the delta is named with the listing's time, so the push's record wins."""
    index.start(repo, "s")
    names = _names(1, range(1, 6))
    for name in names:
        _push(repo, "s", tmp_path, name)
    _delete_object(repo, "s", names[2])
    listed_at = time.time_ns()  # the checker's listing, which misses names[2]
    _push(repo, "s", tmp_path, names[2])  # archived again meanwhile: stored, then indexed
    index.record_repair(repo, "s", 1, listed_at_ns=listed_at, add={}, drop=[names[2]])
    assert index.load(repo, "s", SEG).timelines[1].runs == [[1, 5]]
    # a drop from a listing made after the push does apply (the segment then really is gone)
    _delete_object(repo, "s", names[2])
    index.record_repair(repo, "s", 1, listed_at_ns=time.time_ns(), add={}, drop=[names[2]])
    assert index.load(repo, "s", SEG).timelines[1].runs == [[1, 2], [4, 5]]


def test_a_repair_without_write_access_keeps_the_readers_answer(
    repo, monkeypatch: pytest.MonkeyPatch
) -> None:
    index.start(repo, "s")
    _fill(repo, "s", range(1, 2 * PER_LOG + 2))
    _delete_object(repo, "s", archive.Segment(1, PER_LOG + 1).name(SEG))
    before = sorted(i.key for i in repo.list(index.prefix("s")))
    readonly = walindex.wal_index(repo, "s", SEG, write=False)
    assert window._checked_end(readonly, archive.Segment(1, 1), [(1, 0)], True).number == PER_LOG
    assert readonly.repairs == 0 and sorted(i.key for i in repo.list(index.prefix("s"))) == before

    def refused(*_args, **_kwargs):
        raise RepositoryError("permission denied")

    monkeypatch.setattr(index, "record_repair", refused)
    writer = walindex.wal_index(repo, "s", SEG)
    assert window._checked_end(writer, archive.Segment(1, 1), [(1, 0)], True).number == PER_LOG
    assert writer.repairs == 0


def test_the_time_of_the_last_full_check_is_in_the_index(repo) -> None:
    index.start(repo, "s")
    assert index.load(repo, "s", SEG).checked_at is None
    index.record_checked(repo, "s", 1_000.5)
    index.record_checked(repo, "s", 2_000.25)
    assert index.load(repo, "s", SEG).checked_at == pytest.approx(2_000.25)
    tops = [i.key for i in repo.list(index.prefix("s")) if "/checked-" in i.key]
    assert len(tops) == 1  # the older record deleted
    # a rebuild lists the whole WAL: a full check too
    repo.delete_prefix(index.prefix("s"))
    before = time.time()
    rebuilt = index.load(repo, "s", SEG)
    assert rebuilt.rebuilt and rebuilt.checked_at is not None and rebuilt.checked_at >= before
    assert index.load(repo, "s", SEG).checked_at == pytest.approx(rebuilt.checked_at)


def test_describe_requests_do_not_grow_with_the_archive(repo, tmp_path: Path) -> None:
    """The WAL index of a stanza of two log directories of segments and of four costs the
    same requests (the listing it replaces costs one page per 1000 objects on S3)."""

    def requests(stanza: str, count: int) -> dict[str, int]:
        _fill(repo, stanza, range(1, count + 1), indexed=False)
        walindex.wal_index(repo, stanza, SEG)  # absent: rebuilt and stored once
        before = dict(REQUESTS)
        listed: list[str] = []
        whole = repo.list
        repo.list = lambda prefix: listed.append(prefix) or whole(prefix)
        try:
            ix = walindex.wal_index(repo, stanza, SEG)
            end = window._checked_end(ix, archive.Segment(1, 1), [(1, 0)], False)
        finally:
            del repo.list
        assert end.number == count
        # log directories only (STANZA/wal/TTTTTTTTLLLLLLLL/), never the whole archive
        wal_listings = [p for p in listed if p.startswith(f"{stanza}/wal/")]
        assert wal_listings and all(len(p.split("/")) == 4 for p in wal_listings), listed
        return {
            f"{b} {k}": n - before.get((b, k), 0)
            for (b, k), n in REQUESTS.items()
            if n != before.get((b, k), 0)
        }

    small = requests("small", PER_LOG + 3)  # the start and the end in two log directories
    large = requests("large", 3 * PER_LOG + 3)
    assert small == large and sum(small.values()) <= 6
    assert request_counts()  # counted by backend and kind


def test_a_backups_history_file_is_read_by_its_name_beside_any_number_of_segments(
    s3_url: str, tmp_path: Path
) -> None:
    """With log backup on, pg_basebackup prints no WAL range: the server's .backup file has it,
    and the server names it; reading it costs the same requests beside 1,001 segments (more
    than a LIST page) as beside none."""
    from pgpitr.operations.backup import history_file

    repo = open_repository(s3_url)
    history = (
        "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n"
        "STOP WAL LOCATION: 0/5000138 (file 000000010000000000000005)\n"
        "BACKUP METHOD: streamed\nBACKUP FROM: primary\nLABEL: b-1\nSTART TIMELINE: 1\n"
    )

    def requests(stanza: str, segments: int) -> dict[tuple[str, str], int]:
        _fill(repo, stanza, range(1, segments + 1))
        _push(repo, stanza, tmp_path, "000000010000000000000005.00000028.backup", history.encode())
        before = dict(REQUESTS)
        name = "000000010000000000000005.00000028.backup"
        found = history_file._read_history_file(repo, stanza, name, "b-1", timeout=5)
        assert found == ("0/5000028", "0/5000138", 1)
        return {k: n - before.get(k, 0) for k, n in REQUESTS.items() if n != before.get(k, 0)}

    assert requests("none", 0) == requests("many", 1001)


def test_describe_requests_stay_flat_after_a_full_check_repaired_a_hole(repo) -> None:
    """A hole in the middle of a chain of three log directories and of ten, found by a full
    check: describe then reads the same requests for both (the repair is one delta, and it
    lists the directories of the new end only)."""

    def requests(stanza: str, count: int) -> tuple[int, dict[str, int]]:
        index.start(repo, stanza)
        _fill(repo, stanza, range(1, count + 1))
        _delete_object(repo, stanza, archive.Segment(1, PER_LOG + 2).name(SEG))
        full = walindex.wal_index(repo, stanza, SEG)
        window._checked_end(full, archive.Segment(1, 1), [(1, 0)], True)
        before = dict(REQUESTS)
        ix = walindex.wal_index(repo, stanza, SEG)
        end = window._checked_end(ix, archive.Segment(1, 1), [(1, 0)], False)
        return end.number, {
            f"{b} {k}": n - before.get((b, k), 0)
            for (b, k), n in REQUESTS.items()
            if n != before.get((b, k), 0)
        }

    small = requests("small", 3 * PER_LOG)
    large = requests("large", 10 * PER_LOG)
    assert small[0] == large[0] == PER_LOG + 1  # the window ends before the hole
    assert small[1] == large[1] and sum(small[1].values()) <= 7


def test_a_streamed_partial_replaced_while_read_is_read_from_its_successor(
    tmp_path: Path,
) -> None:
    """The receiver stores the whole segment (or a longer partial), then deletes the partial a
    reader listed: the reader lists the directory again instead of failing (a describe of a
    streaming cluster did fail so)."""
    from pgpitr.wal.stream.segments import push_partial

    repo = open_repository(f"file://{tmp_path / 'repo'}")
    first, streamed = _names(1, [1, 2])
    _push(repo, "s", tmp_path, first)
    (tmp_path / "spool").mkdir()
    partial = tmp_path / "spool" / f"{streamed}.partial"
    partial.write_bytes(b"the first half")
    partial_key = push_partial(repo, "s", partial, len(b"the first half"))
    ix = walindex.wal_index(repo, "s", SEG)
    assert ix.look(archive.Segment(1, 2)) is False and ix.has_partial(archive.Segment(1, 2))
    assert ix.key(streamed) == partial_key
    _push(repo, "s", tmp_path, streamed, b"the whole segment")  # as the receiver does: then
    repo.delete(partial_key)  # the partial it replaced goes
    assert ix.read(repo, streamed) == b"the whole segment"
    # a file that is simply gone is not hidden
    _delete_object(repo, "s", first)
    with pytest.raises(NotFound):
        ix.read(repo, first)


# -- a kill -9 in the middle of an index update -------------------------------------------------

_KILLED_WRITER = textwrap.dedent(
    """
    import os, sys, time
    from pgpitr.repository import open_repository
    from pgpitr.wal import index
    from pgpitr.repository.file import FileRepository

    repo = open_repository(sys.argv[1])
    slow = FileRepository._write_atomic

    def stalled(self, key, chunks):  # the summary's bytes are written, then the process stops
        if key.endswith("summary.json"):
            def chunks_then_stop():
                for chunk in chunks:
                    yield chunk
                open(sys.argv[2], "w").close()
                time.sleep(60)
            return slow(self, key, chunks_then_stop())
        return slow(self, key, chunks)

    FileRepository._write_atomic = stalled
    index.load(repo, "s", int(sys.argv[3]))
    """
)


def test_a_kill_in_the_middle_of_a_compaction_leaves_the_old_state(tmp_path: Path) -> None:
    repo = open_repository(f"file://{tmp_path / 'repo'}")
    for name in _names(1, range(1, 4)):
        _push(repo, "s", tmp_path, name)
    walindex.wal_index(repo, "s", SEG)
    for name in _names(1, range(4, 4 + index.COMPACT_AT)):
        _push(repo, "s", tmp_path, name)
    expected = [[1, 3 + index.COMPACT_AT]]
    before = sorted(i.key for i in repo.list("s/index/"))
    mark = tmp_path / "in-the-middle"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, repo.url, str(mark), str(SEG)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
    )
    deadline = time.monotonic() + 60
    while not mark.exists() and child.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mark.exists(), "the writer did not reach the middle of its summary write"
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    # only the temporary was written: the old summary and every delta are as they were
    assert sorted(i.key for i in repo.list("s/index/")) == before
    state = index.load(repo, "s", SEG, write=False)
    assert not state.rebuilt and state.timelines[1].runs == expected
    assert index.load(repo, "s", SEG).timelines[1].runs == expected  # and a compaction works
    assert index.load(repo, "s", SEG).objects_read == 1


# -- on a real server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Archived:
    home: Path
    segment_size: int
    first: str  # the older backup
    second: str
    #: just after the last commit; the window of a whole archive reaches past it
    last_commit: datetime


def _listed(repo, stanza: str) -> set[str]:
    """Every WAL file of a stanza, from a full listing (what the index replaces)."""
    return {
        parsed[0]
        for info in repo.list(f"{stanza}/wal/")
        if (parsed := archive.split_object_key(info.key))
    }


def _indexed(repo, stanza: str, segment_size: int) -> set[str]:
    ix = walindex.wal_index(repo, stanza, segment_size, write=False)
    assert not ix.state.rebuilt  # kept by the pushes, never rebuilt
    return set(ix.objects)


@pytest.fixture(scope="module")
def archived() -> Iterator[Archived]:
    with shared_home() as home:
        cluster = operations_create.create("tix")
        # no commit but the fixture's: autovacuum's (a minute later, archived at
        # archive_timeout) would move the window's end past last_commit
        cluster.change_settings({"autovacuum": "off"})
        log_backup.set_log_backup(cluster, True)
        sql("tix", "CREATE TABLE msg (id int PRIMARY KEY)")
        first = engine.backup(cluster).name
        for row in (1, 2):
            sql("tix", "INSERT INTO msg VALUES (%s)", (row,))
            archive_now("tix")
        second = engine.backup(cluster).name
        for row in (3, 4):
            sql("tix", "INSERT INTO msg VALUES (%s)", (row,))
            archive_now("tix")
        yield Archived(home, cluster.state.wal_segment_size, first, second, datetime.now(UTC))


def _copy(archived: Archived, tmp_path: Path) -> tuple[str, object]:
    """The source's repository as it is now, copied: a test may then damage it."""
    source = Path(cluster_repository.repository(Cluster.get("tix")).location.path)
    shutil.copytree(source, tmp_path / "copy", ignore=shutil.ignore_patterns("*.pgpitr-tmp-*"))
    url = f"file://{tmp_path / 'copy'}"
    return url, open_repository(url)


def test_archiving_keeps_the_index_equal_to_the_archive(archived: Archived) -> None:
    repo = cluster_repository.repository(Cluster.get("tix"))
    assert _indexed(repo, "tix", archived.segment_size) == _listed(repo, "tix")
    assert any(n.endswith(".backup") for n in _listed(repo, "tix"))


def test_delete_backup_prunes_wal_and_the_index_alike(archived: Archived, tmp_path: Path) -> None:
    url, repo = _copy(archived, tmp_path)
    before = _listed(repo, "tix")
    retention.delete_backups(repo, "tix", [archived.first], force=True)
    after = _listed(repo, "tix")
    assert after < before  # the WAL only the first backup needed is gone
    assert _indexed(repo, "tix", archived.segment_size) == after
    # and the window of the second backup still reaches the last commit
    after_delete = window.recoverable_window(repo, "tix", Cluster.get("tix").bindir)
    assert [r.backup for r in after_delete.ranges] == [archived.second]


def test_a_segment_deleted_behind_pgpitrs_back_shrinks_the_window(
    archived: Archived, tmp_path: Path
) -> None:
    url, repo = _copy(archived, tmp_path)
    bindir = Cluster.get("tix").bindir
    whole = window.recoverable_window(repo, "tix", bindir)
    end = max(whole.ranges, key=lambda r: r.end)
    assert end.end < archived.last_commit
    _delete_object(repo, "tix", end.end_segment)
    shrunk = window.recoverable_window(repo, "tix", bindir)
    assert shrunk.periods[-1][1] < end.end  # the index still names it: the listing decides
    assert all(r.end_segment < end.end_segment for r in shrunk.ranges)


def test_a_restore_checks_every_segment_before_creating_anything(
    archived: Archived, tmp_path: Path
) -> None:
    url, repo = _copy(archived, tmp_path)
    bindir = Cluster.get("tix").bindir
    (second,) = [
        c
        for c in window.recoverable_window(repo, "tix", bindir).chains
        if c.backup.name == archived.second
    ]
    middle = archive.segment_of(
        second.backup.stop_lsn_int, second.end.timeline, archived.segment_size
    )
    _delete_object(repo, "tix", middle.next().name(archived.segment_size))
    # describe checks the ends only; the restore plan lists every directory of the chain
    with pytest.raises(RecoveryTargetError):
        engine.restore(
            "tix-hole",
            "tix",
            RestoreTarget.of(time=archived.last_commit.isoformat()),
            repository=url,
        )
    assert not (archived.home / "clusters" / "tix-hole").exists()
    assert not list(repo.list("tix-hole/"))
    # and the attempt corrected the index: the next reader knows of the hole without a listing
    hole = middle.next()
    ix = walindex.wal_index(repo, "tix", archived.segment_size)
    assert not ix.has(hole) and ix.has(middle) and not ix.listed(hole)


def test_a_refresh_finds_a_hole_describe_then_shows_and_a_put_back_segment(
    archived: Archived, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the cluster's own repository (the refresh reads it): a segment deleted in the middle
    of the chains, a refresh, describe; the segment put back, a refresh, describe again.  Each
    refresh here checks every log directory (PGPITR_WAL_CHECK_EVERY=0; the default is hourly)."""
    from pgpitr import cluster_repository
    from pgpitr.catalog import walindex, window
    from pgpitr.steps import Steps
    from pgpitr.wal import archive

    monkeypatch.setenv(catalog_describe.WAL_CHECK_EVERY, "0")

    cluster = Cluster.get("tix")
    repo = cluster_repository.repository(cluster)
    size = archived.segment_size
    whole = catalog_describe.describe(cluster).as_json()
    (second,) = [
        c
        for c in window.recoverable_window(repo, "tix", cluster.bindir).chains
        if c.backup.name == archived.second
    ]
    hole = archive.segment_of(second.backup.stop_lsn_int, second.end.timeline, size).next()
    assert hole.number < second.end.number  # in the middle of the chain
    (key, _sha), *_ = archive.stored_versions(repo, "tix", hole.name(size))
    stored = Path(repo.location.path) / key
    kept = tmp_path / "kept"
    shutil.copyfile(stored, kept)
    try:
        stored.unlink()  # behind pgpitr's back
        checked = catalog_describe.run(Steps(), "tix").window.wal_checked_at
        monkeypatch.delenv(catalog_describe.WAL_CHECK_EVERY)
        # within the hour of a full check the refresh makes none (the check's time stays)
        assert catalog_describe.run(Steps(), "tix").window.wal_checked_at == checked
        monkeypatch.setenv(catalog_describe.WAL_CHECK_EVERY, "0")
        before = time.time()
        refreshed = catalog_describe.run(Steps(), "tix")
        assert refreshed.window.wal_checked_at is not None
        assert refreshed.window.wal_checked_at.timestamp() >= before - 1
        ix = walindex.wal_index(repo, "tix", size)
        assert not ix.has(hole) and not ix.listed(hole)  # the index alone says so
        shown = catalog_describe.describe(cluster).as_json()
        assert shown["wal_checked_at"] == refreshed.as_dict()["wal_checked_at"]
        periods = shown["recoverable_time"]
        assert not periods or periods[-1][1] < whole["recoverable_time"][-1][1]
        assert all(r["end_segment"] < hole.name(size) for r in shown["ranges"])
        text = cli("cluster", "describe", "tix").stdout
        assert "WAL checked: " in text and "WAL checked: never" not in text
    finally:
        shutil.copyfile(kept, stored)  # put back, behind pgpitr's back too
    catalog_describe.run(Steps(), "tix")
    assert walindex.wal_index(repo, "tix", size).has(hole)
    again = catalog_describe.describe(cluster).as_json()
    assert again["recoverable_time"] == whole["recoverable_time"]
    assert again["ranges"] == whole["ranges"]


def test_reindex_rebuilds_a_removed_index(archived: Archived, tmp_path: Path) -> None:
    url, repo = _copy(archived, tmp_path)
    repo.delete_prefix(index.prefix("tix"))
    result = cli("--stats", "repository", "reindex", "--backup-repo", url)
    assert "reindexed tix in" in result.stdout + result.stderr
    # the global --stats: the requests of the command, by kind
    stats = [line for line in result.stderr.splitlines() if line.startswith("file requests:")]
    assert stats and all(f"{kind} " in stats[0] for kind in ("LIST", "GET", "PUT"))
    assert repo.exists(f"{index.prefix('tix')}{index.BASE}")
    assert _indexed(repo, "tix", archived.segment_size) == _listed(repo, "tix")
    failed = cli("repository", "reindex", "--backup-repo", "ftp://nowhere", check=False)
    assert failed.returncode == 2 and "ftp" in failed.stderr
