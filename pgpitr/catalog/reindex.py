"""Rebuild the catalog index of stanzas from a listing of their WAL (``pgpitr repository
reindex``): after objects were copied in or removed behind pgpitr's back, or when the index is
damaged.  (A missing index is rebuilt on its first read anyway; see pgpitr/wal/index/.)

``run`` is the operation: ``find_stanzas`` (which stanzas of which repository), then one
``reindex_stanza`` step per stanza, each safe to retry (a rebuild writes whole objects only).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pgpitr.catalog import source as catalog_source
from pgpitr.errors import NotFound
from pgpitr.postgres.cluster import Cluster, validate_name
from pgpitr.repository import RepositoryUrl, open_repository
from pgpitr.repository.base import request_counts
from pgpitr.steps import Steps
from pgpitr.wal import archive
from pgpitr.wal import index as archive_index


@dataclass(frozen=True)
class Stanza:
    """One stanza to reindex: its repository (URL, shown without secrets) and name."""

    repository: RepositoryUrl
    stanza: str
    credentials_file: str | None = None


@dataclass(frozen=True)
class Reindexed:
    repository: str
    stanza: str
    timelines: int
    segments: int
    files: int
    #: repository requests the rebuild made, by kind
    requests: dict[str, int]

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


def run(
    steps: Steps, cluster: str | None = None, backup_repo: RepositoryUrl | None = None
) -> list[Reindexed]:
    """Rebuild the index of CLUSTER's stanza, of every stanza of BACKUP_REPO, or (neither
    given) of every cluster known on this host."""
    return [steps(reindex_stanza, target) for target in steps(find_stanzas, cluster, backup_repo)]


def find_stanzas(cluster: str | None, backup_repo: RepositoryUrl | None) -> list[Stanza]:
    if cluster is not None:
        validate_name(cluster)
        source = catalog_source.resolve_source(cluster, backup_repo)
        return [Stanza(source.repository, cluster, source.credentials_file)]
    if backup_repo is not None:
        repo = open_repository(backup_repo)
        # one listing of the repository: its stanzas are the directories with an archive.info
        names = sorted(
            info.key.split("/", 1)[0]
            for info in repo.list("")
            if info.key.count("/") == 1 and info.key.endswith("/archive.info")
        )
        if not names:
            raise NotFound(
                f"the repository {repo.url} holds no archive of any cluster",
                hint="check the URL (`pgpitr cluster describe NAME` shows a cluster's)",
            )
        return [Stanza(backup_repo, name) for name in names]
    known = Cluster.all()
    if not known:
        raise NotFound(
            "no cluster is known on this host", hint="name a repository with --backup-repo"
        )
    return [
        Stanza(c.state.repository, c.state.stanza, str(c.state.credentials_file)) for c in known
    ]


def reindex_stanza(target: Stanza) -> Reindexed:
    creds = Path(target.credentials_file) if target.credentials_file else None
    repo = open_repository(target.repository, creds)
    info_key = archive.archive_info_key(target.stanza)
    if not repo.exists(info_key):
        raise NotFound(
            f"the repository {repo.url} has no archive for cluster {target.stanza!r}",
            hint="check the cluster name and --backup-repo",
        )
    segment_size = int(repo.get_json(info_key)["wal_segment_size"])
    before = request_counts()
    state = archive_index.rebuild(repo, target.stanza, segment_size)
    after = request_counts()
    made: dict[str, int] = {}
    for backend, kinds in after.items():
        for kind, n in kinds.items():
            done = n - before.get(backend, {}).get(kind, 0)
            if done:
                made[kind] = made.get(kind, 0) + done
    return Reindexed(
        repo.url,
        target.stanza,
        len(state.timelines),
        sum(t.segment_count() for t in state.timelines.values()),
        sum(len(t.files) for t in state.timelines.values()),
        made,
    )
