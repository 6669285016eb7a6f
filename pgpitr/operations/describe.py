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
from pathlib import Path
from typing import Any

from pgpitr import cluster_repository, monitor, policy_store, protection, timeparse
from pgpitr.catalog import backups, restore_points
from pgpitr.catalog import window as catalog_window
from pgpitr.operations import drill
from pgpitr.patroni.members import Membership
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


# -- describe: what `pgpitr cluster describe` shows ----------------------------------------------


@dataclass(frozen=True)
class Receiver:
    """Stream mode's receiver and its slot (pgpitr/wal/stream/ ``describe_fields``)."""

    synchronous: bool
    receiver_running: bool
    receiver_pid: int | None
    restarts: int | None
    last_error: str | None
    slot: str
    slot_exists: bool
    slot_active: bool
    retained_bytes: int | None
    max_retained: str
    sync_state: str | None


@dataclass(frozen=True)
class Streaming:
    log_method: str
    #: None unless the policy streams WAL
    receiver: Receiver | None
    warnings: tuple[str, ...] = ()

    @classmethod
    def of(cls, fields: dict[str, Any]) -> Streaming:
        stream = fields["stream"]
        return cls(
            fields["log_method"],
            Receiver(**stream) if stream else None,
            tuple(fields["stream_warnings"]),
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "log_method": self.log_method,
            "stream": dataclasses.asdict(self.receiver) if self.receiver else None,
            "stream_warnings": list(self.warnings),
        }


@dataclass(frozen=True)
class LastDrill:
    id: str
    time: datetime
    target: datetime
    result: str
    rto_seconds: float | None
    predicted_rto_seconds: float | None
    prediction_error_percent: float | None
    error: str | None

    @property
    def passed(self) -> bool:
        return self.result == "Passed"


@dataclass(frozen=True)
class Recovery:
    """The last drill, the predicted RTO of a restore to latest, and the RPO (archive lag)."""

    last_drill: LastDrill | None
    predicted_rto_latest_seconds: float | None
    predicted_rto_note: str
    #: None when log backup is off: no RPO to keep
    archive_lag_seconds: float | None
    rpo_max_seconds: float

    @property
    def rpo_exceeded(self) -> bool:
        lag = self.archive_lag_seconds
        return lag is not None and lag > self.rpo_max_seconds

    def as_json(self) -> dict[str, Any]:
        last = self.last_drill
        return {
            "last_drill": (
                {
                    **dataclasses.asdict(last),
                    "time": last.time.isoformat(),
                    "target": last.target.isoformat(),
                }
                if last
                else None
            ),
            "predicted_rto_latest_seconds": self.predicted_rto_latest_seconds,
            "predicted_rto_note": self.predicted_rto_note,
            "archive_lag_seconds": self.archive_lag_seconds,
            "rpo_max_seconds": self.rpo_max_seconds,
            "rpo_exceeded": self.rpo_exceeded,
        }


@dataclass(frozen=True)
class Lineage:
    """A lineage that ends in a completed backup no other backup is taken against."""

    end: str
    #: "NAME (TYPE, STATUS)", the full backup first; a missing parent as "NAME (missing)"
    links: tuple[str, ...]
    restorable: bool
    reason: str | None

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "links": list(self.links)}


@dataclass(frozen=True)
class RestorePointRow:
    name: str
    time: datetime
    lsn: str
    timeline: int
    cluster: str
    #: a restore can reach it now (its WAL archived after a backup's consistency point)
    restorable: bool

    @classmethod
    def of(cls, data: dict[str, Any]) -> RestorePointRow:
        return cls(**{**data, "time": datetime.fromisoformat(data["time"])})

    def as_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "time": self.time.isoformat()}


@dataclass(frozen=True)
class Description:
    """A cluster and its data protection, as ``describe`` shows it."""

    name: str
    platform: str
    running: bool
    protection: protection.Protection
    port: int
    socket_dir: Path
    datadir: Path
    system_identifier: str
    pg_version: int
    bindir: Path
    repository: str
    policy: str
    auto_backup: bool
    backup_schedule: str
    incremental: bool
    log_backup: bool
    streaming: Streaming
    backup_ttl: str
    #: the start of the newest completed backup
    last_schedule: datetime | None
    backups: int
    recoverable_time: tuple[tuple[datetime, datetime], ...]
    ranges: tuple[catalog_window.Range, ...]
    wal_checked_at: datetime | None
    restore_points: tuple[RestorePointRow, ...]
    lineages: tuple[Lineage, ...]
    recovery: Recovery
    membership: Membership | None = None  # an HA cluster's members

    @property
    def status(self) -> str:
        return "Running" if self.running else "Stopped"

    @property
    def type(self) -> str:
        return (
            "Full"
            + (" + Incremental" if self.incremental else "")
            + (" + WAL" if self.log_backup else "")
        )

    def as_json(self) -> dict[str, Any]:
        """``describe -o json``: its keys, in their order, and their values as they always were
        (a range's times as ``str`` gives them, every other time in ISO 8601)."""
        return {
            "name": self.name,
            "platform": self.platform,
            "status": self.status,
            **self.protection.as_fields(),
            "port": self.port,
            "socket_dir": str(self.socket_dir),
            "datadir": str(self.datadir),
            "system_identifier": self.system_identifier,
            "pg_version": self.pg_version,
            "bindir": str(self.bindir),
            "repository": self.repository,
            "policy": self.policy,
            "auto_backup": self.auto_backup,
            "backup_schedule": self.backup_schedule,
            "type": self.type,
            "log_backup": self.log_backup,
            **self.streaming.as_json(),
            "backup_ttl": self.backup_ttl,
            "last_schedule": _iso(self.last_schedule),
            "backups": self.backups,
            "recoverable_time": [(a.isoformat(), b.isoformat()) for a, b in self.recoverable_time],
            "ranges": [
                {**dataclasses.asdict(r), "start": str(r.start), "end": str(r.end)}
                for r in self.ranges
            ],
            "wal_checked_at": _iso(self.wal_checked_at),
            "restore_points": [p.as_json() for p in self.restore_points],
            "lineages": [lineage.as_json() for lineage in self.lineages],
            **self.recovery.as_json(),
            **(self.membership.as_json() if self.membership else {}),
        }


def describe(cluster: Cluster) -> Description:
    """A cluster and its data protection, as ``describe`` shows it (no flow, no write)."""
    policy = policy_store.load_policy(cluster)
    repo = cluster_repository.repository(cluster)
    window = catalog_window.recoverable_window(repo, cluster.state.stanza, cluster.bindir)
    completed = [b for b in window.backups if b.completed]
    return Description(
        name=cluster.name,
        platform=cluster.state.platform,
        running=cluster.is_running(),
        protection=protection.check(cluster, policy.logfile_enabled),
        port=cluster.state.port,
        socket_dir=cluster.state.socket_dir,
        datadir=cluster.state.datadir,
        system_identifier=cluster.state.system_identifier,
        pg_version=cluster.state.pg_version,
        bindir=cluster.bindir,
        repository=repo.url,
        policy=policy.name,
        auto_backup=policy.datafile_enabled,
        backup_schedule=policy.cron,
        incremental=policy.incremental_enabled,
        log_backup=policy.logfile_enabled,
        streaming=Streaming.of(stream.describe_fields(cluster, policy)),
        backup_ttl=policy.ttl,
        last_schedule=completed[-1].start_time if completed else None,
        backups=len(window.backups),
        recoverable_time=tuple(window.periods),
        ranges=tuple(window.ranges),
        wal_checked_at=window.wal_checked_at,
        restore_points=restore_points_of(repo, cluster.state.stanza, window),
        lineages=lineages(window),
        recovery=_recovery(cluster, window),
        membership=Membership.of(cluster) if cluster.state.is_ha else None,
    )


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


def _recovery(cluster: Cluster, window: catalog_window.Window) -> Recovery:
    lag, limit = _rpo(cluster, window)
    fields = drill.describe_fields(cluster, window)
    last = fields["last_drill"]
    return Recovery(
        last_drill=(
            LastDrill(
                **{
                    **last,
                    "time": datetime.fromisoformat(last["time"]),
                    "target": datetime.fromisoformat(last["target"]),
                }
            )
            if last
            else None
        ),
        predicted_rto_latest_seconds=fields["predicted_rto_latest_seconds"],
        predicted_rto_note=fields["predicted_rto_note"],
        archive_lag_seconds=lag,
        rpo_max_seconds=limit,
    )


def lineages(window: catalog_window.Window) -> tuple[Lineage, ...]:
    """Each lineage that ends in a completed backup no other backup is taken against: its links,
    the full backup first, and whether it can be restored (and why not)."""
    completed = [b for b in window.backups if b.completed]
    parents = {b.parent for b in window.backups if b.completed and b.parent}
    found = []
    for b in completed:
        if b.name in parents:
            continue
        links = backups.lineage(window.backups, b.name)
        missing = [] if links[0].parent is None else [f"{links[0].parent} (missing)"]
        found.append(
            Lineage(
                end=b.name,
                links=tuple(
                    missing + [f"{link.name} ({link.type}, {link.status})" for link in links]
                ),
                restorable=b.name not in window.unusable,
                reason=window.unusable.get(b.name),
            )
        )
    return tuple(found)


def lineage_rows(window: catalog_window.Window) -> list[dict[str, Any]]:
    return [lineage.as_json() for lineage in lineages(window)]


def restore_points_of(
    repo: Repository, stanza: str, window: catalog_window.Window
) -> tuple[RestorePointRow, ...]:
    """The recorded restore points, each with whether a restore can reach it now (its LSN in
    an archived chain after a backup's consistency point, on that chain's timeline path)."""
    return tuple(
        RestorePointRow(
            **dataclasses.asdict(point),
            restorable=any(c.reaches(point.lsn_int, point.timeline) for c in window.chains),
        )
        for point in restore_points.list_points(repo, stanza)
    )


def restore_point_rows(
    repo: Repository, stanza: str, window: catalog_window.Window
) -> list[dict[str, Any]]:
    return [point.as_json() for point in restore_points_of(repo, stanza, window)]
