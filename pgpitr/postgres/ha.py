"""A cluster facade's HA side: which member of a Patroni cluster it acts on.

``Cluster.get`` points an HA cluster at the member Patroni names primary now (``follow_primary``);
``require_primary`` refuses a server that is not; ``member`` addresses another member (a standby
to back up from).  Patroni itself is spoken to in pgpitr/patroni.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from pgpitr import patroni
from pgpitr.errors import ClusterStateError

if TYPE_CHECKING:
    from pgpitr.patroni.members import Placement
    from pgpitr.postgres.cluster import Cluster


def follow_primary(cluster: Cluster) -> None:
    """When Patroni does not answer, the primary last seen stands in and ``ha_problem`` says
    why; an operation that must have the primary checks ``require_primary``."""
    try:
        cluster.members = patroni.follow(cluster.state)
    except patroni.PrimaryElsewhere as exc:  # known, not a problem: that host acts on it
        cluster.members = exc.members
        cluster.primary_host = exc.host
        cluster.ha_problem = exc.message
    except ClusterStateError as exc:
        cluster.ha_problem = exc.message


def require_primary(cluster: Cluster) -> None:
    """Refuse a standby of an HA cluster, or the last seen primary of one whose Patroni did not
    answer: writes and archiving checks belong to the primary."""
    if cluster.ha_problem:
        raise ClusterStateError(
            f"cluster {cluster.name!r}: {cluster.ha_problem}",
            hint="pgpitr acts on the member Patroni names primary; see `patronictl list`",
            transient=True,
        )
    with cluster.connect() as db:
        row = db.execute("SELECT pg_is_in_recovery()").fetchone()
    if row and row[0]:
        raise ClusterStateError(
            f"the server of {cluster.name!r} on port {cluster.state.port} is a standby, not the "
            "primary",
            hint="run the operation on the primary (a standby is read-only)",
            transient=cluster.state.is_ha,
        )


def member(cluster: Cluster, placement: Placement) -> Cluster:
    """The same cluster addressed at another member's server."""
    state = dataclasses.replace(
        cluster.state,
        port=placement.port,
        pgdata=placement.datadir,
        server_socket_dir=placement.socket_dir,
        server_log=placement.server_log,
    )
    other = type(cluster)(state)
    other.members = cluster.members
    return other
