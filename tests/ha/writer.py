"""A client that keeps writing to whichever member is the primary, for the HA tests.

A background thread commits one row every INTERVAL seconds into ``ha_writes``, numbered 1, 2, 3
... without gaps: a commit that fails (the primary went away) is retried with the same number,
on a new connection, until it is acknowledged.  For each acknowledged row the writer records its
number, the wall-clock time (UTC) at which the client saw the commit acknowledged, and the
server's ``at`` (``clock_timestamp()`` inside the transaction).  The connection string is a
libpq multi-host one with ``target_session_attrs=read-write``
(:meth:`PatroniCluster.conninfo`), so the writer follows the leader without asking Patroni.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

TABLE = "ha_writes"
CREATE = (
    "create table if not exists ha_writes "
    "(n bigint primary key, at timestamptz not null default clock_timestamp())"
)
INSERT = "insert into ha_writes (n) values (%s) on conflict (n) do nothing returning at"
SELECT_AT = "select at from ha_writes where n = %s"
SELECT_ALL = "select n from ha_writes order by n"


@dataclass(frozen=True)
class Ack:
    """One acknowledged row: its number, when the client got the commit's acknowledgement, and
    the server's ``at``."""

    n: int
    acked_at: datetime
    server_at: datetime


@dataclass(frozen=True)
class Failure:
    """A failed attempt (a connection or a commit), for a test's report."""

    n: int
    at: datetime
    error: str


class Writer:
    def __init__(self, conninfo: str, interval: float = 0.1, connect_timeout: float = 2) -> None:
        self.conninfo = conninfo
        self.interval = interval
        self.connect_timeout = connect_timeout
        self._acks: list[Ack] = []
        self._failures: list[Failure] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: psycopg.Connection | None = None

    # -- control ------------------------------------------------------------------------------

    def start(self) -> Writer:
        """Create the table (on the primary) and start writing."""
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(CREATE)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="ha-writer", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 30) -> list[Ack]:
        """Stop after the attempt in progress; the acknowledged rows."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise AssertionError(f"the writer did not stop within {timeout} s")
        self._close()
        return self.acknowledged()

    def __enter__(self) -> Writer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what it saw --------------------------------------------------------------------------

    def acknowledged(self) -> list[Ack]:
        with self._lock:
            return list(self._acks)

    def last_acknowledged(self) -> Ack | None:
        with self._lock:
            return self._acks[-1] if self._acks else None

    def failures(self) -> list[Failure]:
        with self._lock:
            return list(self._failures)

    def wait_for(self, n: int, timeout: float = 60) -> Ack:
        """Block until row N (or a later one) is acknowledged; that row."""
        deadline = time.monotonic() + timeout
        while True:
            last = self.last_acknowledged()
            if last is not None and last.n >= n:
                return last
            if time.monotonic() > deadline or not (self._thread and self._thread.is_alive()):
                raise AssertionError(
                    f"the writer did not get row {n} acknowledged within {timeout} s "
                    f"(last: {last}, failures: {self.failures()[-3:]})"
                )
            time.sleep(0.05)

    def wait_for_more(self, count: int = 5, timeout: float = 60) -> Ack:
        """Block until COUNT more rows than now are acknowledged."""
        last = self.last_acknowledged()
        return self.wait_for((last.n if last else 0) + count, timeout)

    # -- the thread ---------------------------------------------------------------------------

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except psycopg.Error:
                pass
            self._conn = None

    def _commit(self, n: int) -> datetime:
        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(
                self.conninfo, autocommit=True, connect_timeout=int(self.connect_timeout)
            )
        # an earlier attempt at N may have committed without the client hearing of it
        row = self._conn.execute(INSERT, (n,)).fetchone()
        if row is None:
            row = self._conn.execute(SELECT_AT, (n,)).fetchone()
        return row[0]

    def _run(self) -> None:
        n = 1
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                server_at = self._commit(n)
            except psycopg.Error as e:
                self._close()
                with self._lock:
                    self._failures.append(Failure(n, datetime.now(UTC), str(e).strip()))
                self._stop.wait(0.1)
                continue
            acked_at = datetime.now(UTC)
            with self._lock:
                self._acks.append(Ack(n, acked_at, server_at))
            n += 1
            next_at = max(next_at + self.interval, time.monotonic())
            self._stop.wait(max(0.0, next_at - time.monotonic()))
