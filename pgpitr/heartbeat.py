"""Heartbeat rows: a known commit every few seconds, in a small table pgpitr owns in the cluster.

``pgpitr.heartbeat(beat_at timestamptz, lsn pg_lsn, host text)`` in the ``postgres`` database
gets one row per beat: the time (``clock_timestamp()``) and the WAL position at that moment.
Each beat is its own transaction with a commit record, so

- a drill has an oracle: restored to time T, the cluster must hold the newest row of the source
  at or before T and none after it (pgpitr/operations/drill/);
- an idle cluster still commits, so the recoverable window's end (the last archived commit)
  follows the clock, and the archive lag (now - that end) measures the RPO instead of growing
  forever while nothing happens.

The agent writes the beats (``start``: a daemon thread of ``pgpitr agent run``) every
``PGPITR_HEARTBEAT_INTERVAL`` seconds (30 by default) for each cluster of this host that runs,
has log backup on and ``heartbeat.enable`` in its policy (on for created clusters, off for
registered ones).  Where no agent runs, nothing writes them: the WAL commands that PostgreSQL
runs stay as they are (light, and the installed copy of the code), drills then say "no heartbeat
in the window", and the lag of an idle cluster grows.  Old rows go in the same transaction as
each beat (older than ``KEEP``), so the table stays small.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pgpitr import policy_store
from pgpitr.errors import NotFound, PitrError
from pgpitr.postgres.cluster import Cluster
from pgpitr.state import this_host

log = logging.getLogger(__name__)

SCHEMA = "pgpitr"
TABLE = "heartbeat"
DATABASE = "postgres"
INTERVAL_ENV = "PGPITR_HEARTBEAT_INTERVAL"
DEFAULT_INTERVAL = 30.0
#: rows older than this go at each beat: a day of beats at 30 s is 2,880 rows; a drill's oracle
#: needs only the newest row before its target
KEEP = timedelta(days=1)


def interval() -> float:
    """Seconds between beats: ``PGPITR_HEARTBEAT_INTERVAL`` (tests shorten it), else 30."""
    text = os.environ.get(INTERVAL_ENV, "")
    try:
        value = float(text) if text else DEFAULT_INTERVAL
    except ValueError:
        log.warning(
            "%s=%r is not a number of seconds; using %s", INTERVAL_ENV, text, DEFAULT_INTERVAL
        )
        return DEFAULT_INTERVAL
    return value if value > 0 else DEFAULT_INTERVAL


def _sql() -> Any:  # psycopg is imported only when a server is talked to
    from psycopg import sql

    return sql


def _table() -> Any:
    sql = _sql()
    return sql.Identifier(SCHEMA, TABLE)


def ensure_table(db: Any) -> None:
    """Create the schema and table when missing (idempotent)."""
    sql = _sql()
    db.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(SCHEMA)))
    db.execute(
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            "beat_at timestamptz NOT NULL PRIMARY KEY, lsn pg_lsn NOT NULL, host text NOT NULL)"
        ).format(_table())
    )


@dataclass(frozen=True)
class Beat:
    cluster: str
    beat_at: datetime
    lsn: str
    removed: int  # old rows removed by this beat


def beat(cluster: Cluster, keep: timedelta = KEEP) -> Beat:
    """Write one heartbeat row into ``cluster`` and remove rows older than ``keep``."""
    cluster.require_running()
    table = _table()
    sql = _sql()
    with cluster.connect(DATABASE) as db:
        ensure_table(db)
        with db.transaction():
            row = db.execute(
                sql.SQL(
                    "INSERT INTO {} (beat_at, lsn, host) "
                    "VALUES (clock_timestamp(), pg_current_wal_lsn(), %s) RETURNING beat_at, lsn"
                ).format(table),
                (this_host(),),
            ).fetchone()
            assert row is not None
            removed = db.execute(
                sql.SQL("DELETE FROM {} WHERE beat_at < %s").format(table), (row[0] - keep,)
            ).rowcount
    return Beat(cluster.name, row[0], str(row[1]), max(removed, 0))


def newest(cluster: Cluster, at_or_before: datetime | None = None) -> datetime | None:
    """The newest heartbeat of ``cluster`` (at or before a time); None when there is none."""
    sql = _sql()
    with cluster.connect(DATABASE) as db:
        if not _exists(db):
            return None
        if at_or_before is None:
            row = db.execute(sql.SQL("SELECT max(beat_at) FROM {}").format(_table())).fetchone()
        else:
            row = db.execute(
                sql.SQL("SELECT max(beat_at) FROM {} WHERE beat_at <= %s").format(_table()),
                (at_or_before,),
            ).fetchone()
    return row[0] if row else None


def after(cluster: Cluster, when: datetime) -> list[datetime]:
    """Heartbeats of ``cluster`` newer than ``when`` (at most 10), oldest first."""
    sql = _sql()
    with cluster.connect(DATABASE) as db:
        if not _exists(db):
            return []
        rows = db.execute(
            sql.SQL("SELECT beat_at FROM {} WHERE beat_at > %s ORDER BY beat_at LIMIT 10").format(
                _table()
            ),
            (when,),
        ).fetchall()
    return [r[0] for r in rows]


def _exists(db: Any) -> bool:
    row = db.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{SCHEMA}.{TABLE}",)).fetchone()
    return bool(row and row[0])


# -- the agent's loop --------------------------------------------------------------------------


def wanted(cluster: Cluster) -> bool:
    """Whether the agent beats for ``cluster``: of this host, running, log backup and heartbeat
    on in its policy, and not a cluster being restored (a drill's scratch cluster, say)."""
    policy = policy_store.agent_policy(cluster)
    if policy is None:
        return False
    try:
        stored = json.loads((cluster.state.dir / policy_store.POLICY_FILE).read_text())
    except (OSError, ValueError):
        return False
    if cluster.registered and "heartbeat_enabled" not in stored:
        return False  # registered before heartbeats existed: its owner never said yes
    return policy.logfile_enabled and policy.heartbeat_enabled and cluster.is_running()


def beat_all() -> list[Beat]:
    """One beat for every cluster that ``wanted`` says; a failure is logged, not raised, so
    that one broken cluster does not stop the others' beats."""
    done = []
    for cluster in Cluster.all():
        try:
            if wanted(cluster):
                done.append(beat(cluster))
        except (NotFound, FileNotFoundError):
            continue  # deleted meanwhile
        except Exception as exc:  # a server in recovery, a refused connection: next time
            log.warning("heartbeat of %s not written: %s", cluster.name, _reason(exc))
    return done


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, PitrError) else f"{type(exc).__name__}: {exc}"


def loop(stop: threading.Event, every: float | None = None) -> None:
    """Beat every ``every`` seconds until ``stop`` is set."""
    every = every or interval()
    while not stop.is_set():
        beat_all()
        stop.wait(every)


def start(every: float | None = None) -> tuple[threading.Thread, threading.Event]:
    """The loop in a daemon thread (it dies with its process); set the event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(target=loop, args=(stop, every), name="pgpitr-heartbeat", daemon=True)
    thread.start()
    return thread, stop
