"""WAL names, archive rules and the per-segment commands (run as real child processes)."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgpitr.catalog import timelines, walindex
from pgpitr.errors import WalConflict
from pgpitr.repository import RepositoryUrl, open_repository
from pgpitr.repository.base import document_frame
from pgpitr.state import ClusterState
from pgpitr.wal import archive
from pgpitr.wal.lsn import Lsn
from tests.pg import serverless_cluster

SEG = 16 * 1024 * 1024


def test_segment_names_and_arithmetic() -> None:
    s = archive.Segment.parse("0000000100000002000000FF", SEG)
    assert (s.timeline, s.number) == (1, 2 * 256 + 255)
    assert s.next().name(SEG) == "000000010000000300000000"
    assert archive.following_segments("0000000200000000000000FE", SEG, 3) == [
        "0000000200000000000000FF",
        "000000020000000100000000",
        "000000020000000100000001",
    ]
    assert archive.following_segments("00000002.history", SEG, 3) == []
    assert Lsn.parse("1/2000028") == (1 << 32) | 0x2000028
    assert str(Lsn.parse("A/FF")) == "A/FF"
    assert archive.segment_of("0/3000000", 1, SEG).name(SEG) == "000000010000000000000003"
    with pytest.raises(ValueError):
        archive.Segment.parse("nonsense", SEG)


def test_object_keys_carry_the_content_checksum() -> None:
    key = archive.object_key("my-pg", "000000010000000000000003", "ab" * 32)
    assert key == f"my-pg/wal/0000000100000000/000000010000000000000003-{'ab' * 32}.zst"
    assert archive.split_object_key(key) == ("000000010000000000000003", "ab" * 32)
    assert archive.object_key("my-pg", "00000002.history", "cd" * 32).startswith(
        "my-pg/wal/history/00000002.history-"
    )


def _wal_file(directory: Path, name: str, fill: bytes) -> Path:
    path = directory / name
    path.write_bytes(fill * (1024 * 1024))
    return path


def test_same_content_twice_succeeds_different_content_is_refused(
    repo_url: str, tmp_path: Path
) -> None:
    repo = open_repository(repo_url)
    first = _wal_file(tmp_path, "000000010000000000000005", b"A" * 16)
    result = archive.push_file(repo, "c", first)
    assert not result.already_there and result.stored < result.size
    assert archive.push_file(repo, "c", first).already_there
    # compressed otherwise (another level, another zstd): still recognised as the same content
    content = first.read_bytes()
    assert document_frame(content, 9) != document_frame(content, 3)  # so it is read and compared
    assert archive.push_file(repo, "c", first, level=9).already_there

    other = tmp_path / "other"
    other.mkdir()
    conflicting = _wal_file(other, "000000010000000000000005", b"B" * 16)
    with pytest.raises(WalConflict, match="different content.*stored copy is kept"):
        archive.push_file(repo, "c", conflicting)
    with pytest.raises(WalConflict):  # whatever its compressed form
        archive.push_file(repo, "c", conflicting, level=9)
    ((key, sha),) = archive.stored_versions(repo, "c", "000000010000000000000005")
    assert key == result.key
    archive.fetch_file(repo, "c", "000000010000000000000005", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == first.read_bytes()


def test_history_partial_and_backup_files_are_archived(tmp_path: Path) -> None:
    repo = open_repository(f"file://{tmp_path / 'repo'}")
    names = [
        "00000002.history",
        "00000003.history",
        "000000010000000000000007.partial",
        "000000010000000000000002.00000028.backup",
    ]
    for i, name in enumerate(names):
        (tmp_path / name).write_bytes(f"content {i}\n".encode())
        archive.push_file(repo, "c", tmp_path / name)
    for i, name in enumerate(names):
        archive.fetch_file(repo, "c", name, tmp_path / "out")
        assert (tmp_path / "out").read_bytes() == f"content {i}\n".encode()
    with pytest.raises(ValueError):
        (tmp_path / "junk.txt").write_bytes(b"x")
        archive.push_file(repo, "c", tmp_path / "junk.txt")


def test_timeline_path_and_chain_end_follow_history_and_stop_at_a_gap() -> None:
    index = walindex.WalIndex(SEG)
    for tli, numbers in ((1, range(2, 6)), (2, range(5, 9))):
        for n in numbers:
            index.objects[archive.Segment(tli, n).name(SEG)] = "k"
    # timeline 2 branched from timeline 1 inside segment 5
    index.history[2] = [(1, 5 * SEG + 0x100)]
    path = timelines.timeline_path(index, 1)
    assert path == [(1, 0), (2, 5 * SEG + 0x100)]
    end = timelines.chain_end(index, archive.Segment(1, 2), path)
    assert end == archive.Segment(2, 8)
    del index.objects[archive.Segment(2, 7).name(SEG)]
    assert timelines.chain_end(index, archive.Segment(1, 2), path) == archive.Segment(2, 6)


# -- the commands PostgreSQL runs ------------------------------------------------------------


@pytest.fixture
def fake_cluster(home: Path) -> ClusterState:
    return serverless_cluster(home, "walc", f"file://{home / 'repo'}", 7000000000000000001)


def _run(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-I", "-m", "pgpitr", "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _eventually(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the worker did not get there"
        time.sleep(0.02)


def _worker_running(spool: Path, direction: str) -> bool:
    """A worker holds its lock for its whole life."""
    fd = os.open(spool / f"{direction}.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _ready(pg_wal: Path, name: str, content: bytes) -> None:
    _wal_file(pg_wal, name, content)
    (pg_wal / "archive_status" / f"{name}.ready").touch()


def test_wal_push_archives_the_ready_queue_behind_the_call_and_later_calls_return_at_once(
    fake_cluster: ClusterState, home: Path
) -> None:
    pg_wal = fake_cluster.datadir / "pg_wal"
    names = [archive.Segment(1, n).name(SEG) for n in range(1, 6)]
    for i, name in enumerate(names):
        _ready(pg_wal, name, bytes([i + 1]) * 16)
    first = _run(home, "wal-push", "--cluster", "walc", f"pg_wal/{names[0]}")
    assert first.returncode == 0, first.stderr
    repo = open_repository(fake_cluster.repository)
    assert archive.stored_versions(repo, "walc", names[0])  # stored before the call said so
    pushed = fake_cluster.spool / "pushed"
    _eventually(lambda: sorted(os.listdir(pushed)) == names[1:])
    assert all(archive.stored_versions(repo, "walc", n) for n in names)
    # the marker answers for the file, then is gone
    second = _run(home, "wal-push", "--cluster", "walc", f"pg_wal/{names[1]}")
    assert second.returncode == 0 and not (pushed / names[1]).exists()
    assert repo.get_json("walc/archive.info")["system_identifier"] == "7000000000000000001"
    # idle, the worker goes away by itself
    _eventually(lambda: not _worker_running(fake_cluster.spool, "push"))


def test_wal_push_worker_failure_reaches_the_call_and_is_retried_on_the_next(
    fake_cluster: ClusterState, home: Path
) -> None:
    pg_wal = fake_cluster.datadir / "pg_wal"
    name = archive.Segment(1, 7).name(SEG)
    repo = open_repository(fake_cluster.repository)
    archive.push_file(repo, "walc", _wal_file(home, name, b"stored" * 16))  # another copy is there
    _ready(pg_wal, name, b"local" * 16)
    for _attempt in range(2):  # the failure is reported, then the archiver's retry fails again
        result = _run(home, "wal-push", "--cluster", "walc", f"pg_wal/{name}")
        assert result.returncode == 1
        assert f"WAL file {name} is already archived" in result.stderr
    assert not (fake_cluster.spool / "pushed" / name).exists()
    ((key, _),) = archive.stored_versions(repo, "walc", name)
    assert repo.get_document(key) == b"stored" * 16 * 1024 * 1024
    # once the local file is right, the next call archives it
    _ready(pg_wal, name, b"stored" * 16)
    assert _run(home, "wal-push", "--cluster", "walc", f"pg_wal/{name}").returncode == 0


def test_wal_push_of_a_conflicting_file_fails_and_keeps_the_stored_copy(
    fake_cluster: ClusterState, home: Path
) -> None:
    pg_wal = fake_cluster.datadir / "pg_wal"
    name = archive.Segment(1, 9).name(SEG)
    _wal_file(pg_wal, name, b"x" * 16)
    assert _run(home, "wal-push", "--cluster", "walc", f"pg_wal/{name}").returncode == 0
    _wal_file(pg_wal, name, b"y" * 16)
    again = _run(home, "wal-push", "--cluster", "walc", f"pg_wal/{name}")
    assert again.returncode == 1
    assert f"WAL file {name} is already archived" in again.stderr
    repo = open_repository(fake_cluster.repository)
    ((key, _),) = archive.stored_versions(repo, "walc", name)
    assert repo.get_document(key) == b"x" * 16 * 1024 * 1024


def test_wal_push_refuses_an_archive_of_another_cluster(
    fake_cluster: ClusterState, home: Path
) -> None:
    repo = open_repository(fake_cluster.repository)
    repo.put_json("walc/archive.info", {"system_identifier": "123", "wal_segment_size": SEG})
    name = archive.Segment(1, 3).name(SEG)
    _wal_file(fake_cluster.datadir / "pg_wal", name, b"z")
    result = _run(home, "wal-push", "--cluster", "walc", f"pg_wal/{name}")
    assert result.returncode == 1 and "another cluster" in result.stderr


def test_wal_fetch_missing_damaged_and_prefetched(
    fake_cluster: ClusterState, home: Path, tmp_path: Path
) -> None:
    repo = open_repository(fake_cluster.repository)
    names = [archive.Segment(1, n).name(SEG) for n in range(20, 24)]
    for i, name in enumerate(names):
        archive.push_file(repo, "walc", _wal_file(tmp_path, name, bytes([i + 7]) * 16))
    dest = fake_cluster.datadir / "pg_wal" / "RECOVERYXLOG"
    ok = _run(home, "wal-fetch", "--cluster", "walc", names[0], "pg_wal/RECOVERYXLOG")
    assert ok.returncode == 0 and dest.read_bytes() == (tmp_path / names[0]).read_bytes()
    spool = fake_cluster.spool / "fetched"
    _eventually(lambda: sorted(os.listdir(spool)) == names[1:])  # the next ones wait, verified
    assert (spool / names[1]).read_bytes() == (tmp_path / names[1]).read_bytes()

    # replay may ask for the same segment again right after it took it
    again = _run(home, "wal-fetch", "--cluster", "walc", names[0], "pg_wal/RECOVERYXLOG")
    assert again.returncode == 0 and dest.read_bytes() == (tmp_path / names[0]).read_bytes()

    missing = _run(
        home,
        "wal-fetch",
        "--cluster",
        "walc",
        archive.Segment(1, 99).name(SEG),
        "pg_wal/RECOVERYXLOG",
    )
    assert missing.returncode == 1  # "not there": PostgreSQL ends recovery here
    assert not dest.exists() or dest.read_bytes() == (tmp_path / names[0]).read_bytes()

    ((key, _),) = archive.stored_versions(repo, "walc", names[0])
    raw = bytearray(Path(repo.root, key).read_bytes())
    raw[len(raw) // 2] ^= 0x55
    Path(repo.root, key).write_bytes(bytes(raw))
    damaged = _run(home, "wal-fetch", "--cluster", "walc", names[0], "pg_wal/RECOVERYXLOG")
    assert damaged.returncode == 255  # > 125: PostgreSQL stops recovery with an error
    assert key in damaged.stderr and "damaged" in damaged.stderr
    _eventually(lambda: not _worker_running(fake_cluster.spool, "fetch"))


def test_a_worker_that_keeps_dying_fails_the_call_with_the_reason_in_its_log(
    fake_cluster: ClusterState, home: Path
) -> None:
    pg_wal = fake_cluster.datadir / "pg_wal"
    name = archive.Segment(1, 11).name(SEG)
    _ready(pg_wal, name, b"w" * 16)
    # the archive was checked before (marker), then the repository became unusable to the worker
    (fake_cluster.spool / "archive-info-7000000000000000001").touch()
    # (its key file gone: opening the repository fails, each time the worker starts)
    fake_cluster.repository = RepositoryUrl.parse(f"file://{home}/repo?encryption=aes-256-gcm")
    fake_cluster.encryption_key_file = str(home / "gone.key")
    fake_cluster.save()
    result = _run(home, "wal-push", "--cluster", "walc", f"pg_wal/{name}")
    assert result.returncode == 1
    assert "stopped 3 times without storing" in result.stderr
    assert "gone.key" in (fake_cluster.spool / "worker.log").read_text()
    assert not (fake_cluster.spool / "pushed" / name).exists()


def test_a_cluster_whose_state_no_longer_reads_is_refused_with_its_reason(
    fake_cluster: ClusterState, home: Path
) -> None:
    pg_wal = fake_cluster.datadir / "pg_wal"
    name = archive.Segment(1, 12).name(SEG)
    _ready(pg_wal, name, b"w" * 16)
    state = fake_cluster.dir / "cluster.json"
    saved = json.loads(state.read_text())
    state.write_text(json.dumps({**saved, "repository": "nope://elsewhere"}))
    result = _run(home, "wal-push", "--cluster", "walc", f"pg_wal/{name}")
    assert result.returncode == 1
    assert result.stderr.startswith("pgpitr: ") and "nope://elsewhere" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (fake_cluster.spool / "pushed" / name).exists()
