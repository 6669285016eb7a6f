"""What a cluster can be restored to, and whether WAL archiving keeps up.

``run`` is the refresh-recoverable-window operation (read the window, check the archiver);
``describe`` is the read-only view of a cluster that ``pgpitr cluster describe`` prints, built
from the same window and started as no flow.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pgpitr import cluster_repository, monitor, policy_store, protection, timeparse
from pgpitr.catalog import backups, restore_points
from pgpitr.catalog import window as catalog_window
from pgpitr.operations import drill
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import Repository
from pgpitr.steps import Steps
from pgpitr.wal import stream

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowReport:
    cluster: str
    window: catalog_window.Window
    #: the archiver's state; None when log backup is off or the server is stopped
    archiver: monitor.ArchiverStatus | None = None
    #: now - the window's end (with log backup on), and the policy's rpo.max, in seconds
    archive_lag_seconds: float | None = None
    rpo_max_seconds: float | None = None

    @property
    def rpo_exceeded(self) -> bool:
        lag, limit = self.archive_lag_seconds, self.rpo_max_seconds
        return lag is not None and limit is not None and lag > limit

    def as_dict(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "backups": len(self.window.backups),
            "window": [(a.isoformat(), b.isoformat()) for a, b in self.window.periods],
            "ranges": [
                {"backup": r.backup, "start": r.start.isoformat(), "end": r.end.isoformat()}
                for r in self.window.ranges
            ],
            "wal_checked_at": _iso(self.window.wal_checked_at),
            "archiver": self.archiver.as_payload() if self.archiver else None,
            "archive_lag_seconds": self.archive_lag_seconds,
            "rpo_max_seconds": self.rpo_max_seconds,
            "rpo_exceeded": self.rpo_exceeded,
        }


def run(steps: Steps, cluster: str) -> WindowReport:
    """CLUSTER's recoverable window; with log backup on, whether archiving keeps up."""
    window = steps(read_window, cluster)
    archiver = steps(check_archiver, cluster)
    return WindowReport(cluster, window, archiver, *_rpo(Cluster.get(cluster), window))


#: How often the refresh (every ten minutes) lists every log directory of every chain, in
#: seconds: at 100,000 segments that is ~400 LISTs, too many to pay every ten minutes.
WAL_CHECK_EVERY = "PGPITR_WAL_CHECK_EVERY"
DEFAULT_WAL_CHECK_EVERY = 3600.0


def read_window(cluster: str) -> catalog_window.Window:
    """The window; once an hour (PGPITR_WAL_CHECK_EVERY) with every log directory of every
    chain listed (one LIST per 256 segments of 16 MB): describe lists only each chain's ends,
    so a segment deleted behind pgpitr's back in the middle of a chain is found here, written
    into the catalog index as a correction, and the check's time recorded ("WAL checked")."""
    c = Cluster.get(cluster)
    repo = cluster_repository.repository(c)
    window = catalog_window.recoverable_window(repo, c.state.stanza, c.bindir)
    every = float(os.environ.get(WAL_CHECK_EVERY) or DEFAULT_WAL_CHECK_EVERY)
    checked = window.wal_checked_at
    if checked is None or (datetime.now(UTC) - checked).total_seconds() >= every:
        window = catalog_window.recoverable_window(
            repo, c.state.stanza, c.bindir, every_segment=True
        )
    log.info(
        "%s: %d backup(s), recoverable %s",
        cluster,
        len(window.backups),
        ", ".join(f"{a.isoformat()} ~ {b.isoformat()}" for a, b in window.periods) or "nowhere yet",
    )
    return window


def check_archiver(cluster: str) -> monitor.ArchiverStatus | None:
    c = Cluster.get(cluster)
    if not policy_store.load_policy(c).logfile_enabled or not c.is_running():
        return None
    status = monitor.archiver_status(c)
    (log.warning if status.behind else log.info)("%s: %s", cluster, status.reason)
    return status


def describe(cluster: Cluster) -> dict[str, Any]:
    """A cluster and its data protection, as ``describe`` shows it (no flow, no write)."""
    policy = policy_store.load_policy(cluster)
    repo = cluster_repository.repository(cluster)
    window = catalog_window.recoverable_window(repo, cluster.state.stanza, cluster.bindir)
    completed = [b for b in window.backups if b.completed]
    last: datetime | None = completed[-1].start_time if completed else None
    return {
        "name": cluster.name,
        "platform": cluster.state.platform,
        "status": "Running" if cluster.is_running() else "Stopped",
        **protection.check(cluster, policy.logfile_enabled).as_fields(),
        "port": cluster.state.port,
        "socket_dir": str(cluster.state.socket_dir),
        "datadir": str(cluster.state.datadir),
        "system_identifier": cluster.state.system_identifier,
        "pg_version": cluster.state.pg_version,
        "bindir": str(cluster.bindir),
        "repository": repo.url,
        "policy": policy.name,
        "auto_backup": policy.datafile_enabled,
        "backup_schedule": policy.cron,
        "type": "Full"
        + (" + Incremental" if policy.incremental_enabled else "")
        + (" + WAL" if policy.logfile_enabled else ""),
        "log_backup": policy.logfile_enabled,
        **stream.describe_fields(cluster, policy),
        "backup_ttl": policy.ttl,
        "last_schedule": last.isoformat() if last else None,
        "backups": len(window.backups),
        "recoverable_time": [(a.isoformat(), b.isoformat()) for a, b in window.periods],
        "ranges": [dataclasses.asdict(r) for r in window.ranges],
        "wal_checked_at": _iso(window.wal_checked_at),
        "restore_points": restore_point_rows(repo, cluster.state.stanza, window),
        "lineages": lineage_rows(window),
        **_drills_and_rpo(cluster, window),
    }


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when else None


# -- RPO and RTO (issue 13) --------------------------------------------------------------------


def archive_lag(window: catalog_window.Window, now: datetime | None = None) -> float | None:
    """Seconds from the newest commit safely in the repository (the window's end; heartbeat
    rows are commits too) to now; None when there is no window yet."""
    periods = window.periods
    if not periods:
        return None
    return round(max(0.0, ((now or datetime.now(UTC)) - periods[-1][1]).total_seconds()), 1)


def _rpo(cluster: Cluster, window: catalog_window.Window) -> tuple[float | None, float | None]:
    """(archive lag, rpo.max) in seconds; no lag when log backup is off (no RPO to keep)."""
    policy = policy_store.load_policy(cluster)
    limit = timeparse.parse_ttl(policy.rpo_max).total_seconds()
    return (archive_lag(window) if policy.logfile_enabled else None), limit


def _drills_and_rpo(cluster: Cluster, window: catalog_window.Window) -> dict[str, Any]:
    """describe's block on the last drill, the predicted RTO and the RPO (archive lag)."""
    lag, limit = _rpo(cluster, window)
    return {
        **drill.describe_fields(cluster, window),
        "archive_lag_seconds": lag,
        "rpo_max_seconds": limit,
        "rpo_exceeded": lag is not None and lag > limit,
    }


def lineage_rows(window: catalog_window.Window) -> list[dict[str, Any]]:
    """Each lineage that ends in a completed backup no other backup is taken against: its links,
    the full backup first, and whether it can be restored (and why not)."""
    completed = [b for b in window.backups if b.completed]
    parents = {b.parent for b in window.backups if b.completed and b.parent}
    rows = []
    for b in completed:
        if b.name in parents:
            continue
        links = backups.lineage(window.backups, b.name)
        missing = [] if links[0].parent is None else [f"{links[0].parent} (missing)"]
        rows.append(
            {
                "end": b.name,
                "links": missing + [f"{link.name} ({link.type}, {link.status})" for link in links],
                "restorable": b.name not in window.unusable,
                "reason": window.unusable.get(b.name),
            }
        )
    return rows


def restore_point_rows(
    repo: Repository, stanza: str, window: catalog_window.Window
) -> list[dict[str, Any]]:
    """The recorded restore points, each with whether a restore can reach it now (its LSN in
    an archived chain after a backup's consistency point, on that chain's timeline path)."""
    return [
        {
            **point.to_dict(),
            "restorable": any(c.reaches(point.lsn_int, point.timeline) for c in window.chains),
        }
        for point in restore_points.list_points(repo, stanza)
    ]
