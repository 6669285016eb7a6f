"""Stop a cluster: the operator's ``cluster stop`` (fast shutdown), remembered so that the agent
leaves it stopped until ``start``."""

from __future__ import annotations

from pgpitr.postgres.cluster import Cluster
from pgpitr.steps import Steps


def run(steps: Steps, name: str, force: bool = False) -> None:
    """Stop NAME (a registered server only with ``force``)."""
    steps(stop_cluster, name, force)


def stop_cluster(name: str, force: bool = False) -> None:
    Cluster.get(name).stop(force=force, by_operator=True)
