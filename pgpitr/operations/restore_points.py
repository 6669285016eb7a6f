"""Named restore points: ``pg_create_restore_point`` on the source, recorded in the repository.

``run`` is the create-restore-point operation: check (the name, the cluster runs and is a primary,
no point of that name yet), then create the point in the WAL and record it as
``STANZA/restore_points/NAME.json`` (name, time, LSN, timeline), beside the backups, so that a
restore from another host, or after the cluster is gone, finds it.

The point is a WAL record: a restore reaches it only once the segment holding it is archived.
pgpitr does not force a WAL switch for it (that would cost a whole segment per point, and
archive_timeout already bounds the wait); the restore plan checks that the point's LSN is
inside an archived chain, and ``describe`` says of each point whether it is restorable yet.
"""

from __future__ import annotations

import fcntl
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

from pgpitr import cluster_repository
from pgpitr.catalog.restore_points import RestorePoint, get_point, point_key, validate_name
from pgpitr.errors import AlreadyExists, ClusterStateError
from pgpitr.operations.primary_host import primary_host
from pgpitr.postgres.cluster import Cluster
from pgpitr.steps import Steps

log = logging.getLogger(__name__)


def run(steps: Steps, cluster: str, name: str) -> RestorePoint:
    """Create the restore point NAME on CLUSTER and record it in its repository.  Two
    creations of one cluster's points run one after the other (a run on the cluster's host
    holds its lock), so that of two of one name the second is refused, not recorded over the
    first's (a restore stops at the first point of a name in the WAL).  When the primary runs
    on another host, that host's agent creates it (and holds the lock there)."""
    validate_name(name)
    host = primary_host(steps, cluster)
    if host:
        parameters = {"cluster": cluster, "name": name}
        steps.run_on_host(host, "create-restore-point", parameters, needs="a restore point")
        return steps(recorded_point, cluster, name)
    with _points_lock(Cluster.get(cluster)):
        steps(check_new_point, cluster, name)
        return steps(create_point, cluster, name)


@contextmanager
def _points_lock(cluster: Cluster) -> Iterator[None]:
    fd = os.open(cluster.state.dir / "restore-points.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # a creation takes a second: the next one waits
        yield
    finally:
        os.close(fd)


def check_new_point(cluster: str, name: str) -> None:
    """Everything that needs no change: the name's form, the cluster runs, the name is free."""
    validate_name(name)
    c = Cluster.get(cluster)
    c.require_running()
    repo = cluster_repository.repository(c)
    if repo.exists(point_key(c.state.stanza, name)):
        existing = get_point(repo, c.state.stanza, name)
        raise AlreadyExists(
            f"cluster {cluster!r} already has a restore point {name!r} (made "
            f"{existing.time.isoformat(timespec='seconds')} at LSN {existing.lsn})",
            hint="choose another name: a restore to a name stops at its first point in the WAL",
        )


def create_point(cluster: str, name: str) -> RestorePoint:
    """``pg_create_restore_point`` (not retried: a retry would write a second point), then the
    record in the repository."""
    c = Cluster.get(cluster)
    with c.connect() as db:
        (in_recovery,) = db.execute("SELECT pg_is_in_recovery()").fetchone() or (False,)
        if in_recovery:
            raise ClusterStateError(
                f"cluster {cluster!r} is in recovery: a restore point is made on a primary",
                hint="wait until it is promoted",
            )
        row = db.execute(
            "SELECT p::text, now(), ('x' || substr(pg_walfile_name(p), 1, 8))::bit(32)::int "
            "FROM pg_create_restore_point(%s) AS p",
            (name,),
        ).fetchone()
    assert row is not None
    lsn, made, timeline = row
    point = RestorePoint(name, made, lsn, int(timeline), c.state.stanza)
    cluster_repository.repository(c).put_json(point_key(c.state.stanza, name), point.to_dict())
    log.info(
        "restore point %s of %s at LSN %s (timeline %d); restorable once its WAL is archived",
        name,
        cluster,
        lsn,
        point.timeline,
    )
    return point


def recorded_point(cluster: str, name: str) -> RestorePoint:
    """The restore point NAME of CLUSTER as the repository records it."""
    c = Cluster.get(cluster)
    return get_point(cluster_repository.repository(c), c.state.stanza, name)
