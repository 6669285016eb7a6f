"""Deleting the backups a user names: ``delete``.

``run`` puts its steps in order here, once.  A backup the recoverable window starts from, or one
others depend on, goes only with ``force`` (``retention.delete_backups`` holds the unit of work,
shared with the TTL's retention).
"""

from __future__ import annotations

import logging

from pgpitr.catalog import backups as catalog_backups
from pgpitr.catalog import source
from pgpitr.errors import InvalidInput
from pgpitr.operations.retention import Removed, delete_backups
from pgpitr.repository.url import RepositoryUrl
from pgpitr.steps import Steps

log = logging.getLogger(__name__)


def run(
    steps: Steps,
    cluster: str,
    names: list[str] | None,
    *,
    force: bool = False,
    repository: RepositoryUrl | None = None,
) -> Removed:
    """Delete the named backups, or with ``force`` and no names every backup of CLUSTER."""
    require_names_or_force(names, force)
    return steps(delete_named, cluster, names or None, force, repository)


def require_names_or_force(names: list[str] | None, force: bool) -> None:
    """Deleting every backup of a cluster must be asked for by name or with --force."""
    if not names and not force:
        raise InvalidInput("name the backup(s) with --name, or delete all of them with --force")


def delete_named(
    cluster: str, names: list[str] | None, force: bool, repository: RepositoryUrl | None = None
) -> Removed:
    """The backups asked for (all of the cluster's when ``names`` is None and ``force``); a
    deleted cluster's backups too, from the repository given or the default one."""
    repo = source.resolve_source(cluster, repository).open()
    if names is None:
        names = [b.name for b in catalog_backups.list_backups(repo, cluster)]
    removed = delete_backups(repo, cluster, names, force=force)
    log.info("%s: %s", cluster, removed.describe())
    return removed
