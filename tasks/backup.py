"""Tasks of a full backup: check, stream, confirm the WAL, verify, show the backups."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import task

from pgpitr import backup as bk
from pgpitr import catalog, clusters, operations, timeparse
from pgpitr import policy as pol
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import Repository
from tasks._common import ONCE, RETRYING, ByteProgress, artifact_key, logger

#: How long the WAL switched after a backup may take to reach the repository.
WAL_ARRIVAL_TIMEOUT = 120.0


@task(name="check-cluster", **RETRYING)
def check_cluster(cluster: str) -> dict[str, Any]:
    """The cluster runs and its repository answers; returns its backup policy."""
    c = Cluster.get(cluster)
    c.require_running()
    clusters.repository(c).check()
    policy = clusters.load_policy(c)
    logger().info(
        "cluster %s runs on port %s; repository %s; log backup %s",
        cluster,
        c.state.port,
        c.state.repository,
        "on" if policy.logfile_enabled else "off",
    )
    return pol.to_dict(policy)


def backup_name(cluster: str) -> str:
    """Chosen once per flow run, so that every attempt of the stream writes the same backup."""
    return bk.default_name(cluster, datetime.now(UTC))


@task(name="stream-base-backup", **RETRYING)
def stream_base_backup(cluster: str, name: str) -> dict[str, Any]:
    """pg_basebackup into the repository; the manifest turns Completed only once stored."""
    c = Cluster.get(cluster)
    repo = clusters.repository(c)
    policy = clusters.load_policy(c)
    _forget_failed_attempt(repo, c.state.stanza, name)
    progress = ByteProgress(
        artifact_key("backup-progress", cluster), f"backup {name}: bytes streamed"
    )
    result = bk.take_backup(
        c,
        repo,
        name=name,
        log_backup=policy.logfile_enabled,
        ttl=timeparse.parse_ttl(policy.ttl),
        compress_level=bk.level_of(policy.compression),
        progress=progress,
    )
    progress.finish()
    m = result.manifest
    logger().info(
        "backup %s stored: %s bytes of data, %s bytes in the repository, %.1f s",
        name,
        m.get("database_size"),
        m.get("stored_size"),
        m.get("duration_seconds", 0),
    )
    return m


def _forget_failed_attempt(repo: Repository, stanza: str, name: str) -> None:
    """A retry reuses the name: remove what a failed attempt left under it (never a good one)."""
    if not repo.exists(bk.manifest_key(stanza, name)):
        return
    previous = catalog.get_backup(repo, stanza, name)
    if previous.status == "Failed":
        for key in bk.data_keys(stanza, name):
            repo.delete(key)
        repo.delete(bk.manifest_key(stanza, name))
        logger().info("removed the failed earlier attempt of backup %s", name)


@task(name="confirm-wal-arrival", **RETRYING)
def confirm_wal_arrival(cluster: str, timeout: float = WAL_ARRIVAL_TIMEOUT) -> str:
    """Switch WAL and wait until the finished segment is in the repository."""
    c = Cluster.get(cluster)
    segment = clusters.switch_and_confirm(c, clusters.repository(c), timeout=timeout)
    logger().info("WAL segment %s is in the repository", segment)
    return segment


@task(name="verify-backup", **RETRYING)
def verify_backup(cluster: str, name: str) -> str:
    """Read the backup back in full: checksums, then pg_verifybackup."""
    report = operations.verify_backup(Cluster.get(cluster), name)
    logger().info(report)
    return report


def backup_rows(cluster: str) -> list[dict[str, Any]]:
    c = Cluster.get(cluster)
    rows = []
    for b in catalog.list_backups(clusters.repository(c), c.state.stanza):
        m = b.manifest
        rows.append(
            {
                "name": b.name,
                "status": b.status,
                "total_size": m.get("database_size"),
                "stored_size": m.get("stored_size"),
                "duration_s": m.get("duration_seconds"),
                "start": m.get("start_time"),
                "completion": m.get("stop_time") if b.completed else None,
                "expiration": m.get("expiration"),
            }
        )
    return rows


@task(name="publish-backup-table", **ONCE)
def publish_backup_table(cluster: str) -> list[dict[str, Any]]:
    """The cluster's backups as a table artifact (key backups-CLUSTER)."""
    from prefect.artifacts import create_table_artifact

    rows = backup_rows(cluster)
    create_table_artifact(
        rows or [{"name": "", "status": "no backup"}],
        key=artifact_key("backups", cluster),
        description=f"backups of {cluster}",
    )
    return rows
