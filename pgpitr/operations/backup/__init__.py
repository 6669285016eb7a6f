"""Backups, full or incremental: pg_basebackup streamed, compressed, into the repository.

``run`` is the backup operation, the one place its steps are put in order: check the cluster,
choose the parent of an incremental, stream the backup, confirm the WAL reached the repository,
and verify it when asked.  An HA cluster whose primary runs on another host is backed up by
that host's agent, handed the request and the cluster's policy (operations/primary_host.py).

Repository layout::

    STANZA/backups/NAME/backup.json       the manifest (status, type, parent, LSNs, sizes, checksum)
    STANZA/backups/NAME/base.tar.zst      the data directory as one zstd tar, backup_manifest inside
    STANZA/backups/NAME/backup_manifest   PostgreSQL's manifest again, on its own (17+): what the
                                          next incremental's ``pg_basebackup --incremental`` reads

An incremental (PostgreSQL 17+, ``summarize_wal=on``) holds the blocks changed since its parent,
the newest usable backup on the server's timeline unless one is named; it restores only with its
whole lineage (pgpitr/catalog/backups.py ``lineage``).  On 17+ the raw tar passes through pgpitr,
which compresses it and reads the backup_manifest member out of it on the way (``ManifestTap``).

The manifest is written InProgress before any data moves and Completed only after the stream is
stored and checked, so a backup that dies half-way never counts; its pid lets the catalog tell a
running backup from a dead one.

``checks`` holds the checks before and after a backup, ``take`` the ``stream`` step and
``take_backup`` (the manifest's InProgress, Completed or Failed), ``basebackup`` the pg_basebackup
run and its tar, ``history_file`` the WAL range of a backup taken without its WAL, ``lock`` one
backup of a cluster at a time, ``names`` a backup's name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from pgpitr import cluster_repository, policy_store
from pgpitr import policy as pol
from pgpitr.catalog import backups as catalog_backups
from pgpitr.catalog.source import check_key
from pgpitr.errors import InvalidInput
from pgpitr.manifest import BackupManifest
from pgpitr.operations import verify
from pgpitr.operations.backup.checks import check_cluster, choose_parent, confirm_wal_arrival
from pgpitr.operations.backup.names import fresh_name, validate_name
from pgpitr.operations.backup.take import stream
from pgpitr.operations.edit_policy import require_incremental_support
from pgpitr.operations.primary_host import primary_host
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.cluster import validate_name as validate_cluster_name
from pgpitr.steps import Steps

__all__ = [
    "BackupRequest",
    "BackupType",
    "check_cluster",
    "stored_manifest",
    "choose_parent",
    "confirm_wal_arrival",
    "fresh_name",
    "run",
    "stream",
]


class BackupType(StrEnum):
    """What ``--type`` and the backup flow's ``backup_type`` take."""

    FULL = "full"
    INCREMENTAL = "incremental"

    @classmethod
    def parse(cls, value: str | BackupType) -> BackupType:
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise InvalidInput(f"unknown backup type {value!r}: use full or incremental") from None


@dataclass(frozen=True)
class BackupRequest:
    """What a backup was asked for (CLI, flow, schedule, API), its form checked when it is made:
    the names, the type (text is parsed), a parent only for an incremental.  ``check`` adds
    what reads the cluster and the repository, and needs no flow; ``parameters`` are the
    backup flow's."""

    cluster: str
    name: str | None = None
    backup_type: BackupType = BackupType.FULL
    parent: str | None = None
    verify_after: bool = False

    def __post_init__(self) -> None:
        validate_cluster_name(self.cluster)
        object.__setattr__(self, "backup_type", BackupType.parse(self.backup_type))
        for key in ("name", "parent"):
            value = getattr(self, key) or None  # "" from a form or a flag means not given
            if value is not None:
                validate_name(value)
            object.__setattr__(self, key, value)
        if self.parent and self.backup_type is BackupType.FULL:
            raise InvalidInput("--parent is for incremental backups: add --type incremental")

    def named(self) -> BackupRequest:
        """This request with its backup's name, chosen now when none was given."""
        return self if self.name else replace(self, name=fresh_name(self.cluster))

    def check(self) -> None:
        """What refuses the backup before anything is written: an unknown cluster, a wrong
        encryption key, a server too old for incrementals, a parent not found."""
        c = Cluster.get(self.cluster)
        repo = cluster_repository.repository(c)
        check_key(repo, c.state.stanza)
        if self.backup_type is BackupType.INCREMENTAL:
            require_incremental_support(c)
            if self.parent:
                catalog_backups.get_backup(repo, c.state.stanza, self.parent)

    def parameters(self) -> dict[str, Any]:
        """The backup flow's parameters (JSON: the same through a deployment)."""
        return {
            "cluster": self.cluster,
            "backup_name": self.name,
            "backup_type": self.backup_type.value,
            "parent": self.parent,
            "verify": self.verify_after,
        }


# -- the operation ---------------------------------------------------------------------------


def run(steps: Steps, request: BackupRequest) -> BackupManifest:
    """One backup as REQUEST asks (its name chosen here once when not given, so that a
    retried stream reuses it): full, or incremental against its parent (by default the newest
    usable backup on the server's timeline)."""
    request = request.named()
    request.check()  # before anything is written
    cluster = request.cluster
    host = primary_host(steps, cluster)
    if host:  # the primary runs on another host: that host backs it up, with this policy
        policy = policy_store.load_policy(Cluster.get(cluster))
        parameters = {**request.parameters(), "policy": pol.to_dict(policy)}
        steps.run_on_host(host, "backup-for-members", parameters, needs="a backup")
        return steps(stored_manifest, cluster, request.name)
    policy = steps(check_cluster, cluster)
    parent = request.parent
    if request.backup_type is BackupType.INCREMENTAL:
        parent = steps(choose_parent, cluster, parent)
    manifest = steps(stream, cluster, request.name, parent)
    if policy.logfile_enabled:
        steps(confirm_wal_arrival, cluster)
    if request.verify_after:
        steps(verify.verify_backup, cluster, request.name)
    return manifest


def stored_manifest(cluster: str, name: str) -> BackupManifest:
    """Backup NAME of CLUSTER as its manifest in the repository says (one another host took)."""
    c = Cluster.get(cluster)
    return catalog_backups.get_backup(cluster_repository.repository(c), c.state.stanza, name)
