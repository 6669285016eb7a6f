"""Every cluster's schedules from its saved policy: ``python -m deployments.schedules`` after a
``prefect deploy`` (which replaces the deployments' schedules).  How a policy becomes schedules
is in ``tasks/schedules.py``."""

from __future__ import annotations

from tasks.schedules import sync


def sync_all() -> list[str]:
    """Every cluster's schedules from its saved policy (after ``prefect deploy``, which replaces
    the deployments' schedules)."""
    from pgpitr import policy_store
    from pgpitr.postgres.cluster import Cluster

    done = []
    for cluster in Cluster.all():
        done += [
            f"{cluster.name}: {line}"
            for line in sync(policy_store.load_policy(cluster), host=cluster.state.host)
        ]
    return done


if __name__ == "__main__":
    for line in sync_all() or ["no cluster: nothing to schedule"]:
        print(line)
