"""Operations that need an HA cluster's primary while Patroni runs it on another host.

A backup, a restore point, an account, a role and the log-backup switch all act on the primary
over its Unix socket, as the database's OS user: only the primary's own host can.  When the
primary runs on another pgpitr host, the operation hands the same request to that host's agent,
as a child run of its own (``Steps.run_on_host``), and waits for it: the Prefect UI shows both
runs.  That host keeps the cluster for its members (pgpitr/operations/register/member_hosts.py)
without its policy, so the policy stays here and what the run needs of it travels with it;
secrets never travel as parameters (``run_on_host`` passes them through a Secret block).

On the primary's host, its copy records no member on another host, so the handed-over run acts
there and never hands over again.
"""

from __future__ import annotations

from pgpitr import patroni
from pgpitr import state as st
from pgpitr.postgres.cluster import Cluster
from pgpitr.steps import Steps


def kept_elsewhere(cluster: str) -> bool:
    """Whether CLUSTER is an HA cluster with members on other hosts (its record alone)."""
    return any(m.get("host") for m in st.ClusterState.load(cluster).members)


def primary_host_of(cluster: str) -> str:
    """The other host whose member Patroni names primary now ("" when it is this host's)."""
    return patroni.primary_host(Cluster.get(cluster).state)


def primary_host(steps: Steps, cluster: str) -> str:
    """The other host that must run an operation on CLUSTER's primary now ("" to run it here).
    Costs nothing for a cluster with no member elsewhere: only its record is read."""
    return steps(primary_host_of, cluster) if kept_elsewhere(cluster) else ""
