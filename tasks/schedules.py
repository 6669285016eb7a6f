"""Tasks that keep the deployments' schedules equal to the clusters' backup policies."""

from __future__ import annotations

from prefect import task

from deployments import schedules
from pgpitr import clusters
from pgpitr.postgres.cluster import Cluster
from tasks._common import RETRYING, logger


@task(name="sync-schedules", **RETRYING)
def sync_schedules(cluster: str) -> list[str]:
    """Write the cluster's policy into the deployments' schedules."""
    done = schedules.sync(clusters.load_policy(Cluster.get(cluster)))
    for line in done:
        logger().info(line)
    return done


@task(name="remove-schedules", **RETRYING)
def remove_schedules(cluster: str) -> list[str]:
    done = schedules.remove(cluster)
    for line in done:
        logger().info(line)
    return done
