"""Full backups: pg_basebackup streamed, compressed, into the repository.

``run`` is the backup operation, the one place its steps are put in order: check the cluster,
stream the backup, confirm the WAL reached the repository, and verify it when asked.

Repository layout::

    STANZA/backups/NAME/backup.json     the manifest (status, LSNs, times, sizes, checksum)
    STANZA/backups/NAME/base.tar.zst    the data directory as one zstd tar, backup_manifest inside

The manifest is written InProgress before any data moves and Completed only after the stream is
stored and checked, so a backup that dies half-way never counts; its pid lets the catalog tell a
running backup from a dead one.
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import BinaryIO

from pgpitr import catalog, clusters, timeparse, verify
from pgpitr import policy as pol
from pgpitr.errors import AlreadyExists, Busy, InvalidInput, PitrError
from pgpitr.manifest import BackupManifest, data_key, data_keys, manifest_key
from pgpitr.postgres import binaries
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import basebackup_command, check, popen
from pgpitr.repository import Repository
from pgpitr.steps import Steps

log = logging.getLogger(__name__)

BACKUP_NAME_RULE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,98}[a-z0-9]$")
_PROGRESS = re.compile(rb"(\d+)/(\d+) kB")
_START = re.compile(r"write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_END = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")

Progress = Callable[[int, int], None]  # (bytes done, bytes expected)
#: How long the WAL switched after a backup may take to reach the repository.
WAL_ARRIVAL_TIMEOUT = 120.0


# -- the operation ---------------------------------------------------------------------------


def run(
    steps: Steps, cluster: str, name: str | None = None, *, verify_after: bool = False
) -> BackupManifest:
    """One full backup of CLUSTER named NAME (chosen here once when not given, so that a
    retried stream reuses it)."""
    name = name or default_name(cluster, datetime.now(UTC))
    policy = steps(check_cluster, cluster)
    manifest = steps(stream, cluster, name)
    if policy.logfile_enabled:
        steps(confirm_wal_arrival, cluster)
    if verify_after:
        steps(verify.verify_backup, cluster, name)
    return manifest


def check_cluster(cluster: str) -> pol.BackupPolicy:
    """The cluster runs and its repository answers; returns its backup policy."""
    c = Cluster.get(cluster)
    c.require_running()
    clusters.repository(c).check()
    policy = clusters.load_policy(c)
    log.info(
        "cluster %s runs on port %s; repository %s; log backup %s",
        cluster,
        c.state.port,
        c.state.repository,
        "on" if policy.logfile_enabled else "off",
    )
    return policy


def stream(cluster: str, name: str, progress: Progress | None = None) -> BackupManifest:
    """pg_basebackup into the repository, as the policy says; Completed only once stored."""
    c = Cluster.get(cluster)
    repo = clusters.repository(c)
    policy = clusters.load_policy(c)
    _forget_failed_attempt(repo, c.state.stanza, name)
    manifest = take_backup(
        c,
        repo,
        name=name,
        log_backup=policy.logfile_enabled,
        ttl=timeparse.parse_ttl(policy.ttl),
        compress_level=level_of(policy.compression),
        progress=progress,
    )
    log.info(
        "backup %s stored: %s bytes of data, %s bytes in the repository, %.1f s",
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
    if catalog.get_backup(repo, stanza, name).status == "Failed":
        for key in data_keys(stanza, name):
            repo.delete(key)
        repo.delete(manifest_key(stanza, name))
        log.info("removed the failed earlier attempt of backup %s", name)


def confirm_wal_arrival(cluster: str, timeout: float = WAL_ARRIVAL_TIMEOUT) -> str:
    """Switch WAL and wait until the finished segment is in the repository."""
    c = Cluster.get(cluster)
    segment = clusters.switch_and_confirm(c, clusters.repository(c), timeout=timeout)
    log.info("WAL segment %s is in the repository", segment)
    return segment


# -- the unit of work ------------------------------------------------------------------------


def compression_of(level: int) -> str:
    """0: the tar stored as it comes (for fast disks and data that does not compress)."""
    return "none" if level == 0 else f"zstd:{level}"


def level_of(compression: str) -> int:
    """The inverse of ``compression_of``, for a policy's canonical ``none`` or ``zstd:N``."""
    return 0 if compression == "none" else int(compression.partition(":")[2] or 3)


def default_name(cluster: str, now: datetime) -> str:
    return f"backup-default-{cluster}-{now.strftime('%Y%m%d%H%M%S')}"


def validate_name(name: str) -> None:
    if not BACKUP_NAME_RULE.fullmatch(name):
        raise InvalidInput(
            f"invalid backup name {name!r}: use 2 to 100 lower-case letters, digits, '.' and '-'"
        )


@contextmanager
def backup_lock(cluster: Cluster) -> Iterator[None]:
    """One backup per cluster at a time; a second one is refused, not queued."""
    path = cluster.state.dir / "backup.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            raise Busy(
                f"a backup of cluster {cluster.name!r} is already running ({holder or 'pid ?'})",
                hint="wait for it to finish; `pgpitr cluster list-backup` shows its progress",
            ) from None
        os.ftruncate(fd, 0)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()}, started {stamp}".encode(), 0)
        yield
    finally:
        os.close(fd)


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
    name: str | None = None,
    log_backup: bool,
    ttl: timedelta | None = None,
    compress_level: int = 3,
    workers: int = 2,
    progress: Progress | None = None,
) -> BackupManifest:
    """Take one full backup of a running cluster into ``repo``; return its Completed manifest."""
    started = datetime.now(UTC)
    name = name or default_name(cluster.name, started)
    validate_name(name)
    cluster.require_running()
    stanza = cluster.state.stanza
    with backup_lock(cluster):
        repo.check()
        if log_backup:
            check_archiver(cluster)
        clusters.ensure_archive_info(cluster, repo)
        if repo.exists(manifest_key(stanza, name)):
            raise AlreadyExists(f"backup {name!r} of cluster {cluster.name!r} already exists")
        manifest = BackupManifest(
            name=name,
            cluster=cluster.name,
            type="Full",
            status="InProgress",
            system_identifier=cluster.state.system_identifier,
            pg_version=cluster.state.pg_version,
            wal_segment_size=cluster.state.wal_segment_size,
            superuser=None if cluster.superuser == "postgres" else cluster.superuser,
            start_time=started,
            pid=os.getpid(),
            host=socket.gethostname(),
            compression=compression_of(compress_level),
            wal_in_backup=not log_backup,
            repository=repo.url,
        )
        catalog.save_backup(repo, stanza, manifest)
        try:
            streamed = _stream(
                cluster, repo, stanza, name, log_backup, compress_level, workers, progress
            )
        except BaseException as exc:
            failed = manifest.replace(
                status="Failed", error=_reason(exc), stop_time=datetime.now(UTC)
            )
            repo.delete(data_key(stanza, name, manifest.data_compression))
            catalog.save_backup(repo, stanza, failed)
            raise
        stopped = datetime.now(UTC)
        completed = manifest.replace(
            **streamed,
            status="Completed",
            stop_time=stopped,
            duration_seconds=round((stopped - started).total_seconds(), 3),
            expiration=stopped + ttl if ttl is not None else None,
            pid=None,
        )
        catalog.save_backup(repo, stanza, completed)
        return completed


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PitrError):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return type(exc).__name__


_HISTORY_FIELD = re.compile(r"^([A-Z ]+): (.*)$", re.M)


def _range_from_history_file(
    repo: Repository, stanza: str, label: str, timeout: float = 60
) -> tuple[str, str, int]:
    """(start LSN, stop LSN, timeline) from the archived ``.backup`` file carrying our label.

    The server archives it as the backup stops; with log backup on it reaches the repository
    right after the stop segment, for which pg_basebackup already waited."""
    deadline = time.monotonic() + timeout
    seen: set[str] = set()
    while True:
        candidates = [
            info.key
            for info in repo.list(f"{stanza}/wal/")
            if ".backup-" in info.key and info.key not in seen
        ]
        for key in sorted(candidates, reverse=True)[:8]:
            seen.add(key)
            fields = dict(_HISTORY_FIELD.findall(repo.get_document(key).decode(errors="replace")))
            if fields.get("LABEL", "").strip() == label:
                return (
                    fields["START WAL LOCATION"].split()[0],
                    fields["STOP WAL LOCATION"].split()[0],
                    int(fields["START TIMELINE"]),
                )
        if time.monotonic() > deadline:
            raise PitrError(
                f"the server's backup history file for {label!r} did not reach the repository "
                f"within {timeout:.0f} s",
                hint="check that WAL archiving works (pgpitr cluster describe, the server log)",
            )
        time.sleep(0.2)


def _stream(
    cluster: Cluster,
    repo: Repository,
    stanza: str,
    name: str,
    log_backup: bool,
    compress_level: int,
    workers: int,
    progress: Progress | None,
) -> dict:
    # pg_basebackup compresses when its build can (15+ with libzstd); otherwise pgpitr does, in
    # the same format, so that a backup reads back the same whoever compressed it
    by_tool = compress_level > 0 and binaries.basebackup_compresses_zstd(cluster.bindir)
    argv = basebackup_command(
        cluster.bindir,
        cluster.state.socket_dir,
        cluster.state.port,
        label=name,
        include_wal=not log_backup,
        compress_level=compress_level if by_tool else 0,
        workers=workers,
        superuser=cluster.superuser,
        major=binaries.major_of(cluster.bindir),
    )
    process = popen(argv, user=cluster.client_user)
    stderr = bytearray()
    expected = [0]

    def read_stderr() -> None:
        assert process.stderr is not None
        while chunk := process.stderr.read1(4096):
            stderr.extend(chunk)
            found = _PROGRESS.findall(chunk)
            if found:
                done, total = (int(v) * 1024 for v in found[-1])
                expected[0] = total
                if progress:
                    progress(done, total)

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        assert process.stdout is not None
        key = data_key(stanza, name, compression_of(compress_level))
        source: BinaryIO = process.stdout
        if compress_level and not by_tool:
            import zstandard

            compressor = zstandard.ZstdCompressor(level=compress_level, threads=workers)
            source = compressor.stream_reader(process.stdout, read_size=1 << 20)
        stored = repo.put_stream(key, source)
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        process.wait()
        reader.join(timeout=10)
    text = stderr.decode(errors="replace")
    check(process, argv, text)
    start, end = _START.search(text), _END.search(text)
    if start and end:
        wal_range = (start.group(1), end.group(1), int(start.group(2)))
    else:  # -X none prints no WAL range: the server's backup history file has it
        wal_range = _range_from_history_file(repo, stanza, name)
    return {
        "start_lsn": wal_range[0],
        "stop_lsn": wal_range[1],
        "timeline": wal_range[2],
        "database_size": expected[0],
        "stored_size": stored.size,
        "sha256": stored.sha256,
    }
