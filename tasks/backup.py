"""Tasks of a backup (pgpitr/operations/backup/ composes them): check, choose an incremental's
parent, stream, confirm the WAL, verify; and the backups table artifact."""

from __future__ import annotations

from typing import Any

from prefect import task

from pgpitr import cluster_repository
from pgpitr.catalog import backups
from pgpitr.manifest import backup_row
from pgpitr.operations import backup as bk
from pgpitr.operations import verify
from pgpitr.operations.backup import checks as backup_checks
from pgpitr.postgres.cluster import Cluster
from tasks._common import ONCE, RETRYING, cluster_artifact_key, step_task

check_cluster = step_task(bk.check_cluster, "check-cluster", **RETRYING)
stored_manifest = step_task(bk.stored_manifest, "read-stored-manifest", **RETRYING)
choose_parent = step_task(bk.choose_parent, "choose-parent", **RETRYING)
stream_base_backup = step_task(
    bk.stream, "stream-base-backup", progress=("backup-progress", "cluster"), **RETRYING
)
confirm_wal_arrival = step_task(
    bk.confirm_wal_arrival,
    "confirm-wal-arrival",
    timeout_seconds=backup_checks.WAL_ARRIVAL_TIMEOUT + 60,  # the engine's own wait is the bound
    **RETRYING,
)
verify_backup = step_task(verify.verify_backup, "verify-backup", **RETRYING)


@task(name="publish-backup-table", **ONCE)
def publish_backup_table(cluster: str) -> list[dict[str, Any]]:
    """The cluster's backups as a table artifact (key backups-CLUSTER)."""
    from prefect.artifacts import create_table_artifact

    c = Cluster.get(cluster)
    rows = [
        backup_row(b)
        for b in backups.list_backups(cluster_repository.repository(c), c.state.stanza)
    ]
    create_table_artifact(
        rows or [{"name": "", "status": "no backup"}],
        key=cluster_artifact_key("backups", cluster),
        description=f"backups of {cluster}",
    )
    return rows
