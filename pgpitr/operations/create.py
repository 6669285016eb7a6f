"""Create a cluster: initdb, configure, start, with the default backup policy and its schedules.

Whatever a failed create leaves behind is removed before the error reaches the caller.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgpitr import state as st
from pgpitr.catalog import backups
from pgpitr.cluster_repository import (
    encryption_key_file,
    prepare_file_repository,
    repository,
    store_credentials,
)
from pgpitr.errors import (
    AlreadyExists,
)
from pgpitr.policy_store import new_policy, save_policy
from pgpitr.postgres import binaries, conf
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import RepositoryUrl
from pgpitr.steps import Steps
from pgpitr.wal import archive as wal_archive

log = logging.getLogger(__name__)


def run(
    steps: Steps,
    name: str,
    port: int | None = None,
    repository_url: RepositoryUrl | None = None,
    bindir: str | None = None,
) -> dict[str, Any]:
    """A new running cluster with the default backup policy, and its schedules."""
    created = steps(create_cluster, name, port, repository_url, bindir)
    steps.sync_schedules(name)
    return created


def create_cluster(
    name: str, port: int | None, repository_url: RepositoryUrl | None, bindir: str | None = None
) -> dict[str, Any]:
    """initdb, configure, start; a failed attempt removes what it made before it fails."""
    c = create(name, port=port, repository_url=repository_url, bindir=bindir)
    log.info(
        "cluster %s created: PostgreSQL %s, port %s, repository %s",
        name,
        c.state.pg_version,
        c.state.port,
        c.state.repository,
    )
    return {
        "name": name,
        "port": c.state.port,
        "repository": str(c.state.repository),
        "pg_version": c.state.pg_version,
    }


def create(
    name: str,
    *,
    port: int | None = None,
    repository_url: RepositoryUrl | str | None = None,
    bindir: Path | str | None = None,
    version: int | None = None,
) -> Cluster:
    """A new, running cluster with archive_mode on and log backup off, run by the binaries in
    ``bindir`` (or those of PostgreSQL ``version``, or the newest installed)."""
    url = RepositoryUrl.parse_optional(repository_url) or st.default_repository_url()
    binaries_dir = binaries.resolve(version, bindir)
    from pgpitr.postgres.osuser import server_user

    key_file = encryption_key_file(url, server_user())  # refused before anything is made
    now = datetime.now(UTC).isoformat(timespec="seconds")
    cluster = Cluster.prepare(name, port=port, repository=url, created=now, bindir=binaries_dir)
    try:
        if key_file:
            cluster.state.encryption_key_file = key_file
            cluster.state.save()
        store_credentials(cluster)
        prepare_file_repository(cluster)
        repo = repository(cluster)
        repo.check()
        stanza = cluster.state.stanza
        if backups.leftover_stanza(repo, stanza):
            repo.delete_prefix(f"{stanza}/")
        if repo.exists(wal_archive.archive_info_key(stanza)):
            raise AlreadyExists(
                f"the repository {repo.url} already holds backups of a cluster named {name!r}",
                hint=f"choose another name, or remove them with `pgpitr cluster delete-backup "
                f"{name} --force`",
            )
        cluster.initdb()
        cluster.configure(archive=conf.archive_command(st.home(), name, enabled=False))
        cluster.refresh_identity()
        save_policy(cluster, new_policy(name, repository=url, create_time=now))
        cluster.start(move_if_port_taken=port is None)
        cluster.wait_ready()
        enable_wal_summaries(cluster)
    except BaseException:
        cluster.remove()
        raise
    return cluster


def enable_wal_summaries(cluster: Cluster) -> bool:
    """``summarize_wal = on`` (a reload, no restart) on PostgreSQL 17+, which incremental
    backups need; False on older servers.  Through ALTER SYSTEM, so a restored copy keeps it."""
    if (cluster.state.pg_version or 0) < 17:
        return False
    cluster.change_settings({"summarize_wal": "on"})
    return True


def require_idle_name(name: str) -> None:
    if (st.clusters_dir() / name).exists():
        raise AlreadyExists(f"cluster {name!r} already exists")
