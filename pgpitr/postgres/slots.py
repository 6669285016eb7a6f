"""pgpitr's physical replication slot and the synchronous setting on a server (streaming).

The receiver of pgpitr/wal/stream/ streams on the slot ``pgpitr_walstream``, so the server
keeps every byte it has not flushed; with synchronous streaming, ``synchronous_standby_names``
names its application_name.  Both are created and removed by the policy switch
(pgpitr/operations/log_backup.py ``set_streaming``) and by unregister; a deleted cluster takes them
along.  A Patroni cluster's slot is one of Patroni's permanent slots, and its synchronous
streaming is refused (``refuse_synchronous``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from pgpitr import waits
from pgpitr.errors import ClusterStateError

if TYPE_CHECKING:
    from pgpitr.postgres.cluster import Cluster

log = logging.getLogger(__name__)

#: the physical replication slot, and the receiver's application_name (synchronous_standby_names)
SLOT = "pgpitr_walstream"
APPLICATION_NAME = "pgpitr_walstream"


@dataclass(frozen=True)
class SlotState:
    exists: bool
    #: bytes of WAL the slot holds back on the server (current LSN - restart LSN)
    retained: int | None = None
    active: bool = False
    #: pg_stat_replication's sync_state of the receiver ("sync", "async"), None when absent
    sync_state: str | None = None
    flush_lag_bytes: int | None = None


def slot_state(cluster: Cluster) -> SlotState:
    with cluster.connect() as db:
        row = db.execute(
            "SELECT (pg_current_wal_lsn() - restart_lsn)::bigint, active "
            "FROM pg_replication_slots WHERE slot_name = %s",
            (SLOT,),
        ).fetchone()
        if row is None:
            return SlotState(False)
        receiver = db.execute(
            "SELECT sync_state, (pg_current_wal_lsn() - flush_lsn)::bigint "
            "FROM pg_stat_replication WHERE application_name = %s",
            (APPLICATION_NAME,),
        ).fetchone()
    return SlotState(
        True,
        row[0],
        bool(row[1]),
        receiver[0] if receiver else None,
        receiver[1] if receiver else None,
    )


def check_ready(cluster: Cluster) -> None:
    """Refuse streaming where it cannot work, before anything changes: no pg_receivewal in the
    server's binaries, wal_level minimal, no WAL sender or slot left, an HA cluster with
    members on other hosts (the receiver runs under this host's agent and reaches its primary
    over its Unix socket: a primary promoted on another host is out of its reach)."""
    elsewhere = sorted({m["host"] for m in cluster.state.members if m.get("host")})
    if elsewhere:
        raise ClusterStateError(
            f"WAL streaming of {cluster.name!r} is refused: members of it run on other hosts "
            f"({', '.join(elsewhere)}), where this host's receiver cannot follow the primary",
            hint="keep schedule.logfile.method=archive: archive_command archives from whichever "
            "member is primary, on any host",
        )
    if not (cluster.bindir / "pg_receivewal").exists():
        raise ClusterStateError(
            f"streaming needs {cluster.bindir / 'pg_receivewal'}, which is missing",
            hint="install the PostgreSQL client programs of the server's version",
        )
    with cluster.connect() as db:
        settings = dict(
            db.execute(
                "SELECT name, setting FROM pg_settings WHERE name IN "
                "('wal_level', 'max_wal_senders', 'max_replication_slots')"
            ).fetchall()
        )
    if settings.get("wal_level") == "minimal":
        raise ClusterStateError(
            f"cluster {cluster.name!r} runs with wal_level=minimal: it cannot stream WAL",
            hint="set wal_level = replica and restart the server",
        )
    for name in ("max_wal_senders", "max_replication_slots"):
        if int(settings.get(name, "0")) < 1:
            raise ClusterStateError(
                f"cluster {cluster.name!r} has {name} = 0: streaming needs one",
                hint=f"set {name} to at least 1 and restart the server",
            )


def ensure_slot(cluster: Cluster, timeout: float = 60) -> bool:
    """Create pgpitr's physical slot, reserving WAL from now, unless it exists; True when made.
    A Patroni cluster's is one of Patroni's permanent slots (on every member, so it survives
    a failover): asked for in its dynamic configuration, then waited for on the primary."""
    if _slot_exists(cluster):
        return False
    if not cluster.state.is_ha:
        with cluster.connect() as db:
            db.execute("SELECT pg_create_physical_replication_slot(%s, true)", (SLOT,))
        log.info("replication slot %s created on %s", SLOT, cluster.name)
        return True
    from pgpitr import patroni

    patroni.set_permanent_slot(cluster.state, SLOT, present=True)
    waits.poll(
        lambda: _slot_exists(cluster),
        timeout,
        0.2,
        lambda: ClusterStateError(
            f"Patroni did not create the permanent slot {SLOT} on the primary of "
            f"{cluster.name!r} within {timeout:.0f} s",
            hint="see `patronictl show-config` (slots) and the primary's Patroni log",
            transient=True,
        ),
    )
    log.info("replication slot %s created on %s by Patroni (a permanent slot)", SLOT, cluster.name)
    return True


def _slot_exists(cluster: Cluster) -> bool:
    with cluster.connect() as db:
        found = db.execute(
            "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)
        ).fetchone()
    return found is not None


def drop_slot(cluster: Cluster, timeout: float = 30) -> bool:
    """Drop pgpitr's slot (its WAL is then the server's to recycle); True when one was dropped.
    A receiver still using it (the agent has not seen the new policy yet) is disconnected.
    A Patroni cluster's leaves its permanent slots first (else Patroni makes it again), and
    Patroni drops the members' copies."""
    import psycopg

    if cluster.state.is_ha:
        from pgpitr import patroni

        patroni.set_permanent_slot(cluster.state, SLOT, present=False)
    deadline = time.monotonic() + timeout
    with cluster.connect() as db:
        while True:
            row = db.execute(
                "SELECT active_pid FROM pg_replication_slots WHERE slot_name = %s", (SLOT,)
            ).fetchone()
            if row is None:
                return False
            try:
                if row[0] is None:
                    db.execute("SELECT pg_drop_replication_slot(%s)", (SLOT,))
                    log.info("replication slot %s dropped on %s", SLOT, cluster.name)
                    return True
                if time.monotonic() > deadline - timeout / 2:
                    db.execute("SELECT pg_terminate_backend(%s)", (row[0],))
            except psycopg.errors.ObjectInUse:
                pass
            except psycopg.errors.UndefinedObject:  # Patroni dropped it meanwhile
                return True
            if time.monotonic() > deadline:
                raise ClusterStateError(
                    f"the replication slot {SLOT} of {cluster.name!r} stays in use",
                    hint="stop the agent (`pgpitr agent stop`) and try again",
                )
            time.sleep(0.2)


def set_synchronous(cluster: Cluster, on: bool) -> None:
    """``synchronous_standby_names`` naming the receiver (on), or reset when it names it (off:
    a setting of the server's owner is left alone); ALTER SYSTEM and a reload.  A Patroni
    cluster's is Patroni's (``refuse_synchronous``): left alone."""
    if cluster.state.is_ha:
        if on:
            refuse_synchronous(cluster)
        return
    if on:
        cluster.change_settings({"synchronous_standby_names": APPLICATION_NAME})
    elif synchronous_names(cluster) == APPLICATION_NAME:
        cluster.change_settings({"synchronous_standby_names": None})


def refuse_synchronous(cluster: Cluster) -> None:
    """Synchronous streaming of a Patroni cluster is refused, with the way to what it is for.

    Patroni writes ``synchronous_standby_names`` from its members alone in its synchronous
    mode, so pgpitr's receiver cannot join that set; and with the receiver alone synchronous,
    Patroni could still promote a standby that lacks commits the receiver acknowledged, whose
    new timeline then goes on without them.  Patroni's synchronous mode is what keeps an
    acknowledged commit through a failover; the receiver, on a permanent slot, catches up
    from whichever member is promoted."""
    if cluster.state.is_ha:
        raise ClusterStateError(
            f"synchronous WAL streaming of the Patroni cluster {cluster.name!r} is refused: "
            "synchronous_standby_names is Patroni's, and a failover could promote a standby "
            "without the commits pgpitr's receiver acknowledged",
            hint="turn on Patroni's synchronous mode (`patronictl edit-config -s "
            "synchronous_mode=on`) so that no acknowledged commit is lost in a failover, and "
            "keep schedule.logfile.synchronous=false: the receiver streams from whichever member "
            "is primary",
        )


def synchronous_names(cluster: Cluster) -> str:
    with cluster.connect() as db:
        row = db.execute("SHOW synchronous_standby_names").fetchone()
    return row[0] if row else ""


def wait_receiving(
    cluster: Cluster, timeout: float = 30, started_after: datetime | None = None
) -> bool:
    """Wait until the receiver streams from the server (a connection made after
    ``started_after``, when given); False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with cluster.connect() as db:
            row = db.execute(
                "SELECT 1 FROM pg_stat_replication WHERE application_name = %s "
                "AND state = 'streaming' AND (%s::timestamptz IS NULL OR backend_start > %s)",
                (APPLICATION_NAME, started_after, started_after),
            ).fetchone()
        if row:
            return True
        time.sleep(0.2)
    return False
