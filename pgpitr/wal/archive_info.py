"""A cluster's archive info in its stanza: written once, checked by every later writer."""

from __future__ import annotations

from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import Repository
from pgpitr.wal import archive


def ensure_archive_info(cluster: Cluster, repo: Repository) -> dict:
    return archive.check_archive_info(
        repo,
        cluster.state.stanza,
        cluster.state.system_identifier,
        create={
            "cluster": cluster.name,
            "pg_version": cluster.state.pg_version,
            "wal_segment_size": cluster.state.wal_segment_size,
        },
    )
