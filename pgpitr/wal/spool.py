"""The background workers behind wal-push and wal-fetch, and the spool they share with them.

PostgreSQL runs archive_command and restore_command once per WAL file, one at a time.  Doing the
work inside that call makes the archiver (or the startup process) wait for every upload or
download in turn.  Instead, as pgBackRest's ``archive-async`` does, the first call starts one
detached worker per cluster and direction, and each call only waits for *its* file:

- the push worker archives every file PostgreSQL has marked ``.ready`` (oldest first, THREADS in
  parallel) and, once a file is durably stored, leaves ``spool/pushed/NAME``; the archive_command's
  shell test answers for that file without starting Python.  A file that could not be stored gets
  ``spool/push-failed/NAME`` with the reason, which the waiting call prints before failing.
- the fetch worker keeps ``spool/fetched`` filled with the FETCH_AHEAD segments after the last one
  asked for (``spool/fetch-want``), so that replay finds each one waiting and renamed in by the
  restore_command's shell test.  A segment it cannot get is marked ``spool/fetch-status/NAME``; the
  waiting call then asks the repository itself, so that "missing" and "damaged" are always decided
  by a direct read, never by a stale mark.

One worker per direction holds ``spool/NAME.lock`` (flock) for its whole life; a caller that can
take the lock knows no worker runs.  Workers exit after a few idle seconds.  Nothing here imports
more than the standard library and the repository's backend.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from pathlib import Path

from pgpitr.osutil import write_atomic
from pgpitr.postgres.conf import PUSH_ACCEPTING, PUSH_ASKED, PUSH_FAILED, PUSH_LOCK, PUSHED
from pgpitr.wal import archive

# Compression and hashing are CPU work: one thread per CPU.  Measured in bench/ on 2 CPUs, 4
# threads archived 26 segments/s and 2 threads 31-34 (less contention, ~55 instead of ~70 ms of
# CPU per segment).
THREADS = max(2, os.cpu_count() or 2)
IN_HAND = 2 * THREADS  # files the push worker has started and not finished, at most
FETCH_AHEAD = 16  # 256 MB of 16 MB segments waiting for replay
PUSH_IDLE_EXIT = 2.0
FETCH_IDLE_EXIT = 5.0
POLL = 0.003  # a waiting call checks its marker this often; a stat costs microseconds
SPAWNS = 3  # then a call fails (push) or reads the repository itself (fetch)


# -- the lock and the detached process -----------------------------------------------------------


def _try_lock(path: Path) -> int | None:
    """Take the worker lock without waiting; the descriptor, or None when a worker holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _spawn(lock_fd: int, work: Callable[[], None], log: Path) -> None:
    """Run ``work`` in a detached child that inherits (and so keeps) the lock."""
    if os.fork():
        os.close(lock_fd)  # the child's copy of the open file holds the lock from here on
        return
    code = 1
    try:
        os.setsid()  # not in PostgreSQL's way when the server stops or signals its children
        devnull = os.open(os.devnull, os.O_RDWR)
        log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        # detached: whoever waits for the caller's output must not wait for the worker too
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        os.dup2(log_fd, 2)
        work()
        code = 0
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        os._exit(code)


class _Starter:
    """Starts a call's worker whenever none holds the lock; gives up after SPAWNS starts."""

    def __init__(self, lock: Path, work: Callable[[], None], log: Path) -> None:
        self.lock, self.work, self.log = lock, work, log
        self.spawns = 0

    def running(self, answered: Callable[[], bool]) -> bool:
        """Make sure a worker runs, unless the call's answer is there; False when the worker
        keeps dying without giving one."""
        fd = _try_lock(self.lock)
        if fd is None:
            return True
        if answered():  # the worker finished and left as we looked
            os.close(fd)
            return True
        if self.spawns == SPAWNS:
            os.close(fd)
            return False
        _spawn(fd, self.work, self.log)
        self.spawns += 1
        return True


def wait_idle(spool: Path, timeout: float = 60) -> bool:
    """Wait until no WAL worker of this spool runs (one exits a few seconds after it idles);
    False when one still does after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    for name in (PUSH_LOCK, "fetch.lock"):
        while (spool / name).exists():
            fd = _try_lock(spool / name)
            if fd is not None:
                os.close(fd)
                break
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
    return True


def _write_text(path: Path, text: str) -> None:
    write_atomic(path, text, durable=False)


def _describe(exc: BaseException) -> str:
    from pgpitr.errors import PitrError

    return str(exc) if isinstance(exc, PitrError) else f"{type(exc).__name__}: {exc}"


def _names(directory: Path) -> set[str]:
    try:
        return {e.name for e in os.scandir(directory) if not e.name.startswith(".")}
    except FileNotFoundError:
        return set()


# -- archiving -----------------------------------------------------------------------------------


class PushSpool:
    def __init__(self, spool: Path, pg_wal: Path) -> None:
        self.spool = spool
        self.pg_wal = pg_wal
        self.status = pg_wal / "archive_status"
        self.pushed = spool / PUSHED
        self.failed = spool / PUSH_FAILED
        self.asked = spool / PUSH_ASKED
        self.lock = spool / PUSH_LOCK
        self.accepting = spool / PUSH_ACCEPTING

    def is_ready(self, name: str) -> bool:
        return (self.status / f"{name}.ready").exists()

    def ready(self) -> list[str]:
        try:
            entries = os.scandir(self.status)
        except FileNotFoundError:
            return []
        return sorted(e.name[: -len(".ready")] for e in entries if e.name.endswith(".ready"))

    def wait(self, name: str, worker: Callable[[], None], timeout: float = 3600) -> str | None:
        """Wait until the worker stored ``name``: None, or the reason it could not."""
        for directory in (self.pushed, self.failed, self.asked):
            directory.mkdir(parents=True, exist_ok=True)
        marker, failure = self.pushed / name, self.failed / name
        if not marker.exists():
            # a failure left before this call is old news: the answer is a new attempt's
            failure.unlink(missing_ok=True)
            (self.asked / name).touch()
        starter = _Starter(self.lock, worker, self.spool / "worker.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker.exists():
                marker.unlink()
                self._linger(name)
                return None
            if failure.exists():
                reason = failure.read_text()
                failure.unlink()
                return reason
            if not starter.running(lambda: marker.exists() or failure.exists()):
                return f"the archiving worker stopped {SPAWNS} times without storing {name}"
            time.sleep(POLL)
        return f"{name} was not archived within {timeout:.0f} s"

    def _linger(self, name: str, limit: float = 5.0) -> None:
        """Before returning, wait a moment for the files the worker has in hand after ``name``:
        the archiver's next calls then find their markers and start no Python, whose start would
        cost the worker a good share of the CPU.  The archiver is not the bottleneck; the worker is
        and keeps working meanwhile."""
        following = [n for n in self.ready() if n > name][:IN_HAND]
        deadline = time.monotonic() + limit
        while following and time.monotonic() < deadline:
            following = [
                n
                for n in following
                if not (self.pushed / n).exists() and not (self.failed / n).exists()
            ]
            lock = _try_lock(self.lock)
            if lock is not None:  # no worker: nothing more will come
                os.close(lock)
                return
            time.sleep(POLL)

    def run(
        self, push: Callable[[Path], object], flush: Callable[[], object] | None = None
    ) -> None:
        """The worker: archive every ready file until none has come for PUSH_IDLE_EXIT seconds.

        ``flush`` makes the batch of files just stored durable in the catalog index (the
        journal ``push`` adds to, see wal.push_file): it runs before any file of the batch is
        acknowledged, and when it fails, the batch fails (the archiver pushes the files again).
        A file that failed is tried again only when a call asks for it (the archiver's retry),
        so that an outage costs one attempt per retry, not a loop against the repository.

        ``spool/push-accepting`` exists while the loop takes files: the archive_command's shell
        waits for a marker only then, not while the worker compacts the index or exits."""
        self._drop_orphan_markers()
        self.accepting.touch()
        try:
            self._take_files(push, flush)
        finally:
            self.accepting.unlink(missing_ok=True)
        self._drop_orphan_markers()

    def _take_files(
        self, push: Callable[[Path], object], flush: Callable[[], object] | None
    ) -> None:
        done: set[str] = set()  # never twice in one life, even if .ready lingers a moment
        failed: set[str] = set()
        running: dict[str, Future] = {}
        idle_since = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            while True:
                finished = [(n, f) for n, f in running.items() if f.done()]
                unflushed: BaseException | None = None
                if flush is not None and any(f.exception() is None for _, f in finished):
                    try:
                        flush()
                    except Exception as exc:  # reported as each stored file's failure
                        unflushed = exc
                for name, future in finished:
                    del running[name]
                    if unflushed is not None and future.exception() is None:
                        _write_text(self.failed / name, _describe(unflushed))
                        failed.add(name)
                        continue
                    stored = self._answer(name, future)
                    (done if stored else failed).add(name)
                if len(running) < IN_HAND:
                    asked = _names(self.asked)
                    left = failed | _names(self.failed)
                    skip = _names(self.pushed) | done | running.keys() | (left - asked)
                    for name in self.ready():
                        if len(running) >= IN_HAND:
                            break
                        if name not in skip:
                            (self.asked / name).unlink(missing_ok=True)
                            failed.discard(name)
                            running[name] = pool.submit(push, self.pg_wal / name)
                if running:
                    idle_since = time.monotonic()
                    wait(list(running.values()), timeout=0.05, return_when=FIRST_COMPLETED)
                elif time.monotonic() - idle_since > PUSH_IDLE_EXIT:
                    break
                else:
                    time.sleep(0.02)

    def _answer(self, name: str, future: Future) -> bool:
        """Leave the marker or the reason; True when stored."""
        exc = future.exception()
        if exc is not None:
            _write_text(self.failed / name, _describe(exc))
            return False
        if self.is_ready(name):  # else PostgreSQL no longer asks; a marker would only linger
            (self.pushed / name).touch()
        return True

    def _drop_orphan_markers(self) -> None:
        """Marks of files PostgreSQL will not ask for again (archived some other way)."""
        for directory in (self.pushed, self.failed, self.asked):
            for name in _names(directory):
                if not self.is_ready(name):
                    (directory / name).unlink(missing_ok=True)


# -- restoring -----------------------------------------------------------------------------------


class FetchSpool:
    def __init__(self, spool: Path, segment_size: int) -> None:
        self.spool = spool
        self.segment_size = segment_size
        self.fetched = spool / "fetched"
        self.status = spool / "fetch-status"
        self.want = spool / "fetch-want"
        self.lock = spool / "fetch.lock"

    def wait(
        self, name: str, destination: Path, worker: Callable[[], None], timeout: float = 600
    ) -> bool:
        """Wait until the worker has ``name`` and move it to ``destination``: True.  False when it
        could not get it; the caller then asks the repository directly."""
        for directory in (self.fetched, self.status):
            directory.mkdir(parents=True, exist_ok=True)
        _write_text(self.want, f"{name} {os.getpid()} {time.time_ns()}")  # a new request each call
        spooled, mark = self.fetched / name, self.status / name
        starter = _Starter(self.lock, worker, self.spool / "worker.log")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                os.rename(spooled, destination)
                return True
            except FileNotFoundError:
                pass
            if mark.exists():
                mark.unlink()
                return False
            if not starter.running(lambda: spooled.exists() or mark.exists()):
                return False
            time.sleep(POLL)
        return False

    def _request(self) -> tuple[str, str] | None:
        """The latest call's segment and the request itself (a call may repeat the last name)."""
        try:
            text = self.want.read_text()
        except FileNotFoundError:
            return None
        return (text.split(" ", 1)[0], text) if text else None

    def run(self, fetch: Callable[[str, Path], object]) -> None:
        """The worker: keep FETCH_AHEAD segments from the wanted one on waiting in the spool."""
        from pgpitr.errors import NotFound

        running: dict[str, Future] = {}
        request: tuple[str, str] | None = None
        following: archive.Segment | None = None  # the next segment to fetch; None: stopped
        seen: tuple = ()
        last_change = time.monotonic()
        with ThreadPoolExecutor(THREADS) as pool:
            while True:
                for name, future in list(running.items()):
                    if future.done():
                        del running[name]
                        exc = future.exception()
                        if exc is not None:
                            # past a missing or damaged segment nothing more is useful
                            following = None
                            reason = "missing" if isinstance(exc, NotFound) else _describe(exc)
                            _write_text(self.status / name, reason)
                latest = self._request()
                if latest is not None and latest != request and latest[0] not in running:
                    following = self._restart_at(latest[0])
                request = latest
                spooled = _names(self.fetched)
                while following is not None and len(spooled) + len(running) < FETCH_AHEAD:
                    name = following.name(self.segment_size)
                    following = following.next()
                    if name not in spooled and name not in running:
                        # in flight: counted in ``running`` until it lands in the spool
                        running[name] = pool.submit(fetch, name, self.fetched / name)
                state = (request, frozenset(_names(self.fetched)), frozenset(running))
                if state != seen or running:
                    seen, last_change = state, time.monotonic()
                elif time.monotonic() - last_change > FETCH_IDLE_EXIT:
                    break
                if running:
                    wait(list(running.values()), timeout=0.05, return_when=FIRST_COMPLETED)
                else:
                    time.sleep(0.01)

    def _restart_at(self, name: str) -> archive.Segment | None:
        """Replay asked for something the worker had not planned: forget the old plan, keep what
        is already spooled of the new one."""
        if not archive.SEGMENT_RE.fullmatch(name):
            return None
        start = archive.Segment.parse(name, self.segment_size)
        plan = {name, *archive.following_segments(name, self.segment_size, FETCH_AHEAD)}
        for stale in _names(self.fetched) - plan:
            (self.fetched / stale).unlink(missing_ok=True)
        for mark in _names(self.status):
            (self.status / mark).unlink(missing_ok=True)
        return start
