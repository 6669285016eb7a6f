"""Taking one backup: the ``stream`` step (as the policy says, a failed attempt's leftovers
removed first) and ``take_backup``, which holds the lock, writes the manifest InProgress before any
data moves and Completed only once the stream is stored (Failed, its data removed, otherwise)."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pgpitr import cluster_repository, policy_store, timeparse
from pgpitr import state as st
from pgpitr.catalog import backups as catalog_backups
from pgpitr.errors import AlreadyExists, ChecksumMismatch, PitrError
from pgpitr.manifest import (
    FULL,
    INCREMENTAL,
    BackupManifest,
    backup_manifest_key,
    data_key,
    data_keys,
    manifest_key,
)
from pgpitr.operations.backup import source as backup_source
from pgpitr.operations.backup.basebackup import Progress, compression_of, level_of, stream_backup
from pgpitr.operations.backup.lock import backup_lock
from pgpitr.operations.backup.names import default_name, validate_name
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import Repository
from pgpitr.wal import archive_info

log = logging.getLogger(__name__)


def stream(
    cluster: str, name: str, parent: str | None = None, progress: Progress | None = None
) -> BackupManifest:
    """pg_basebackup into the repository, as the policy says; Completed only once stored.
    With ``parent``, an incremental against that backup."""
    c = Cluster.get(cluster)
    repo = cluster_repository.repository(c)
    policy = policy_store.load_policy(c)
    _forget_failed_attempt(repo, c.state.stanza, name)
    source = backup_source.choose(c, policy.backup_source)
    if source is not c:
        backup_source.caught_up(c, source)
    manifest = take_backup(
        c,
        repo,
        source=source,
        name=name,
        log_backup=policy.logfile_enabled,
        ttl=timeparse.parse_ttl(policy.ttl),
        compress_level=level_of(policy.compression),
        progress=progress,
        parent=parent,
    )
    log.info(
        "%s backup %s stored: %s bytes of data, %s bytes in the repository, %.1f s",
        manifest.type.lower(),
        name,
        manifest.database_size,
        manifest.stored_size,
        manifest.duration_seconds or 0,
    )
    return manifest


def _forget_failed_attempt(repo: Repository, stanza: str, name: str) -> None:
    """A retry reuses the name: remove what a failed attempt left under it (never a good one)."""
    if not repo.exists(manifest_key(stanza, name)):
        return
    if catalog_backups.get_backup(repo, stanza, name).status == "Failed":
        for key in data_keys(stanza, name):
            repo.delete(key)
        repo.delete(manifest_key(stanza, name))
        log.info("removed the failed earlier attempt of backup %s", name)


def check_archiver(cluster: Cluster) -> None:
    """Refuse to start a backup whose WAL could not be archived: it would wait forever."""
    with cluster.connect() as db:
        row = db.execute(
            "SELECT last_failed_wal, last_failed_time, last_archived_time, "
            "(SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') "
            "FROM pg_stat_archiver"
        ).fetchone()
    assert row is not None
    failed_wal, failed_at, archived_at, ready = row
    if failed_at is not None and (archived_at is None or failed_at > archived_at):
        raise PitrError(
            f"WAL archiving of cluster {cluster.name!r} is failing ({ready} file(s) waiting, "
            f"last failure on {failed_wal} at {failed_at:%Y-%m-%d %H:%M:%S %Z})",
            hint=f"fix the repository first; the cause is in {cluster.state.log_file}",
        )


def take_backup(
    cluster: Cluster,
    repo: Repository,
    *,
    source: Cluster | None = None,
    name: str | None = None,
    log_backup: bool,
    ttl: timedelta | None = None,
    compress_level: int = 3,
    workers: int = 2,
    progress: Progress | None = None,
    parent: str | None = None,
) -> BackupManifest:
    """Take one backup of a running cluster into ``repo`` (incremental against ``parent``, a
    Completed backup with a stored backup_manifest), read from ``source`` (a standby of an HA
    cluster; by default the cluster's primary); return its Completed manifest."""
    started = datetime.now(UTC)
    name = name or default_name(cluster.name, started)
    validate_name(name)
    source = source or cluster
    cluster.require_running()
    source.require_running()
    stanza = cluster.state.stanza
    with backup_lock(cluster):
        repo.check()
        if log_backup:
            check_archiver(cluster)
        archive_info.ensure_archive_info(cluster, repo)
        if repo.exists(manifest_key(stanza, name)):
            raise AlreadyExists(f"backup {name!r} of cluster {cluster.name!r} already exists")
        manifest = BackupManifest(
            name=name,
            cluster=cluster.name,
            type=INCREMENTAL if parent else FULL,
            parent=parent,
            status="InProgress",
            system_identifier=cluster.state.system_identifier,
            pg_version=cluster.state.pg_version,
            wal_segment_size=cluster.state.wal_segment_size,
            superuser=None if cluster.superuser == "postgres" else cluster.superuser,
            start_time=started,
            pid=os.getpid(),
            host=cluster.state.host,  # the cluster's, also when another host takes it
            machine=socket.gethostname(),
            compression=compression_of(compress_level),
            wal_in_backup=not log_backup,
            repository=repo.url,
            member=backup_source.member_name(cluster, source),
        )
        catalog_backups.save_backup(repo, stanza, manifest)
        try:
            with _parent_manifest_file(repo, stanza, parent) as parent_file:
                streamed = stream_backup(
                    source,
                    repo,
                    stanza,
                    name,
                    log_backup,
                    compress_level,
                    workers,
                    progress,
                    parent_file,
                    standby=source is not cluster,
                )
        except BaseException as exc:
            failed = manifest.replace(
                status="Failed", error=_reason(exc), stop_time=datetime.now(UTC)
            )
            repo.delete(data_key(stanza, name, manifest.data_compression))
            repo.delete(backup_manifest_key(stanza, name))
            catalog_backups.save_backup(repo, stanza, failed)
            raise
        stopped = datetime.now(UTC)
        completed = manifest.replace(
            **streamed,
            next_xid=_next_xid(source),
            status="Completed",
            stop_time=stopped,
            duration_seconds=round((stopped - started).total_seconds(), 3),
            expiration=stopped + ttl if ttl is not None else None,
            pid=None,
        )
        catalog_backups.save_backup(repo, stanza, completed)
        return completed


def _next_xid(cluster: Cluster) -> str | None:
    """The server's next transaction id with its epoch ("1:745"), as of the checkpoint the
    backup started from or a later one: what places a 32-bit xid of the WAL after it in its
    epoch (``reach``).  A server that went away after the backup leaves it unknown."""
    import psycopg

    try:
        with cluster.connect() as db:
            row = db.execute("SELECT next_xid FROM pg_control_checkpoint()").fetchone()
    except (psycopg.Error, PitrError) as exc:
        log.warning("%s: the next transaction id could not be read: %s", cluster.name, exc)
        return None
    return str(row[0]) if row and row[0] else None


@contextmanager
def _parent_manifest_file(
    repo: Repository, stanza: str, parent: str | None
) -> Iterator[Path | None]:
    """The parent's backup_manifest as a file pg_basebackup (run as the server's user) can read,
    checked against the SHA-256 in the parent's manifest; removed afterwards."""
    if parent is None:
        yield None
        return
    import hashlib
    import shutil
    import tempfile

    expected = catalog_backups.get_backup(repo, stanza, parent).backup_manifest_sha256
    data = repo.get_document(backup_manifest_key(stanza, parent))
    if hashlib.sha256(data).hexdigest() != expected:
        raise ChecksumMismatch(
            f"the stored backup_manifest of backup {parent!r} does not match its checksum",
            hint="take a full backup: `--type full`",
        )
    tmp_root = st.home() / "tmp"
    tmp_root.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="pgpitr-parent-", dir=tmp_root))
    try:
        work.chmod(0o755)  # the manifest lists file names and checksums, no data
        path = work / "backup_manifest"
        path.write_bytes(data)
        path.chmod(0o644)
        yield path
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PitrError):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return type(exc).__name__
