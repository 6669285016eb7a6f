"""A cluster's backup policy on disk (``policy.json`` beside its state), and the one the agent
follows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from pgpitr import policy as pol
from pgpitr import state as st
from pgpitr.errors import (
    PitrError,
)
from pgpitr.postgres.cluster import Cluster

POLICY_FILE = "policy.json"


def agent_policy(cluster: Cluster) -> pol.BackupPolicy | None:
    """The policy of a cluster that this host's agent looks after (heartbeats, streaming): of
    this host, not being restored, not a drill's scratch cluster; None otherwise, or when its
    policy cannot be read."""
    from pgpitr import scratch

    if cluster.state.host != st.this_host() or cluster.state.restore_source:
        return None
    if scratch.is_scratch(cluster.name):
        return None
    try:
        return load_policy(cluster)
    except (OSError, ValueError, PitrError):
        return None


def agent_clusters() -> list[Cluster]:
    """The clusters this host's agent looks after (``agent_policy``)."""
    return [c for c in Cluster.all() if agent_policy(c) is not None]


def new_policy(name: str, **fields: Any) -> pol.BackupPolicy:
    """A new cluster's policy: the defaults and FIELDS, with its schedules at a minute of its
    own (``placed_here``)."""
    return placed_here(pol.BackupPolicy(cluster=name, **fields))


def placed_here(policy: pol.BackupPolicy) -> pol.BackupPolicy:
    """POLICY with its schedules at the minute the fewest of this host's other clusters back up
    at (``policy.placed``)."""
    others = [agent_policy(c) for c in Cluster.all() if c.name != policy.cluster]
    return pol.placed(policy, [p.cron for p in others if p is not None])


#: Policies lent to this process by name (``lent``): a member's host backing up another host's
#: HA cluster has no policy of it, and is handed the cluster's own for the run.
_LENT: dict[str, pol.BackupPolicy] = {}


@contextlib.contextmanager
def lent(name: str, policy: pol.BackupPolicy) -> Iterator[None]:
    """``load_policy`` of cluster NAME is POLICY while this lasts (in every thread of this
    process: a flow run's tasks)."""
    _LENT[name] = policy
    try:
        yield
    finally:
        _LENT.pop(name, None)


def has_policy(cluster: Cluster) -> bool:
    """Whether this home keeps CLUSTER's policy: not for another host's HA cluster, kept here
    for its members only (pgpitr/operations/register/member_hosts.py), whose policy is its own
    host's."""
    return (cluster.state.dir / POLICY_FILE).exists()


def load_policy(cluster: Cluster) -> pol.BackupPolicy:
    import json

    if cluster.name in _LENT:
        return _LENT[cluster.name]
    path = cluster.state.dir / POLICY_FILE
    with open(path) as f:
        return pol.from_dict(json.load(f))


def save_policy(cluster: Cluster, policy: pol.BackupPolicy) -> None:
    st.write_json_atomic(cluster.state.dir / POLICY_FILE, pol.to_dict(policy))
