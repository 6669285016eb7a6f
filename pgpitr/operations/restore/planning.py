"""Planning a restore: what was asked (``RestoreRequest``), and the checks made before anything is
created (``choose_backup``): the source has backups, the new name is free, the target can be
reached, the binaries are there, there is room for the data, and a directory to hand the data
over to (``into_datadir``) can take it (``Plan``).
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from pgpitr import cluster_repository
from pgpitr import state as st
from pgpitr.catalog import backups as catalog_backups
from pgpitr.catalog import reach
from pgpitr.catalog import source as catalog_source
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import (
    AlreadyExists,
    ClusterStateError,
    InvalidInput,
    NotFound,
    RecoveryTargetError,
)
from pgpitr.manifest import BackupManifest, check_system
from pgpitr.operations.restore.data import remove_interrupted
from pgpitr.operations.restore.handover import check_into_datadir
from pgpitr.postgres import binaries
from pgpitr.postgres.cluster import validate_name
from pgpitr.postgres.osuser import server_user
from pgpitr.repository.url import RepositoryUrl
from pgpitr.targets import RestoreTarget
from pgpitr.wal import archive as wal_archive

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestoreRequest:
    """What a restore was asked for, checked once when it is made (CLI, flow, API): the names'
    form and empty options; the target is already a checked ``RestoreTarget``."""

    new_name: str
    source_cluster: str
    target: RestoreTarget = RestoreTarget()
    backup_name: str | None = None
    #: text (a flow's parameter, an API caller's) is parsed when the request is made
    backup_repo: RepositoryUrl | None = None
    #: the binaries the new cluster runs; by default those of the backup's major on this host
    bindir: str | None = None
    #: hand the restored data directory over to this path and forget the new cluster, which is
    #: then only a temporary one (handover.py: Patroni's custom bootstrap)
    into_datadir: str | None = None

    def __post_init__(self) -> None:
        validate_name(self.new_name)
        validate_name(self.source_cluster)
        if not isinstance(self.target, RestoreTarget):
            raise InvalidInput(f"restore target {self.target!r} is not a RestoreTarget")
        for key in ("backup_name", "bindir", "into_datadir"):
            if not getattr(self, key):  # "" from a form or a flag means not given
                object.__setattr__(self, key, None)
        object.__setattr__(self, "backup_repo", RepositoryUrl.parse_optional(self.backup_repo))


def choose_backup(request: RestoreRequest) -> Plan:
    """Check everything before creating anything; pick the newest backup before the target."""
    if request.into_datadir:
        check_into_datadir(request.into_datadir)
    source = catalog_source.resolve_source(request.source_cluster, request.backup_repo)
    chosen = plan(source, request.new_name, request.target, request.backup_name, request.bindir)
    chosen = replace(chosen, into_datadir=request.into_datadir)
    log.info(
        "restoring %s from backup %s of %s to %s",
        request.new_name,
        chosen.backup.name,
        request.source_cluster,
        chosen.stop_at or request.target.describe(),
    )
    if request.into_datadir:
        log.info("the restored data goes to %s afterwards", request.into_datadir)
    return chosen


@dataclass(frozen=True)
class Plan:
    source: catalog_source.Source
    new_name: str
    backup: BackupManifest  # the chosen one
    target: RestoreTarget
    window: list[tuple[datetime, datetime]]  # the recoverable time (for a time target)
    bindir: str  # the binaries the new cluster runs
    #: what the plan found the target to be, for a person: "the commit of transaction 745 at
    #: LSN 0/3000140 (Dec 01,2026 …)", "restore point 'before' at LSN …"
    stop_at: str = ""
    #: the chosen backup's lineage, its full backup first and ``backup`` last (one link for a
    #: full backup): what ``materialise`` combines
    links: tuple[BackupManifest, ...] = ()
    #: where the restored data directory is handed over (``RestoreRequest.into_datadir``)
    into_datadir: str | None = None


def plan(
    source: catalog_source.Source,
    new_name: str,
    target: RestoreTarget | datetime | None,
    backup_name: str | None = None,
    bindir: str | None = None,
) -> Plan:
    """Choose the backup for ``target`` after checking it can be reached: the newest completed
    backup consistent before it whose archived chain reaches it."""
    if not isinstance(target, RestoreTarget):  # a time, or None for latest (older callers)
        target = RestoreTarget(time=target)
    validate_name(new_name)
    remove_interrupted(new_name)
    if (st.clusters_dir() / new_name).exists():
        raise AlreadyExists(f"cluster {new_name!r} already exists", hint="choose another name")
    repo = source.open()
    # the new cluster's WAL commands read an encrypted repository's key from a file: refused
    # now when there is none, or the server's OS user cannot read it
    cluster_repository.encryption_key_file(source.repository, server_user(), source.key_file or "")
    archive_info = catalog_source.check_key(repo, source.cluster)
    if repo.exists(wal_archive.archive_info_key(new_name)) and not catalog_backups.leftover_stanza(
        repo, new_name
    ):
        raise AlreadyExists(
            f"the repository {repo.url} already holds the archive of a cluster named "
            f"{new_name!r}; the restored cluster would archive into it",
            hint="choose another name for the new cluster",
        )
    backups = [b for b in catalog_backups.list_backups(repo, source.cluster) if b.completed]
    if backup_name:
        chosen = catalog_backups.get_backup(repo, source.cluster, backup_name)
        if not chosen.completed:
            raise RecoveryTargetError(f"backup {backup_name!r} is {chosen.status}, not Completed")
        backups = [chosen]
    if not backups:
        raise NotFound(
            f"cluster {source.cluster!r} has no completed backup",
            hint=f"take one with `pgpitr cluster backup {source.cluster}`",
        )
    server = _binaries_for(backups[-1].pg_version, bindir, source.bindir)
    # every segment of every chain checked present (one listing per log directory), not only
    # the window's ends: the restore must not start on a chain with a hole in it
    window = catalog_window.recoverable_window(
        repo, source.cluster, server, backups, every_segment=True
    )
    if backup_name and backup_name in window.unusable:
        raise RecoveryTargetError(
            f"backup {backup_name!r} cannot be restored: {window.unusable[backup_name]}",
            hint=f"choose another backup (`pgpitr cluster describe {source.cluster}` shows "
            "which can be restored)",
        )
    chosen, stop_at = reach.backup_for(repo, source.cluster, server, window, target)
    links = tuple(
        catalog_backups.lineage(catalog_backups.list_backups(repo, source.cluster), chosen.name)
    )
    check_system(repo, source.cluster, archive_info, links or (chosen,))
    if chosen.incremental and server_major(server) < 17:
        raise ClusterStateError(
            f"backup {chosen.name!r} is incremental: combining it needs pg_combinebackup of "
            "PostgreSQL 17 or later",
            hint="pass --bindir with the binaries of the backup's major",
        )
    if chosen.pg_version != backups[-1].pg_version:  # an older backup of another major
        server = _binaries_for(chosen.pg_version, bindir, None)
    _check_space(links or (chosen,))
    return Plan(source, new_name, chosen, target, window.periods, str(server), stop_at, links)


def server_major(bindir: Path) -> int:
    return binaries.major_of(bindir)


def _binaries_for(major: int, bindir: str | None, source_bindir: str | None) -> Path:
    """The binaries the restored cluster runs, found before anything is created: those given,
    else the source cluster's when it lives here and runs the backup's major, else the
    installed ones of that major."""
    if bindir is None and source_bindir and binaries.major_of(Path(source_bindir)) == major:
        return Path(source_bindir)
    try:
        return binaries.resolve(major, bindir)
    except ClusterStateError:
        raise ClusterStateError(
            f"the backup is PostgreSQL {major}; install postgresql-{major} or pass --bindir",
            hint=f"no PostgreSQL {major} binaries were found on this host",
        ) from None


def _check_space(links: tuple[BackupManifest, ...]) -> None:
    # a lineage is extracted beside the data directory before it is combined into it
    need = sum(link.database_size or 0 for link in links) + (
        (links[-1].database_size or 0) if len(links) > 1 else 0
    )
    home = st.home()
    home.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(home).free
    if need and free < need * 1.1:
        raise ClusterStateError(
            f"{home} has {free // 2**20} MiB free; the restored data needs about "
            f"{need // 2**20} MiB",
            hint="free space or set PGPITR_HOME to a larger file system",
        )
