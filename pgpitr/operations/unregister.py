"""Stop protecting a registered server: ``unregister``.

``run`` puts its steps in order here, once: the settings registration changed are put back with
a reload and pgpitr forgets the cluster; its backups stay in the repository, and the server is
never stopped.
"""

from __future__ import annotations

import logging
from typing import Any

from pgpitr.errors import InvalidInput
from pgpitr.operations.register.member_hosts import kept_on
from pgpitr.operations.register.settings import forget, put_back_settings
from pgpitr.postgres.cluster import Cluster
from pgpitr.state import this_host
from pgpitr.steps import Steps

log = logging.getLogger(__name__)


def run(steps: Steps, name: str) -> dict[str, Any]:
    """Stop protecting a registered server: its settings put back, pgpitr's state of it
    removed, its backups kept; the server keeps running and its data is not touched."""
    member_hosts = steps(check_registered, name)
    restored = steps(put_back_settings, name)
    # before this host forgets it: when a host cannot be reached, unregister can run again
    steps.drop_on_member_hosts(name, member_hosts)
    steps(forget_cluster, name)
    steps.remove_schedules(name)
    return restored


def check_registered(name: str) -> list[str]:
    """Refuse a created cluster, or another host's cluster kept here for its members; the
    other hosts that keep this one."""
    cluster = Cluster.get(name)
    if not cluster.registered:
        raise InvalidInput(
            f"cluster {name!r} was created by pgpitr; only a registered server is unregistered",
            hint=f"`pgpitr cluster delete {name}` removes a created cluster",
        )
    if cluster.state.host != this_host():
        raise InvalidInput(
            f"cluster {name!r} is host {cluster.state.host}'s; this host keeps it for its "
            "members only",
            hint=f"unregister it on host {cluster.state.host}: that forgets it here too",
        )
    return kept_on(cluster.state.members)


def forget_cluster(name: str) -> None:
    forget(name)
    log.info("%s unregistered: its backups stay in the repository, the server runs on", name)
