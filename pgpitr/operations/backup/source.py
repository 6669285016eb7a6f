"""Which server a backup reads: the policy's ``backup.source`` among an HA cluster's members.

Only a standby of this host is backed up from (the standbys of another host are that host's to
back up, where the cluster is kept too).  A standby's backup is restorable like the primary's:
pg_basebackup on a standby ends at the standby's replay point, whose WAL the primary archives
(``confirm_wal_arrival`` switches a segment on the primary afterwards).  A standby more than
``LAG_LIMIT`` behind is passed over (its backup would wait on its replay, and hold a window
that ends later than it could).  If the chosen standby goes away mid-backup, pg_basebackup
fails, the attempt is marked Failed and removed, and the task's retry chooses again from the
members then.

A standby's backup starts at its last restartpoint, which it makes only where the primary
checkpointed: after a quiet while that can be long before now, and an incremental must start
after its parent ended ("manifest requires WAL from final timeline ... ending at").  So the
primary checkpoints first and the standby replays past it (``caught_up``, before the backup).
"""

from __future__ import annotations

import logging

from pgpitr import patroni, waits
from pgpitr.errors import ClusterStateError
from pgpitr.postgres import ha
from pgpitr.postgres.cluster import Cluster

log = logging.getLogger(__name__)

#: bytes of replay lag beyond which a standby is not backed up from
LAG_LIMIT = 64 << 20


def choose(cluster: Cluster, preference: str) -> Cluster:
    """CLUSTER (its primary) or a streaming standby of it, as PREFERENCE (primary, standby,
    prefer-standby) and the members now say."""
    if not cluster.state.is_ha or preference == "primary":
        return cluster
    members = cluster.members or []
    standbys = sorted(
        (m for m in members if m.is_streaming_standby and (m.lag or 0) <= LAG_LIMIT),
        key=lambda m: (m.lag or 0, m.name),
    )
    for chosen in standbys:
        try:
            placement = patroni.placement_of(cluster.state, chosen, members)
        except ClusterStateError as exc:  # another host's member: that host backs it up
            log.info("%s: not backing up from standby %s: %s", cluster.name, chosen.name, exc)
            continue
        log.info(
            "%s: backing up from standby %s (port %s, %s bytes behind)",
            cluster.name,
            chosen.name,
            chosen.port,
            chosen.lag or 0,
        )
        return ha.member(cluster, placement)
    why = cluster.ha_problem or (
        f"no member of this host streams within {LAG_LIMIT >> 20} MiB of the primary"
        if members
        else "Patroni named no members"
    )
    if preference == "standby":
        raise ClusterStateError(
            f"backup.source is standby, and {cluster.name!r} has no standby to back up from: {why}",
            hint="try again once a standby streams (`patronictl list`), or set "
            "backup.source=prefer-standby",
            transient=True,
        )
    log.info("%s: %s; backing up from the primary", cluster.name, why)
    return cluster


def caught_up(primary: Cluster, standby: Cluster, timeout: float = 60) -> None:
    """CHECKPOINT on the primary, then wait until the standby replayed past that checkpoint's
    record, where pg_basebackup's fast checkpoint makes its restartpoint."""
    with primary.connect() as db:
        db.execute("CHECKPOINT")
        row = db.execute("SELECT checkpoint_lsn FROM pg_control_checkpoint()").fetchone()
    assert row is not None

    def replayed() -> bool:
        with standby.connect() as db:
            past = db.execute(
                "SELECT pg_last_wal_replay_lsn() > %s::pg_lsn", (str(row[0]),)
            ).fetchone()
        return bool(past and past[0])

    waits.poll(
        replayed,
        timeout,
        0.1,
        lambda: ClusterStateError(
            f"the standby on port {standby.state.port} did not replay the primary's "
            f"checkpoint {row[0]} within {timeout:.0f} s",
            hint="see its replication lag (`pgpitr cluster describe`); the retry chooses again",
            transient=True,
        ),
    )


def member_name(cluster: Cluster, server: Cluster) -> str | None:
    """The member SERVER is, by its port (None for a single server)."""
    for member in cluster.members or []:
        if member.port == server.state.port:
            return member.name
    return None
