"""The source of a restore: a cluster pgpitr knows, or a stanza in a repository whose cluster
was deleted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgpitr import state as st
from pgpitr.catalog import backups
from pgpitr.errors import (
    NotFound,
)
from pgpitr.postgres.cluster import Cluster, validate_name
from pgpitr.repository import Repository, RepositoryUrl, open_repository
from pgpitr.wal import archive


@dataclass(frozen=True)
class Source:
    """Where a restore reads from: a repository and a stanza (the source cluster's name)."""

    cluster: str
    repository: RepositoryUrl
    credentials_file: str | None = None
    #: the binaries of the source cluster when it lives on this host
    bindir: str | None = None
    #: the key file the source cluster recorded (an encrypted repository); else the environment's
    key_file: str | None = None

    def open(self) -> Repository:
        creds = Path(self.credentials_file) if self.credentials_file else None
        return open_repository(self.repository, creds, self.key_file)


def check_key(repo: Repository, stanza: str) -> dict | None:
    """Read the stanza's archive info, if it has one: a wrong, missing or needless encryption
    key fails here with its own message (the header is checked before anything is decrypted),
    before anything is created.  Returns the archive info (None without one)."""
    key = archive.archive_info_key(stanza)
    if repo.exists(key):
        return repo.get_json(key)
    return None


def resolve_source(name: str, repository: RepositoryUrl | None = None) -> Source:
    """The source of a restore: a cluster pgpitr knows, or one deleted whose backups remain."""
    validate_name(name)
    try:
        cluster = Cluster.get(name)
        return Source(
            name,
            repository or cluster.state.repository,
            str(cluster.state.credentials_file),
            str(cluster.bindir),
            cluster.state.encryption_key_file or None,
        )
    except NotFound:
        pass
    url = repository or st.default_repository_url()
    lent = lent_credentials(url)
    source = Source(name, url, str(lent) if lent else None)
    if not source.open().exists(archive.archive_info_key(name)) and not backups.list_backups(
        source.open(), name
    ):
        raise NotFound(
            f"cluster {name!r} is unknown and the repository {source.open().url} has no backups "
            "of it",
            hint="see `pgpitr cluster list`, or pass --backup-repo with the repository URL "
            "(`pgpitr info` lists the stanzas of each repository)",
        )
    return source


def lent_credentials(url: RepositoryUrl) -> Path | None:
    """The credentials file of a cluster of this home that keeps its backups at URL (S3): a
    host of a fleet reads another host's cluster in the repository they share with the keys it
    has for it (the environment's keys come first, as for every S3 repository)."""
    if not url.is_s3:
        return None
    for cluster in Cluster.all():
        if cluster.state.repository == url and cluster.state.credentials_file.exists():
            return cluster.state.credentials_file
    return None
