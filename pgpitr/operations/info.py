"""What a backup repository holds, stanza by stanza, read from the repository alone.

``pgpitr info`` (like ``pgbackrest info``) shows every stanza of a repository: the clusters of
this home, those of other hosts or homes sharing the repository, and deleted clusters whose
backups remain.  A stanza is *known* when a cluster of this home has its name and its system
identifier; any other stanza is one this home cannot vouch for (deleted, or someone else's), and
it is shown as such, never guessed at.  Each stanza's backups, WAL range and window come from
catalog.py (``list_backups``, ``wal_index``, ``recoverable_window``), so that how the WAL is
indexed stays catalog's business.  A read: nothing is written, no flow runs.

Stanzas are found one level below the repository's root (``Repository.children``), not by
listing every object: a folder is a stanza when it holds an archive info or a backup.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from pgpitr import policy_store
from pgpitr import state as st
from pgpitr.catalog import backups as catalog_backups
from pgpitr.catalog import walindex, window
from pgpitr.errors import (
    ChecksumMismatch,
    ClusterStateError,
    InvalidInput,
    NotFound,
    PitrError,
    RepositoryError,
)
from pgpitr.manifest import BackupManifest, backup_row
from pgpitr.operations import describe
from pgpitr.postgres.cluster import Cluster, validate_name
from pgpitr.repository import FileUrl, Repository, RepositoryUrl, open_repository
from pgpitr.wal import archive as wal_archive

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StanzaInfo:
    """One stanza of a repository: whose it is, its backups, WAL and window."""

    stanza: str
    #: a cluster of this home has this name and system identifier
    known: bool
    system_identifier: str | None
    pg_version: int | None
    #: the host the newest backup was taken on (None: no backup says)
    host: str | None
    backups: list[BackupManifest]
    #: completed backups a restore cannot use, and why
    unusable: dict[str, str]
    #: bytes stored under each backup's folder (data, manifests)
    backup_bytes: dict[str, int]
    #: timeline -> (first segment, last segment) archived
    wal: dict[int, tuple[str, str]]
    periods: list[tuple[datetime, datetime]]
    #: why the window could not be read (no binaries of the backups' major here), else None
    window_error: str | None = None
    #: the window as catalog computed it (describe's restore points and lineages read it)
    window: window.Window | None = field(default=None, repr=False, compare=False)

    @property
    def stored_bytes(self) -> int:
        """What the stanza's backups take in the repository (WAL not counted: summing it would
        list the whole archive, which is what the index is there to avoid)."""
        return sum(self.backup_bytes.values())

    @property
    def ownership(self) -> str:
        return "this home" if self.known else "not in this home (deleted, or another home's)"

    def as_dict(self) -> dict[str, Any]:
        return {
            "stanza": self.stanza,
            "known": self.known,
            "cluster": self.ownership,
            "system_identifier": self.system_identifier,
            "pg_version": self.pg_version,
            "host": self.host,
            "backups": [
                {
                    **backup_row(b),
                    "repository_bytes": self.backup_bytes.get(b.name, 0),
                    "unusable": self.unusable.get(b.name),
                }
                for b in self.backups
            ],
            "wal": [
                {"timeline": tli, "first": first, "last": last}
                for tli, (first, last) in sorted(self.wal.items())
            ],
            "recoverable_time": [(a.isoformat(), b.isoformat()) for a, b in self.periods],
            "window_error": self.window_error,
            "stored_bytes": self.stored_bytes,
        }


@dataclass(frozen=True)
class RepositoryInfo:
    """A repository and its stanzas, or why it could not be read."""

    url: str  # as shown to people (never a secret)
    stanzas: list[StanzaInfo]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "repository": self.url,
            "error": self.error,
            "stanzas": [s.as_dict() for s in self.stanzas],
        }


# -- which repositories --------------------------------------------------------------------


@dataclass(frozen=True)
class Named:
    """A repository to read, with the credentials file of a cluster that uses it (S3)."""

    url: RepositoryUrl
    credentials_file: Path | None = None

    def open(self) -> Repository:
        return open_repository(self.url, self.credentials_file)


def repositories_of_home() -> list[Named]:
    """The home's default repository, then every other one a cluster of this home uses or its
    policy names, each once (URLs compared parsed, not by spelling)."""
    found: dict[RepositoryUrl, Path | None] = {st.default_repository_url(): None}
    for cluster in Cluster.all():
        named: list[RepositoryUrl | None] = [cluster.state.repository]
        try:
            named.append(policy_store.load_policy(cluster).repository)
        except (OSError, PitrError):
            pass  # a policy that cannot be read names no repository; describe says more
        for url in named:
            if url is None:
                continue
            if found.get(url) is None:
                creds = cluster.state.credentials_file
                found[url] = creds if url.is_s3 and creds.exists() else None
    return [Named(url, creds) for url, creds in found.items()]


def named(url: RepositoryUrl) -> Named:
    """A repository given on the command line; a cluster of this home that uses it lends its
    credentials file (the environment's keys come first, as for every S3 repository)."""
    for candidate in repositories_of_home():
        if candidate.url == url:
            return candidate
    return Named(url)


# -- reading -------------------------------------------------------------------------------


def open_checked(where: Named) -> Repository:
    """The repository, proved readable: a file repository's directory must exist (an S3
    repository proves itself with its first listing, which names the cause when it fails)."""
    repo = where.open()
    if isinstance(where.url, FileUrl) and not where.url.path.is_dir():
        raise RepositoryError(
            f"the repository {repo.url} does not exist (no directory {where.url.path})",
            hint="check the URL; `pgpitr cluster list` shows each cluster's repository",
        )
    return repo


def stanzas(repo: Repository) -> list[str]:
    """The stanzas of a repository: top-level folders with an archive info or a backup."""
    found = []
    for name in repo.children(""):
        if name.startswith("."):
            continue  # .pgpitr-check and other probes
        inside = set(repo.children(f"{name}/"))
        if "archive.info" in inside or "backups" in inside:
            found.append(name)
    return found


def _known_here() -> dict[str, str]:
    """Clusters of this home: stanza -> system identifier."""
    return {c.state.stanza: str(c.state.system_identifier) for c in Cluster.all()}


def stanza_info(repo: Repository, stanza: str, known: dict[str, str] | None = None) -> StanzaInfo:
    """One stanza, from the repository alone (``known``: this home's clusters, by stanza)."""
    known = _known_here() if known is None else known
    archive: dict[str, Any] = {}
    if repo.exists(wal_archive.archive_info_key(stanza)):
        archive = repo.get_json(wal_archive.archive_info_key(stanza))
    backups = catalog_backups.list_backups(repo, stanza)
    system_id = str(archive.get("system_identifier") or "") or (
        backups[-1].system_identifier if backups else ""
    )
    is_known = stanza in known and (not system_id or known[stanza] == system_id)
    pg_version = archive.get("pg_version") or (backups[-1].pg_version if backups else None)
    segment_size = int(
        archive.get("wal_segment_size")
        or (backups[-1].wal_segment_size if backups else 0)
        or 16 * 1024 * 1024
    )
    sizes: dict[str, int] = {}
    for info in repo.list(f"{stanza}/backups/"):
        name = info.key[len(f"{stanza}/backups/") :].split("/", 1)[0]
        sizes[name] = sizes.get(name, 0) + info.size
    # the index's runs give each timeline's first and last segment: no walk over every name
    index = walindex.wal_index(repo, stanza, segment_size, write=False)
    ranges: dict[int, tuple[str, str]] = {
        tli: (
            wal_archive.Segment(tli, entry.runs[0][0]).name(segment_size),
            wal_archive.Segment(tli, entry.runs[-1][1]).name(segment_size),
        )
        for tli, entry in sorted(index.state.timelines.items())
        if entry.runs
    }
    bindir = None
    if is_known:
        bindir = Cluster.get(stanza).bindir  # the same major as its backups, and installed
    error = None
    try:
        found = window.recoverable_window(repo, stanza, bindir, backups, write=False)
    except (ClusterStateError, InvalidInput, ChecksumMismatch) as exc:
        # no pg_waldump of the backups' major here, or a damaged WAL object at the chain's
        # end: the backups are still shown, and why there is no window (an unreachable
        # repository still fails the whole repository)
        found, error = None, exc.message
    return StanzaInfo(
        stanza=stanza,
        known=is_known,
        system_identifier=system_id or None,
        pg_version=int(pg_version) if pg_version else None,
        host=next((b.host for b in reversed(backups) if b.host), None),
        backups=backups,
        unusable=found.unusable if found else {},
        backup_bytes=sizes,
        wal=ranges,
        periods=found.periods if found else [],
        window_error=error,
        window=found,
    )


def repository_info(where: Named, *, strict: bool = True) -> RepositoryInfo:
    """Every stanza of one repository.  ``strict``: an unreachable repository raises; else it
    comes back with its error, so that one bad repository does not hide the others."""
    try:
        repo = open_checked(where)
        known = _known_here()
        return RepositoryInfo(repo.url, [stanza_info(repo, s, known) for s in stanzas(repo)])
    except RepositoryError as exc:
        if strict:
            raise
        return RepositoryInfo(where.url.display, [], str(exc))


def info(url: RepositoryUrl | None = None) -> list[RepositoryInfo]:
    """The repository ``url`` names (its failure raises), or every repository of this home: the
    default one, if it exists yet, and those the clusters use or their policies name."""
    if url is not None:
        return [repository_info(named(url))]
    found = []
    for where in repositories_of_home():
        default = where.url == st.default_repository_url()
        if default and isinstance(where.url, FileUrl) and not where.url.path.is_dir():
            continue  # nothing was ever written to the default repository: nothing to show
        found.append(repository_info(where, strict=False))
    return found


# -- a cluster's backups from the repository (list-backup, describe --backup-repo) -----------


def require_stanza(repo: Repository, stanza: str) -> None:
    """NotFound unless the repository holds backups or an archive of ``stanza`` (a malformed
    name is refused first, as for a cluster of this home)."""
    validate_name(stanza)
    if stanza not in stanzas(repo):
        raise NotFound(
            f"the repository {repo.url} holds no backups of cluster {stanza!r}",
            # quoted: an S3 URL's '?' and '&' mean something to the shell
            hint=f"`pgpitr info --backup-repo '{repo.location}'` lists the stanzas it holds",
        )


def backup_rows(url: RepositoryUrl, stanza: str | None = None) -> list[dict[str, Any]]:
    """list-backup's rows from a repository: of ``stanza``, or of every stanza in it."""
    if stanza is not None:
        validate_name(stanza)
    repo = open_checked(named(url))
    if stanza is not None:
        require_stanza(repo, stanza)
    rows = []
    for name in [stanza] if stanza else stanzas(repo):
        backups = catalog_backups.list_backups(repo, name)
        broken = catalog_backups.broken_links(repo, name, backups)
        rows.extend({**backup_row(b), "unusable": broken.get(b.name)} for b in backups)
    return rows


def describe_stanza(url: RepositoryUrl, stanza: str) -> dict[str, Any]:
    """describe's view of a stanza from the repository alone: what a deleted cluster left."""
    validate_name(stanza)
    repo = open_checked(named(url))
    require_stanza(repo, stanza)
    found = stanza_info(repo, stanza)
    found_window = found.window or window.Window(found.backups, [])
    return {
        "name": stanza,
        "status": "Known" if found.known else "Not in this home",
        "cluster": found.ownership,
        "repository": repo.url,
        "pg_version": found.pg_version,
        "system_identifier": found.system_identifier,
        "host": found.host,
        "backups": len(found.backups),
        "recoverable_time": [(a.isoformat(), b.isoformat()) for a, b in found.periods],
        "ranges": [
            {"backup": r.backup, "start": r.start.isoformat(), "end": r.end.isoformat()}
            for r in found_window.ranges
        ],
        "window_error": found.window_error,
        "wal": found.as_dict()["wal"],
        "stored_bytes": found.stored_bytes,
        "lineages": describe.lineage_rows(found_window),
        "restore_points": describe.restore_point_rows(repo, stanza, found_window),
    }
