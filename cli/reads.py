"""What the reading commands of ``pgpitr cluster`` read (no flow, no write): the rows of
``list``, ``list-backup`` and ``list-backup-policy``; cli/views.py shows them."""

from __future__ import annotations

from typing import Any

from cli import runner
from pgpitr import cluster_repository, policy_store, protection
from pgpitr.catalog import backups as catalog_backups
from pgpitr.errors import NotFound
from pgpitr.postgres.cluster import Cluster


def known(name: str) -> Cluster:
    """A cluster of this home; an unknown name's hint points at its backups' repository."""
    try:
        return Cluster.get(name)
    except NotFound as exc:
        raise NotFound(
            exc.message,
            hint="see `pgpitr cluster list`; a deleted cluster's backups: `pgpitr info` lists "
            "the stanzas of each repository, and --backup-repo URL reads them",
        ) from None


def kept_for_members(name: str) -> Any:
    """The repository of NAME when this host keeps it only for its members (another host's HA
    cluster, whose policy and schedules are there): describe reads it as another host's
    cluster, from the repository."""
    try:
        cluster = Cluster.get(name)
    except NotFound:
        return None
    return None if policy_store.has_policy(cluster) else cluster.state.repository


def cluster_rows() -> list[dict[str, Any]]:
    return [
        {
            "name": c.name,
            "status": "Running" if c.is_running() else "Stopped",
            "type": "Registered" if c.registered else "Created",
            "version": c.state.pg_version,
            "port": c.state.port,
            "repository": str(c.state.repository),
            "created": c.state.created,
            **protection.of(c).as_fields(),
        }
        for c in Cluster.all()
    ]


def backup_rows(cluster_names: list[str]) -> list[dict[str, Any]]:
    from pgpitr.manifest import backup_row

    rows = []
    for name in cluster_names:
        cluster = known(name)
        repo = cluster_repository.repository(cluster)
        backups = catalog_backups.list_backups(repo, cluster.state.stanza)
        broken = catalog_backups.broken_links(repo, cluster.state.stanza, backups)
        for b in backups:
            rows.append({**backup_row(b), "unusable": broken.get(b.name)})
    return rows


def policy_rows() -> list[dict[str, Any]]:
    """Each cluster's policy, with its schedule as its deployment has it (HTTP to the API)."""
    from pgpitr import policy as pol

    rows = []
    for c in Cluster.all():
        if not policy_store.has_policy(c):
            continue  # another host's, kept here for its members: its policy is there
        p = policy_store.load_policy(c)
        rows.append(
            {
                "name": p.name,
                "default": True,
                "cluster": c.name,
                "create_time": p.create_time,
                "status": "Available",
                **pol.to_dict(p),
                **runner.schedule_fields(c.name, p),
                **protection.check(c, p.logfile_enabled).as_fields(),
            }
        )
    return rows
