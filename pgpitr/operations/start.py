"""Start a cluster: the operator's ``cluster start``, which also ends a stop of theirs (the
agent starts a cluster after a reboot again unless its operator stopped it)."""

from __future__ import annotations

from pgpitr.postgres.cluster import Cluster
from pgpitr.steps import Steps


def run(steps: Steps, name: str, force: bool = False) -> None:
    """Start NAME (a registered server only with ``force``)."""
    steps(start_cluster, name, force)


def start_cluster(name: str, force: bool = False) -> None:
    Cluster.get(name).start(force=force, by_operator=True)
