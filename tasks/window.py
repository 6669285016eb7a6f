"""Tasks that read what a cluster can be restored to, and whether WAL archiving keeps up."""

from __future__ import annotations

from typing import Any

from prefect import task

from pgpitr import catalog, clusters, monitor
from pgpitr.postgres.cluster import Cluster
from tasks._common import RETRYING, logger


@task(name="read-recoverable-window", **RETRYING)
def read_window(cluster: str) -> dict[str, Any]:
    c = Cluster.get(cluster)
    repo = clusters.repository(c)
    backups = catalog.list_backups(repo, c.state.stanza)
    ranges = catalog.backup_ranges(repo, c.state.stanza, c.bindir, backups)
    window = catalog.merge(ranges)
    logger().info(
        "%s: %d backup(s), recoverable %s",
        cluster,
        len(backups),
        ", ".join(f"{a.isoformat()} ~ {b.isoformat()}" for a, b in window) or "nowhere yet",
    )
    return {
        "cluster": cluster,
        "backups": len(backups),
        "window": [(a.isoformat(), b.isoformat()) for a, b in window],
        "ranges": [
            {"backup": r.backup, "start": r.start.isoformat(), "end": r.end.isoformat()}
            for r in ranges
        ],
    }


@task(name="check-archiver", **RETRYING)
def check_archiver(cluster: str) -> monitor.ArchiverStatus:
    status = monitor.archiver_status(Cluster.get(cluster))
    log = logger().warning if status.behind else logger().info
    log("%s: %s", cluster, status.reason)
    return status
