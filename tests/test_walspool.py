"""pgpitr/wal/spool.py in process, on real files in a temporary directory: the worker lock and
starter (real forked workers), the markers a call waits for, the push and fetch workers' loops and
their give-up rules.  tests/test_wal.py drives the same code end to end through `pgpitr wal-push`
and `wal-fetch`; here each rule is checked on its own, without a repository."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pgpitr.errors import NotFound, RepositoryError
from pgpitr.wal import archive
from pgpitr.wal import spool as wal_spool
from pgpitr.wal.spool import SPAWNS, FetchSpool, PushSpool, _Starter, _try_lock

SEG = 16 * 1024 * 1024


def seg(n: int, timeline: int = 1) -> str:
    return archive.Segment(timeline, n).name(SEG)


def until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """A deadline against hanging, not a timing assertion."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.01)


def lock_free(path: Path) -> bool:
    fd = _try_lock(path)
    if fd is None:
        return False
    os.close(fd)
    return True


@pytest.fixture
def spool(tmp_path: Path) -> Iterator[Path]:
    """A spool directory; after the test, every worker forked on it has exited."""
    path = tmp_path / "spool"
    path.mkdir()
    yield path
    for lock in path.glob("*.lock"):
        until(lambda lock=lock: lock_free(lock), f"the worker holding {lock.name} exits")


@pytest.fixture
def pg_wal(tmp_path: Path) -> Path:
    path = tmp_path / "pg_wal"
    (path / "archive_status").mkdir(parents=True)
    return path


def ready(pg_wal: Path, *names: str) -> None:
    for name in names:
        (pg_wal / name).write_bytes(name.encode())
        (pg_wal / "archive_status" / f"{name}.ready").touch()


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- small helpers -------------------------------------------------------------------------------


def test_names_ignore_temporaries_and_a_missing_directory(tmp_path: Path) -> None:
    (tmp_path / "000000010000000000000001").touch()
    (tmp_path / ".000000010000000000000002.tmp").touch()
    assert wal_spool._names(tmp_path) == {"000000010000000000000001"}
    assert wal_spool._names(tmp_path / "absent") == set()


def test_write_text_replaces_through_a_temporary(tmp_path: Path) -> None:
    target = tmp_path / "mark"
    wal_spool._write_text(target, "first")
    wal_spool._write_text(target, "second")
    assert target.read_text() == "second"
    assert names(tmp_path) == ["mark"]


def test_describe_keeps_a_pitr_message_and_names_other_exceptions() -> None:
    assert wal_spool._describe(RepositoryError("the bucket is gone")) == "the bucket is gone"
    assert wal_spool._describe(RepositoryError("x", hint="retry")) == "x\n  hint: retry"
    assert wal_spool._describe(ValueError("bad")) == "ValueError: bad"


# -- the lock and the starter --------------------------------------------------------------------


def test_the_lock_is_exclusive_until_released(spool: Path) -> None:
    lock = spool / "push.lock"
    held = _try_lock(lock)
    assert held is not None
    assert _try_lock(lock) is None  # another open file: refused, without waiting
    os.close(held)
    again = _try_lock(lock)
    assert again is not None
    os.close(again)
    assert oct(lock.stat().st_mode & 0o777) == "0o600"


def test_the_starter_forks_a_detached_worker_that_holds_the_lock(spool: Path) -> None:
    lock, log, out = spool / "push.lock", spool / "worker.log", spool / "out"
    release = spool / "release"

    def work() -> None:
        # whole or not at all: the test reads it as soon as it exists
        (spool / "out.tmp").write_text(f"{os.getpid()} {os.getsid(0)}")
        (spool / "out.tmp").rename(out)
        while not release.exists():
            time.sleep(0.01)

    starter = _Starter(lock, work, log)
    assert starter.running(lambda: False) is True
    assert starter.spawns == 1
    until(out.exists, "the worker starts")
    pid, session = map(int, out.read_text().split())
    assert pid != os.getpid() and session == pid  # its own session: out of PostgreSQL's way
    assert not lock_free(lock)  # the worker holds the lock
    assert starter.running(lambda: False) is True  # one runs: nothing more is started
    assert starter.spawns == 1
    release.touch()
    until(lambda: lock_free(lock), "the worker exits and so frees the lock")


def test_the_starter_starts_nothing_when_the_answer_is_already_there(spool: Path) -> None:
    lock = spool / "push.lock"
    starter = _Starter(lock, lambda: (spool / "started").touch(), spool / "worker.log")
    assert starter.running(lambda: True) is True
    assert starter.spawns == 0
    assert lock_free(lock)  # the lock it took to look was given back
    assert not (spool / "started").exists()


def test_the_starter_gives_up_after_spawns_workers_that_give_no_answer(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock, log = spool / "fetch.lock", spool / "worker.log"
    # sys.stderr on file descriptor 2, as in the wal commands (pytest replaces it otherwise)
    monkeypatch.setattr(sys, "stderr", open(2, "w", buffering=1, closefd=False))  # noqa: SIM115

    def work() -> None:
        raise RuntimeError("the worker broke here")

    starter = _Starter(lock, work, log)
    for spawned in range(1, SPAWNS + 1):
        until(lambda: lock_free(lock), "the previous worker exits")
        assert starter.running(lambda: False) is True
        assert starter.spawns == spawned
    until(lambda: lock_free(lock), "the last worker exits")
    assert starter.running(lambda: False) is False
    assert starter.spawns == SPAWNS == 3
    assert lock_free(lock)  # giving up does not keep the lock
    # each worker's traceback went to the log
    assert log.read_text().count("RuntimeError: the worker broke here") == SPAWNS


# -- a push call ---------------------------------------------------------------------------------


def test_a_push_call_answered_by_an_existing_marker_starts_no_worker(
    spool: Path, pg_wal: Path
) -> None:
    name = seg(3)
    push = PushSpool(spool, pg_wal)
    push.pushed.mkdir(parents=True)
    (push.pushed / name).touch()
    assert push.wait(name, lambda: (spool / "started").touch()) is None
    assert not (push.pushed / name).exists()  # the marker answers once
    assert not (push.asked / name).exists()
    assert not (spool / "started").exists()


def test_a_push_call_waits_for_the_workers_marker(spool: Path, pg_wal: Path) -> None:
    name = seg(4)
    ready(pg_wal, name)
    push = PushSpool(spool, pg_wal)

    def worker() -> None:
        assert (push.asked / name).exists()  # the call said it wants this file
        (push.pushed / name).touch()

    assert push.wait(name, worker) is None
    assert not (push.pushed / name).exists()


def test_a_push_call_drops_an_old_failure_and_reports_the_new_attempts(
    spool: Path, pg_wal: Path
) -> None:
    name = seg(5)
    ready(pg_wal, name)
    push = PushSpool(spool, pg_wal)
    push.failed.mkdir(parents=True)
    (push.failed / name).write_text("an earlier outage")

    def worker() -> None:
        wal_spool._write_text(push.failed / name, "the repository answered 403")

    assert push.wait(name, worker) == "the repository answered 403"
    assert not (push.failed / name).exists()  # read once, then gone


def test_a_push_call_gives_up_when_the_worker_never_answers(spool: Path, pg_wal: Path) -> None:
    name = seg(6)
    ready(pg_wal, name)
    push = PushSpool(spool, pg_wal)
    reason = push.wait(name, lambda: None)
    assert reason == f"the archiving worker stopped {SPAWNS} times without storing {name}"


def test_a_push_call_that_waits_too_long_says_so(spool: Path, pg_wal: Path) -> None:
    name = seg(7)
    ready(pg_wal, name)
    push = PushSpool(spool, pg_wal)
    release = spool / "release"

    def worker() -> None:  # holds the lock and never answers, until released
        while not release.exists():
            time.sleep(0.01)

    try:
        assert push.wait(name, worker, timeout=0.3) == f"{name} was not archived within 0 s"
    finally:
        release.touch()


# -- the push worker ------------------------------------------------------------------------------


@pytest.fixture
def quick_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers leave after a short idle time (the loops' logic is the same)."""
    monkeypatch.setattr(wal_spool, "PUSH_IDLE_EXIT", 0.2)
    monkeypatch.setattr(wal_spool, "FETCH_IDLE_EXIT", 0.2)


def test_ready_lists_ready_files_oldest_first(pg_wal: Path) -> None:
    ready(pg_wal, seg(9), seg(2), "00000002.history")
    (pg_wal / "archive_status" / f"{seg(1)}.done").touch()
    push = PushSpool(pg_wal.parent / "spool", pg_wal)
    assert push.ready() == [seg(2), seg(9), "00000002.history"]  # by name
    assert push.is_ready(seg(9)) and not push.is_ready(seg(1))
    assert PushSpool(pg_wal.parent, pg_wal.parent / "absent").ready() == []


def test_the_push_worker_archives_every_ready_file_once_and_marks_it(
    spool: Path, pg_wal: Path, quick_exit: None
) -> None:
    files = [seg(n) for n in range(10, 20)]
    ready(pg_wal, *files)
    push = PushSpool(spool, pg_wal)
    for directory in (push.pushed, push.failed, push.asked):
        directory.mkdir()
    pushed: list[Path] = []
    taking: list[bool] = []  # while it takes files, the archive_command's shell waits for it

    def push_one(path: Path) -> None:
        taking.append(push.accepting.exists())
        pushed.append(path)

    push.run(push_one)
    assert sorted(pushed) == [pg_wal / f for f in files]  # each exactly once
    assert names(push.pushed) == files
    assert names(push.failed) == [] and names(push.asked) == []
    assert taking == [True] * len(files) and not push.accepting.exists()


def test_the_push_worker_records_why_a_file_failed(
    spool: Path, pg_wal: Path, quick_exit: None
) -> None:
    good, refused, broken = seg(20), seg(21), seg(22)
    ready(pg_wal, good, refused, broken)
    push = PushSpool(spool, pg_wal)
    for directory in (push.pushed, push.failed, push.asked):
        directory.mkdir()
    calls: list[str] = []

    def attempt(path: Path) -> None:
        calls.append(path.name)
        if path.name == refused:
            raise RepositoryError("the repository answered 503 (SlowDown)")
        if path.name == broken:
            raise OSError(5, "Input/output error")

    push.run(attempt)
    assert sorted(calls) == [good, refused, broken]  # a failure is not retried in the same life
    assert names(push.pushed) == [good]
    assert (push.failed / refused).read_text() == "the repository answered 503 (SlowDown)"
    assert (push.failed / broken).read_text() == "OSError: [Errno 5] Input/output error"


def test_the_push_worker_skips_what_is_marked_and_retries_a_failure_only_when_asked(
    spool: Path, pg_wal: Path, quick_exit: None
) -> None:
    done, left_failed, asked_again, fresh = seg(30), seg(31), seg(32), seg(33)
    ready(pg_wal, done, left_failed, asked_again, fresh)
    push = PushSpool(spool, pg_wal)
    for directory in (push.pushed, push.failed, push.asked):
        directory.mkdir()
    (push.pushed / done).touch()  # stored ahead, PostgreSQL not yet told
    (push.failed / left_failed).write_text("old reason")  # failed, nobody asked again
    (push.failed / asked_again).write_text("old reason")  # failed, and a call asks again
    (push.asked / asked_again).touch()
    pushed: list[str] = []
    push.run(lambda path: pushed.append(path.name))
    assert sorted(pushed) == [asked_again, fresh]
    assert names(push.pushed) == sorted([asked_again, done, fresh])
    assert names(push.asked) == []  # taken when the attempt started
    assert (push.failed / left_failed).read_text() == "old reason"


def test_the_push_worker_leaves_no_marker_for_a_file_postgresql_stopped_asking_for(
    spool: Path, pg_wal: Path, quick_exit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the rule on its own: the sweep of orphan markers at the worker's exit would hide a marker
    monkeypatch.setattr(PushSpool, "_drop_orphan_markers", lambda self: None)
    name = seg(40)
    ready(pg_wal, name)
    push = PushSpool(spool, pg_wal)
    for directory in (push.pushed, push.failed, push.asked):
        directory.mkdir()

    def archived_elsewhere(path: Path) -> None:  # e.g. by a manual pg_archivecleanup + .done
        (pg_wal / "archive_status" / f"{path.name}.ready").rename(
            pg_wal / "archive_status" / f"{path.name}.done"
        )

    push.run(archived_elsewhere)
    assert names(push.pushed) == []


def test_the_push_worker_drops_orphan_markers(spool: Path, pg_wal: Path, quick_exit: None) -> None:
    still_ready, gone = seg(50), seg(51)
    ready(pg_wal, still_ready)
    push = PushSpool(spool, pg_wal)
    for directory in (push.pushed, push.failed, push.asked):
        directory.mkdir()
        (directory / gone).touch()  # PostgreSQL will never ask for it again
    (push.pushed / still_ready).touch()
    pushed: list[str] = []
    push.run(lambda path: pushed.append(path.name))
    assert pushed == []
    assert names(push.pushed) == [still_ready]
    assert names(push.failed) == [] and names(push.asked) == []


# -- a fetch call --------------------------------------------------------------------------------


def test_a_fetch_call_takes_a_spooled_segment_without_a_worker(spool: Path, tmp_path: Path) -> None:
    name, destination = seg(60), tmp_path / "RECOVERYXLOG"
    fetch = FetchSpool(spool, SEG)
    fetch.fetched.mkdir()
    (fetch.fetched / name).write_bytes(b"spooled")
    assert fetch.wait(name, destination, lambda: (spool / "started").touch()) is True
    assert destination.read_bytes() == b"spooled"
    assert not (fetch.fetched / name).exists()
    assert not (spool / "started").exists()
    wanted, pid, _ns = fetch.want.read_text().split()
    assert (wanted, int(pid)) == (name, os.getpid())  # the request the worker plans from


def test_a_fetch_call_waits_for_the_worker(spool: Path, tmp_path: Path) -> None:
    name, destination = seg(61), tmp_path / "RECOVERYXLOG"
    fetch = FetchSpool(spool, SEG)

    def worker() -> None:
        wal_spool._write_text(fetch.fetched / name, "from the repository")

    assert fetch.wait(name, destination, worker) is True
    assert destination.read_text() == "from the repository"


def test_a_fetch_call_marked_by_the_worker_asks_the_repository_itself(
    spool: Path, tmp_path: Path
) -> None:
    name, destination = seg(62), tmp_path / "RECOVERYXLOG"
    fetch = FetchSpool(spool, SEG)

    def worker() -> None:
        wal_spool._write_text(fetch.status / name, "missing")

    assert fetch.wait(name, destination, worker) is False
    assert not destination.exists()
    assert not (fetch.status / name).exists()  # a mark answers one call only


def test_a_fetch_call_gives_up_on_a_worker_that_keeps_dying(spool: Path, tmp_path: Path) -> None:
    destination = tmp_path / "RECOVERYXLOG"
    fetch = FetchSpool(spool, SEG)
    starts = spool / "starts"

    def worker() -> None:
        with open(starts, "a") as f:
            f.write("x")

    assert fetch.wait(seg(63), destination, worker) is False
    assert starts.read_text() == "x" * SPAWNS
    assert not destination.exists()


# -- the fetch worker ----------------------------------------------------------------------------


def _want(fetch: FetchSpool, name: str) -> None:
    fetch.fetched.mkdir(exist_ok=True)
    fetch.status.mkdir(exist_ok=True)
    wal_spool._write_text(fetch.want, f"{name} 1 2")


def test_the_request_is_the_latest_calls_segment(spool: Path) -> None:
    fetch = FetchSpool(spool, SEG)
    assert fetch._request() is None
    fetch.want.write_text("")
    assert fetch._request() is None
    fetch.want.write_text(f"{seg(1)} 42 1000")
    assert fetch._request() == (seg(1), f"{seg(1)} 42 1000")


def test_the_fetch_worker_spools_the_wanted_segment_and_the_ones_after_it(
    spool: Path, quick_exit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_spool, "FETCH_AHEAD", 4)
    fetch = FetchSpool(spool, SEG)
    _want(fetch, seg(0xFE))
    asked: list[str] = []

    def get(name: str, destination: Path) -> None:
        asked.append(name)
        destination.write_text(f"content of {name}")

    fetch.run(get)
    # across the end of a log file: ...FE, ...FF, then the next log's 00 and 01
    expected = [
        "0000000100000000000000FE",
        "0000000100000000000000FF",
        "000000010000000100000000",
        "000000010000000100000001",
    ]
    assert sorted(asked) == expected
    assert names(fetch.fetched) == expected
    assert (fetch.fetched / expected[2]).read_text() == f"content of {expected[2]}"


def test_the_fetch_worker_stops_planning_past_a_missing_segment(
    spool: Path, quick_exit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_spool, "FETCH_AHEAD", 4)
    fetch = FetchSpool(spool, SEG)
    _want(fetch, seg(70))
    asked: list[str] = []

    def get(name: str, destination: Path) -> None:
        asked.append(name)
        if name == seg(70):
            raise NotFound(f"WAL file {name} is not in the repository")
        # the others finish only once the worker has taken in the missing one
        until((fetch.status / seg(70)).exists, "the missing segment is marked")
        destination.write_text(name)

    fetch.run(get)
    assert (fetch.status / seg(70)).read_text() == "missing"
    # whatever was already under way finishes; nothing past the plan of the first request is
    # asked for, though the spool has room for more
    plan = [seg(n) for n in (70, 71, 72, 73)]
    assert seg(70) in asked and set(asked) <= set(plan), asked
    assert names(fetch.fetched) == sorted(set(asked) - {seg(70)})


def test_the_fetch_worker_marks_a_damaged_segment_with_the_reason(
    spool: Path, quick_exit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_spool, "FETCH_AHEAD", 2)
    fetch = FetchSpool(spool, SEG)
    _want(fetch, seg(75))

    def get(name: str, destination: Path) -> None:
        if name == seg(75):
            raise RepositoryError(f"the object of {name} is damaged")
        destination.write_text(name)

    fetch.run(get)
    assert (fetch.status / seg(75)).read_text() == f"the object of {seg(75)} is damaged"
    assert seg(75) not in names(fetch.fetched)


def test_the_fetch_worker_fetches_nothing_for_a_history_file(spool: Path, quick_exit: None) -> None:
    fetch = FetchSpool(spool, SEG)
    _want(fetch, "00000002.history")  # asked for directly by the call, never spooled
    asked: list[str] = []
    fetch.run(lambda name, destination: asked.append(name))
    assert asked == [] and names(fetch.fetched) == []


def test_a_new_request_forgets_the_old_plan_and_keeps_what_fits_the_new_one(
    spool: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_spool, "FETCH_AHEAD", 4)
    fetch = FetchSpool(spool, SEG)
    _want(fetch, seg(80))
    for n in (80, 81, 82, 83):
        (fetch.fetched / seg(n)).write_text("old plan")
    (fetch.status / seg(84)).write_text("missing")
    start = fetch._restart_at(seg(82))
    assert start == archive.Segment(1, 82)
    assert names(fetch.fetched) == [seg(82), seg(83)]  # 80 and 81 were replayed already
    assert names(fetch.status) == []  # marks of the old plan are no answer to the new one
    assert fetch._restart_at("00000003.history") is None


def test_the_fetch_worker_spools_only_what_is_missing_from_the_plan(
    spool: Path, quick_exit: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wal_spool, "FETCH_AHEAD", 4)
    fetch = FetchSpool(spool, SEG)
    _want(fetch, seg(90))
    (fetch.fetched / seg(91)).write_text("already here")
    (fetch.fetched / seg(95)).write_text("outside the plan")
    asked: list[str] = []

    def get(name: str, destination: Path) -> None:
        asked.append(name)
        destination.write_text(name)

    fetch.run(get)
    assert sorted(asked) == [seg(90), seg(92), seg(93)]
    assert names(fetch.fetched) == [seg(n) for n in (90, 91, 92, 93)]
    assert (fetch.fetched / seg(91)).read_text() == "already here"
