"""Backups, full or incremental: pg_basebackup streamed, compressed, into the repository.

``run`` is the backup operation, the one place its steps are put in order: check the cluster,
choose the parent of an incremental, stream the backup, confirm the WAL reached the repository,
and verify it when asked.

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
from enum import StrEnum
from pathlib import Path
from typing import BinaryIO

from pgpitr import cluster_repository, policy_store, timeparse
from pgpitr import policy as pol
from pgpitr import state as st
from pgpitr.catalog import backups as catalog_backups
from pgpitr.catalog.source import check_key
from pgpitr.errors import (
    AlreadyExists,
    Busy,
    ChecksumMismatch,
    CommandError,
    InvalidInput,
    NotFound,
    PitrError,
)
from pgpitr.manifest import (
    FULL,
    INCREMENTAL,
    BackupManifest,
    backup_manifest_key,
    data_key,
    data_keys,
    manifest_key,
)
from pgpitr.operations import log_backup as operations_log_backup
from pgpitr.operations import verify
from pgpitr.operations.edit_policy import INCREMENTAL_SINCE, require_incremental_support
from pgpitr.osutil import open_private
from pgpitr.postgres import binaries
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import basebackup_command, check, popen
from pgpitr.repository import Repository
from pgpitr.steps import Steps
from pgpitr.wal import archive, archive_info

log = logging.getLogger(__name__)

BACKUP_NAME_RULE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,98}[a-z0-9]$")
_PROGRESS = re.compile(rb"(\d+)/(\d+) kB")
_START = re.compile(r"write-ahead log start point: ([0-9A-F]+/[0-9A-F]+) on timeline (\d+)")
_END = re.compile(r"write-ahead log end point: ([0-9A-F]+/[0-9A-F]+)")

Progress = Callable[[int, int], None]  # (bytes done, bytes expected)
#: How long the WAL switched after a backup may take to reach the repository.
WAL_ARRIVAL_TIMEOUT = 120.0
#: The first major whose pg_basebackup takes --incremental.


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


# -- the operation ---------------------------------------------------------------------------


def run(
    steps: Steps,
    cluster: str,
    name: str | None = None,
    *,
    backup_type: BackupType = BackupType.FULL,
    parent: str | None = None,
    verify_after: bool = False,
) -> BackupManifest:
    """One backup of CLUSTER named NAME (chosen here once when not given, so that a retried
    stream reuses it): full, or incremental against ``parent`` (by default the newest usable
    backup on the server's timeline)."""
    name = name or fresh_name(cluster)
    check_request(cluster, name, backup_type, parent)  # before anything is written
    policy = steps(check_cluster, cluster)
    if backup_type is BackupType.INCREMENTAL:
        parent = steps(choose_parent, cluster, parent)
    manifest = steps(stream, cluster, name, parent)
    if policy.logfile_enabled:
        steps(confirm_wal_arrival, cluster)
    if verify_after:
        steps(verify.verify_backup, cluster, name)
    return manifest


def check_cluster(cluster: str) -> pol.BackupPolicy:
    """The cluster runs and its repository answers; returns its backup policy."""
    c = Cluster.get(cluster)
    c.require_running()
    cluster_repository.repository(c).check()
    policy = policy_store.load_policy(c)
    log.info(
        "cluster %s runs on port %s; repository %s; log backup %s",
        cluster,
        c.state.port,
        c.state.repository,
        "on" if policy.logfile_enabled else "off",
    )
    return policy


def choose_parent(cluster: str, wanted: str | None = None) -> str:
    """The backup an incremental is taken against: ``wanted``, or the newest backup whose
    lineage is usable, on the server's current timeline, with a stored backup_manifest."""
    c = Cluster.get(cluster)
    require_incremental_support(c)
    with c.connect() as db:
        row = db.execute(
            "SELECT current_setting('summarize_wal'), "
            "(SELECT timeline_id FROM pg_control_checkpoint())"
        ).fetchone()
    assert row is not None
    summarize, timeline = row
    if summarize != "on":
        raise PitrError(
            f"summarize_wal is off on {cluster}: incremental backups are made from the "
            "server's WAL summaries",
            hint="turn it on (ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf();), "
            f"then take a full backup: `pgpitr cluster backup {cluster}`",
        )
    repo = cluster_repository.repository(c)
    stanza = c.state.stanza
    backups = catalog_backups.list_backups(repo, stanza)
    broken = catalog_backups.broken_links(repo, stanza, backups)
    first = f"take a full backup first: `pgpitr cluster backup {cluster} --type full`"
    if wanted:
        chosen = next((b for b in backups if b.name == wanted), None)
        if chosen is None:
            catalog_backups.get_backup(repo, stanza, wanted)  # raises NotFound with a hint
        assert chosen is not None
        why = broken.get(wanted) or (None if chosen.completed else f"it is {chosen.status}")
        if why is None and chosen.timeline != timeline:
            why = f"it is on timeline {chosen.timeline}, the server on {timeline}"
        if why:
            raise InvalidInput(f"backup {wanted!r} cannot be a parent: {why}", hint=first)
    else:
        candidates = [
            b
            for b in backups
            if b.completed
            and b.name not in broken
            and b.timeline == timeline
            and b.system_identifier == c.state.system_identifier
        ]
        if not candidates:
            raise NotFound(
                f"cluster {cluster!r} has no completed backup on timeline {timeline} to take "
                "an incremental against",
                hint=first,
            )
        chosen = candidates[-1]
    if chosen.backup_manifest_sha256 is None:
        raise InvalidInput(
            f"backup {chosen.name!r} was taken before pgpitr stored backup manifests, so it "
            "cannot be the parent of an incremental",
            hint=first,
        )
    log.info("incremental backup of %s against %s (%s)", cluster, chosen.name, chosen.type)
    return chosen.name


def stream(
    cluster: str, name: str, parent: str | None = None, progress: Progress | None = None
) -> BackupManifest:
    """pg_basebackup into the repository, as the policy says; Completed only once stored.
    With ``parent``, an incremental against that backup."""
    c = Cluster.get(cluster)
    repo = cluster_repository.repository(c)
    policy = policy_store.load_policy(c)
    _forget_failed_attempt(repo, c.state.stanza, name)
    manifest = take_backup(
        c,
        repo,
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


def confirm_wal_arrival(cluster: str, timeout: float = WAL_ARRIVAL_TIMEOUT) -> str:
    """Switch WAL and wait until the finished segment is in the repository."""
    c = Cluster.get(cluster)
    segment = operations_log_backup.switch_and_confirm(
        c, cluster_repository.repository(c), timeout=timeout
    )
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


def fresh_name(cluster: str) -> str:
    """A default name no backup of CLUSTER has yet: the name is to the second, and two backups
    (a full and its incremental on a small database) can start in one second; the next second
    is waited for then.  Call it with the cluster's backup slot held, so no other run takes it."""
    repo = cluster_repository.repository(Cluster.get(cluster))
    stanza = Cluster.get(cluster).state.stanza
    while True:
        now = datetime.now(UTC)
        name = default_name(cluster, now)
        if not repo.exists(manifest_key(stanza, name)):
            return name
        time.sleep(1 - now.microsecond / 1e6)


def validate_name(name: str) -> None:
    if not BACKUP_NAME_RULE.fullmatch(name):
        raise InvalidInput(
            f"invalid backup name {name!r}: use 2 to 100 lower-case letters, digits, '.' and '-'"
        )


def check_request(
    cluster: str, name: str | None, backup_type: BackupType | str, parent: str | None
) -> BackupType:
    """What refuses a backup before anything is written, and needs no flow: an unknown cluster,
    a wrong encryption key, a bad name or type, a parent not found or given to a full backup, a
    server too old for incrementals.  The CLI calls it before it starts the flow; ``run``
    again.  Returns the parsed type."""
    c = Cluster.get(cluster)
    repo = cluster_repository.repository(c)
    check_key(repo, c.state.stanza)
    kind = BackupType.parse(backup_type)
    if name:
        validate_name(name)
    if kind is BackupType.INCREMENTAL:
        require_incremental_support(c)
        if parent:
            validate_name(parent)
            catalog_backups.get_backup(repo, c.state.stanza, parent)
    elif parent:
        raise InvalidInput("--parent is for incremental backups: add --type incremental")
    return kind


@contextmanager
def backup_lock(cluster: Cluster) -> Iterator[None]:
    """One backup per cluster at a time; a second one is refused, not queued (the flow's backup
    slot is where a second backup waits its turn: tasks/_slots.py)."""
    path = cluster.state.dir / "backup.lock"
    fd = _open_lock(path)
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


def _open_lock(path: Path) -> int:
    """The lock file, opened so that one planted in its place is refused: a symlink there (to a
    file of this account that the truncation below would empty) is never followed, and a file
    of another account, or a hard link, is not this home's lock."""
    return open_private(path, os.O_RDWR | os.O_CREAT, 0o644)


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
    parent: str | None = None,
) -> BackupManifest:
    """Take one backup of a running cluster into ``repo`` (incremental against ``parent``, a
    Completed backup with a stored backup_manifest); return its Completed manifest."""
    started = datetime.now(UTC)
    name = name or default_name(cluster.name, started)
    validate_name(name)
    cluster.require_running()
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
            host=socket.gethostname(),
            compression=compression_of(compress_level),
            wal_in_backup=not log_backup,
            repository=repo.url,
        )
        catalog_backups.save_backup(repo, stanza, manifest)
        try:
            with _parent_manifest_file(repo, stanza, parent) as parent_file:
                streamed = _stream(
                    cluster,
                    repo,
                    stanza,
                    name,
                    log_backup,
                    compress_level,
                    workers,
                    progress,
                    parent_file,
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
            next_xid=_next_xid(cluster),
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


class ManifestTap:
    """A tar stream passed through as it is read, keeping the member ``backup_manifest``
    (pg_basebackup writes it last): the ustar headers are followed, the data is not copied."""

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._header = bytearray()
        self._remaining = 0  # data bytes of the current member still to come
        self._padding = 0  # then zeros up to the next 512-byte block
        self._keep = False
        self.manifest = bytearray()

    def read(self, size: int = -1) -> bytes:
        chunk = self._raw.read(size)
        if chunk:
            self._feed(memoryview(chunk))
        return chunk

    def _feed(self, data: memoryview) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._remaining:
                take = min(self._remaining, n - i)
                if self._keep:
                    self.manifest += data[i : i + take]
                self._remaining -= take
                i += take
            elif self._padding:
                take = min(self._padding, n - i)
                self._padding -= take
                i += take
            else:
                take = min(512 - len(self._header), n - i)
                self._header += data[i : i + take]
                i += take
                if len(self._header) == 512:
                    self._start_member(bytes(self._header))
                    self._header.clear()

    def _start_member(self, header: bytes) -> None:
        if not header.strip(b"\0"):
            return  # the two zero blocks that end the archive
        size = _tar_number(header[124:136])
        self._remaining, self._padding = size, (-size) % 512
        name = header[:100].split(b"\0", 1)[0]
        self._keep = name == b"backup_manifest" and header[156:157] in (b"0", b"\0")
        if self._keep:
            self.manifest.clear()


def _tar_number(field: bytes) -> int:
    """A tar header's number: octal text, or base-256 when the high bit is set (large files)."""
    if field[0] & 0x80:
        return int.from_bytes(bytes([field[0] & 0x7F]) + field[1:], "big")
    return int(field.strip(b"\0 ") or b"0", 8)


def _reason(exc: BaseException) -> str:
    if isinstance(exc, PitrError):
        return exc.message
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted"
    return type(exc).__name__


_HISTORY_FIELD = re.compile(r"^([A-Z ]+): (.*)$", re.M)


def _range_from_history_file(
    cluster: Cluster, repo: Repository, stanza: str, label: str, timeout: float = 60
) -> tuple[str, str, int]:
    """(start LSN, stop LSN, timeline) from the archived ``.backup`` file carrying our label.

    The server names the file (its ``pg_wal`` keeps the newest ones), and the repository's copy
    is read by that name: one listing of its own prefix, however large the archive.  The server
    archives it as the backup stops; with log backup on it reaches the repository right after
    the stop segment, for which pg_basebackup already waited."""
    return _read_history_file(repo, stanza, _history_file_name(cluster, label), label, timeout)


def _read_history_file(
    repo: Repository, stanza: str, name: str, label: str, timeout: float
) -> tuple[str, str, int]:
    deadline = time.monotonic() + timeout
    while True:
        for key, sha256 in archive.stored_versions(repo, stanza, name):
            fields = _history_fields(repo.get_document(key, sha256).decode(errors="replace"))
            if fields.get("LABEL", "").strip() == label:
                return (
                    fields["START WAL LOCATION"].split()[0],
                    fields["STOP WAL LOCATION"].split()[0],
                    int(fields["START TIMELINE"]),
                )
        if time.monotonic() > deadline:
            raise PitrError(
                f"the server's backup history file {name} for {label!r} did not reach the "
                f"repository within {timeout:.0f} s",
                hint="check that WAL archiving works (pgpitr cluster describe, the server log)",
            )
        time.sleep(0.2)


def _history_fields(text: str) -> dict[str, str]:
    return dict(_HISTORY_FIELD.findall(text))


def _history_file_name(cluster: Cluster, label: str) -> str:
    """The name of the backup history file the server wrote for ``label`` (the newest first:
    PostgreSQL removes the older ones once they are archived)."""
    with cluster.connect() as db:
        names = [
            row[0]
            for row in db.execute(
                "SELECT name FROM pg_ls_waldir() WHERE name LIKE '%.backup' ORDER BY name DESC"
            ).fetchall()
        ]
        for name in names:
            row = db.execute("SELECT pg_read_file(%s)", (f"pg_wal/{name}",)).fetchone()
            if row and _history_fields(row[0]).get("LABEL", "").strip() == label:
                return name
    raise PitrError(
        f"the server of {cluster.name!r} has no backup history file for {label!r} in pg_wal",
        hint="run the backup again; if it happens again, check the server log",
    )


def _stream(
    cluster: Cluster,
    repo: Repository,
    stanza: str,
    name: str,
    log_backup: bool,
    compress_level: int,
    workers: int,
    progress: Progress | None,
    parent_file: Path | None = None,
) -> dict:
    # pg_basebackup compresses when its build can (15+ with libzstd); otherwise pgpitr does, in
    # the same format, so that a backup reads back the same whoever compressed it.  On 17+ pgpitr
    # always does: the raw tar passes through it so that backup_manifest is read out on the way
    # (decompressing a copy of the tool's output would cost a second pass over the data).
    major = binaries.major_of(cluster.bindir)
    tap = major >= INCREMENTAL_SINCE
    by_tool = compress_level > 0 and not tap and binaries.basebackup_compresses_zstd(cluster.bindir)
    argv = basebackup_command(
        cluster.bindir,
        cluster.state.socket_dir,
        cluster.state.port,
        label=name,
        include_wal=not log_backup,
        compress_level=compress_level if by_tool else 0,
        workers=workers,
        superuser=cluster.superuser,
        major=major,
        incremental_from=parent_file,
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
        tapped = ManifestTap(source) if tap else None
        if tapped is not None:
            source = tapped  # type: ignore[assignment]
        if compress_level and not by_tool:
            import zstandard

            compressor = zstandard.ZstdCompressor(level=compress_level, threads=workers)
            source = compressor.stream_reader(source, read_size=1 << 20)
        stored = repo.put_stream(key, source)
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        process.wait()
        reader.join(timeout=10)
    text = stderr.decode(errors="replace")
    try:
        check(process, argv, text)
    except CommandError:
        _refuse_unsummarised(cluster, text, parent_file)
        raise
    manifest_fields: dict = {}
    if tapped is not None:
        if not tapped.manifest:
            raise PitrError(
                f"the backup stream of {cluster.name!r} ended without its backup_manifest",
                hint="run the backup again; if it happens again, check the server log",
            )
        import hashlib

        repo.put_document(backup_manifest_key(stanza, name), bytes(tapped.manifest))
        manifest_fields["backup_manifest_sha256"] = hashlib.sha256(tapped.manifest).hexdigest()
    start, end = _START.search(text), _END.search(text)
    if start and end:
        wal_range = (start.group(1), end.group(1), int(start.group(2)))
    else:  # -X none prints no WAL range: the server's backup history file has it
        wal_range = _range_from_history_file(cluster, repo, stanza, name)
    return {
        "start_lsn": wal_range[0],
        "stop_lsn": wal_range[1],
        "timeline": wal_range[2],
        "database_size": expected[0],
        "stored_size": stored.size,
        "sha256": stored.sha256,
        **manifest_fields,
    }


def _refuse_unsummarised(cluster: Cluster, stderr: str, parent_file: Path | None) -> None:
    """pg_basebackup --incremental refuses when the WAL summaries do not reach back to the
    parent's start (summarize_wal turned on after it): say so, and the way out."""
    if parent_file is None:
        return
    if "WAL summaries are required" in stderr or "WAL summarization" in stderr:
        detail = next((line.strip() for line in stderr.splitlines() if "WAL summar" in line), "")
        raise PitrError(
            f"the server's WAL summaries of {cluster.name!r} do not cover the parent backup "
            f"(summarize_wal was off for part of it): {detail}",
            hint=f"take a full backup (`pgpitr cluster backup {cluster.name} --type full`); "
            "incrementals against it will work",
        )
