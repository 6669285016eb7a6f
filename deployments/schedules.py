"""Every cluster's schedules from its saved policy: ``python -m deployments.schedules`` after a
``prefect deploy`` (which replaces the deployments' schedules).  How a policy becomes schedules
is in ``tasks/schedules.py``."""

from __future__ import annotations

from tasks.schedules import sync, sync_host


def sync_all() -> list[str]:
    """Every cluster's schedules from its saved policy, and the housekeeping schedules of their
    hosts (after ``prefect deploy``, which replaces the deployments' schedules)."""
    from pgpitr import policy_store
    from pgpitr.postgres.cluster import Cluster

    done = []
    hosts = set()
    for cluster in Cluster.all():
        if not policy_store.has_policy(cluster):
            continue  # another host's HA cluster, kept here for its members: scheduled there
        hosts.add(cluster.state.host)
        done += [
            f"{cluster.name}: {line}"
            for line in sync(policy_store.load_policy(cluster), host=cluster.state.host)
        ]
    for host in sorted(hosts):
        done += [f"host {host}: {line}" for line in sync_host(host)]
    return done


if __name__ == "__main__":
    for line in sync_all() or ["no cluster: nothing to schedule"]:
        print(line)
