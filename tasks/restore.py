"""Tasks of a restore into a new cluster, in their order.

``create_cluster_directory`` registers how to undo itself (remove the new cluster) in its
transaction: when a later step fails for good, the flow's transaction rolls back and nothing of
the new cluster is left.  Each later step takes the new cluster's name and reloads its state, so
that a retried step starts from what is on disk, not from a stale object.
"""

from __future__ import annotations

import time
from typing import Any

from prefect import task
from prefect.transactions import Transaction, get_transaction

from pgpitr import restore as rs
from pgpitr import timeparse
from pgpitr.errors import NotFound
from pgpitr.postgres.cluster import Cluster
from tasks._common import ONCE, RETRYING, ByteProgress, artifact_key, logger

#: Upper bounds enforced by pg_ctl and by the engine's own polling.
START_TIMEOUT = 3600
REPLAY_TIMEOUT = 6 * 3600


@task(name="choose-backup", **RETRYING)
def choose_backup(
    new_name: str,
    source_cluster: str,
    restore_to_time: str,
    backup_name: str | None = None,
    backup_repo: str | None = None,
) -> rs.Plan:
    """Check everything before creating anything; pick the newest backup before the target."""
    target = timeparse.parse_restore_target(restore_to_time)
    source = rs.resolve_source(source_cluster, backup_repo)
    plan = rs.plan(source, new_name, target, backup_name)
    logger().info(
        "restoring %s from backup %s of %s to %s",
        new_name,
        plan.backup["name"],
        source_cluster,
        target.isoformat() if target else "the end of the archived WAL",
    )
    return plan


@task(name="create-cluster-directory", **ONCE)
def create_cluster_directory(plan: rs.Plan) -> str:
    cluster = rs.prepare(plan)
    get_transaction().set("new_cluster", cluster.name)
    return cluster.name


@create_cluster_directory.on_rollback
def remove_new_cluster(txn: Transaction) -> None:
    name = txn.get("new_cluster", None)
    if not name:
        return
    try:
        Cluster.get(name).remove()
    except NotFound:
        return
    logger().warning("restore failed: removed the new cluster %s", name)


@task(name="materialise", **RETRYING)
def materialise(plan: rs.Plan, new_cluster: str) -> None:
    """Stream the backup into the data directory (from an empty directory on every attempt)."""
    progress = ByteProgress(
        artifact_key("restore-progress", new_cluster),
        f"restore {new_cluster}: bytes of backup {plan.backup['name']} read",
    )
    rs.materialise(plan, Cluster.get(new_cluster), progress)
    progress.finish()


@task(name="configure-recovery", **ONCE)
def configure_recovery(plan: rs.Plan, new_cluster: str) -> None:
    rs.configure_recovery(plan, Cluster.get(new_cluster))


@task(name="start-recovery", **RETRYING)
def start_recovery(new_cluster: str) -> None:
    rs.start_recovery(Cluster.get(new_cluster))


@task(name="wait-promoted", **ONCE)
def wait_promoted(new_cluster: str, timeout: float = REPLAY_TIMEOUT) -> None:
    """Wait while PostgreSQL replays WAL to the target; log the replay position now and then."""
    last = [0.0]

    def replayed(lsn: str) -> None:
        if time.monotonic() - last[0] >= 5:
            last[0] = time.monotonic()
            logger().info("replayed up to %s", lsn)

    rs.wait_promoted(Cluster.get(new_cluster), timeout=timeout, progress=replayed)


@task(name="verify-restored", **RETRYING)
def verify_restored(plan: rs.Plan, new_cluster: str) -> dict[str, Any]:
    """The last replayed commit is not after the target; the cluster becomes an ordinary one."""
    result = rs.finish(plan, Cluster.get(new_cluster))
    logger().info(
        "cluster %s restored on timeline %s; last replayed commit %s",
        new_cluster,
        result.timeline,
        result.last_commit.isoformat() if result.last_commit else "none",
    )
    return {
        "cluster": result.cluster,
        "backup": result.backup,
        "target": result.target.isoformat() if result.target else None,
        "last_commit": result.last_commit.isoformat() if result.last_commit else None,
        "timeline": result.timeline,
    }
