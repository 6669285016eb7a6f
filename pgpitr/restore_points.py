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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgpitr import clusters, wal
from pgpitr.errors import AlreadyExists, ClusterStateError, InvalidInput, NotFound, TamperedObject
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import Repository
from pgpitr.steps import Steps
from pgpitr.targets import POINT_NAME_RE, POINT_NAME_RULE

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestorePoint:
    name: str
    time: datetime  # the server's clock when the point was made
    lsn: str  # pg_create_restore_point's result: the end of the point's WAL record
    timeline: int
    cluster: str

    @property
    def lsn_int(self) -> int:
        return wal.lsn_to_int(self.lsn)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "time": self.time.isoformat(),
            "lsn": self.lsn,
            "timeline": self.timeline,
            "cluster": self.cluster,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestorePoint:
        return cls(
            name=data["name"],
            time=datetime.fromisoformat(data["time"]),
            lsn=data["lsn"],
            timeline=int(data["timeline"]),
            cluster=data.get("cluster", ""),
        )


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not POINT_NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid restore point name {name!r}: use {POINT_NAME_RULE}",
            hint="e.g. before-upgrade-2026-12-01",
        )
    return name


def point_key(stanza: str, name: str) -> str:
    return f"{stanza}/restore_points/{name}.json"


def _read(repo: Repository, stanza: str, name: str) -> RestorePoint:
    """The point stored as ``name``, refused when it says it is another point or another
    cluster's: copied over another's record, it would send a restore to its LSN."""
    key = point_key(stanza, name)
    point = RestorePoint.from_dict(repo.get_json(key))
    if point.name != name or point.cluster not in ("", stanza):  # "": written before it was kept
        raise TamperedObject(
            f"object {repo.url}/{key} records restore point {point.name!r} of cluster "
            f"{point.cluster!r}, not {name!r} of cluster {stanza!r}: it was copied or moved in "
            "the repository, and is refused",
            hint="the repository was changed behind pgpitr's back: find who changes it",
        )
    return point


def list_points(repo: Repository, stanza: str) -> list[RestorePoint]:
    """Every recorded point of a stanza, oldest (lowest LSN) first."""
    folder = f"{stanza}/restore_points/"
    found = [
        _read(repo, stanza, info.key[len(folder) : -len(".json")])
        for info in repo.list(folder)
        if info.key.endswith(".json")
    ]
    return sorted(found, key=lambda p: (p.timeline, p.lsn_int, p.name))


def get_point(repo: Repository, stanza: str, name: str) -> RestorePoint:
    key = point_key(stanza, validate_name(name))
    if not repo.exists(key):
        known = ", ".join(p.name for p in list_points(repo, stanza)) or "none"
        raise NotFound(
            f"cluster {stanza!r} has no restore point {name!r} (known: {known})",
            hint=f"see `pgpitr cluster describe {stanza}`; make one with `pgpitr cluster "
            f"create-restore-point {stanza} --name NAME`",
        )
    return _read(repo, stanza, name)


# -- the operation ---------------------------------------------------------------------------


def run(steps: Steps, cluster: str, name: str) -> RestorePoint:
    """Create the restore point NAME on CLUSTER and record it in its repository.  Two
    creations of one cluster's points run one after the other (a run on the cluster's host
    holds its lock), so that of two of one name the second is refused, not recorded over the
    first's (a restore stops at the first point of a name in the WAL)."""
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
    repo = clusters.repository(c)
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
    clusters.repository(c).put_json(point_key(c.state.stanza, name), point.to_dict())
    log.info(
        "restore point %s of %s at LSN %s (timeline %d); restorable once its WAL is archived",
        name,
        cluster,
        lsn,
        point.timeline,
    )
    return point
