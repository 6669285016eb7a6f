"""Tasks that remove backups and WAL: the TTL's choice, explicit deletes, WAL pruning."""

from __future__ import annotations

from datetime import UTC, datetime

from prefect import task

from pgpitr import catalog, clusters, expiry, operations, retention
from pgpitr.postgres.cluster import Cluster
from tasks._common import RETRYING, logger


@task(name="choose-expired-backups", **RETRYING)
def choose_expired(cluster: str) -> expiry.ExpiryPlan:
    c = Cluster.get(cluster)
    plan = expiry.plan(clusters.repository(c), c.state.stanza, c.bindir, datetime.now(UTC))
    for name, why in plan.kept.items():
        logger().info("backup %s is past its TTL but stays: %s", name, why)
    return plan


@task(name="delete-backups", **RETRYING)
def delete_expired(cluster: str, names: list[str]) -> retention.Removed:
    """Remove the chosen backups (maybe none), then the WAL older than every remaining one."""
    c = Cluster.get(cluster)
    repo = clusters.repository(c)
    # Already deleted by an earlier attempt of this task: not an error on a retry.
    present = {b.name for b in catalog.list_backups(repo, c.state.stanza)}
    removed = retention.delete_backups(
        repo, c.state.stanza, [n for n in names if n in present], c.bindir, force=True
    )
    logger().info("%s: %s", cluster, removed.describe())
    return removed


@task(name="delete-objects", **RETRYING)
def delete_objects(
    cluster: str, names: list[str] | None, force: bool, backup_repo: str | None = None
) -> retention.Removed:
    """The backups asked for (all of the cluster's when ``names`` is None and ``force``)."""
    removed = operations.delete_backups(cluster, names, force=force, repository=backup_repo)
    logger().info("%s: %s", cluster, removed.describe())
    return removed
