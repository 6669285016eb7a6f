"""Delete a cluster: stop it and remove it and its schedules; its backups stay in the repository."""

from __future__ import annotations

import logging

from pgpitr.postgres.cluster import Cluster
from pgpitr.steps import Steps

log = logging.getLogger(__name__)


def run(steps: Steps, name: str) -> None:
    """Stop and remove the cluster and its schedules; its backups stay in the repository."""
    steps(delete_cluster, name)
    steps.remove_schedules(name)


def delete_cluster(name: str) -> None:
    delete(Cluster.get(name))
    log.info("cluster %s stopped and removed; its backups stay in the repository", name)


def delete(cluster: Cluster) -> None:
    """Stop and remove a cluster.  Its backups and WAL stay in the repository.  A registered
    server is refused (``unregister`` is how pgpitr lets go of it)."""
    cluster.refuse_if_registered("delete")
    cluster.remove()
