"""The engine's operations as the flows run them, with the plain ``Steps`` (no Prefect): what
tests call when they need an operation's effect rather than its command line."""

from __future__ import annotations

from datetime import datetime

from pgpitr.catalog.restore_points import RestorePoint
from pgpitr.manifest import BackupManifest
from pgpitr.operations import backup as bk
from pgpitr.operations import delete_backup, restore_points, retention
from pgpitr.operations import restore as rs
from pgpitr.postgres.cluster import Cluster
from pgpitr.steps import Steps
from pgpitr.targets import RestoreTarget


def backup(
    cluster: Cluster | str,
    name: str | None = None,
    *,
    incremental: bool = False,
    parent: str | None = None,
) -> BackupManifest:
    kind = bk.BackupType.INCREMENTAL if incremental else bk.BackupType.FULL
    name_of = cluster if isinstance(cluster, str) else cluster.name
    return bk.run(Steps(), bk.BackupRequest(name_of, name, kind, parent))


def restore(
    new_name: str,
    source: str,
    target: RestoreTarget | datetime | None,
    *,
    backup_name: str | None = None,
    repository: str | None = None,
) -> rs.RestoreResult:
    """Restore to ``target``: a RestoreTarget, or a time (None: latest)."""
    if not isinstance(target, RestoreTarget):
        target = RestoreTarget(time=target)
    request = rs.RestoreRequest(new_name, source, target, backup_name, repository)
    return rs.run(Steps(), request)


def create_restore_point(cluster: str, name: str) -> RestorePoint:
    return restore_points.run(Steps(), cluster, name)


def delete_backups(
    cluster: str, names: list[str] | None, *, force: bool = False, repository: str | None = None
) -> retention.Removed:
    return delete_backup.run(Steps(), cluster, names, force=force, repository=repository)
