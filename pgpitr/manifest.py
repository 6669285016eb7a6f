"""A stored backup: its manifest (``STANZA/backups/NAME/backup.json``), loaded and dumped in
one place; where its objects are; reading its data back.

The JSON keys are the repository format and stay as they are: manifests written by earlier versions
read the same (a missing ``type`` is Full, a missing ``compression`` is zstd, unknown keys are kept
and written back). ``type`` is ``Full`` or ``Incremental`` (capitalised, as the first versions
wrote it and as list-backup shows it); an incremental names its ``parent``. Times are
timezone-aware datetimes here and ISO 8601 text in the JSON; LSNs are PostgreSQL's text form
(``0/3000028``) with integer properties beside them."""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, BinaryIO

from pgpitr.errors import ChecksumMismatch, PitrError, TamperedObject
from pgpitr.repository import Repository
from pgpitr.wal.lsn import Lsn

log = logging.getLogger(__name__)

_TIMES = ("start_time", "stop_time", "expiration")
FULL, INCREMENTAL = "Full", "Incremental"


@dataclass(frozen=True)
class BackupManifest:
    name: str
    cluster: str
    status: str  # InProgress, Completed, Failed
    start_time: datetime
    system_identifier: str = ""
    pg_version: int = 0
    wal_segment_size: int = 16 * 1024 * 1024
    #: the role pgpitr administered the source as, when not ``postgres`` (a registered
    #: server's superuser): a restored cluster has the same roles
    superuser: str | None = None
    type: str = "Full"  # or "Incremental" (PostgreSQL 17+, block-level from WAL summaries)
    #: the backup an incremental was taken against (its lineage runs through it to a full)
    parent: str | None = None
    compression: str = "zstd"  # or "none", or "zstd:N" as written by later versions
    wal_in_backup: bool = False
    repository: str = ""
    pid: int | None = None
    #: the pgpitr host (PGPITR_HOST, its agent) whose cluster it is: the one that took it, but
    #: for an HA cluster's backup that the host of its primary took (``machine`` says where)
    host: str | None = None
    #: the machine whose process ``pid`` is (several pgpitr hosts may share one); older
    #: manifests have none, and their ``host`` was the machine's name
    machine: str | None = None
    start_lsn: str | None = None
    stop_lsn: str | None = None
    timeline: int | None = None
    database_size: int | None = None
    stored_size: int | None = None
    sha256: str | None = None
    stop_time: datetime | None = None
    duration_seconds: float | None = None
    expiration: datetime | None = None
    error: str | None = None
    #: the SHA-256 of PostgreSQL's backup_manifest, stored beside the data so that this backup
    #: can be the parent of an incremental; None for backups taken before it was stored
    backup_manifest_sha256: str | None = None
    #: the server's next transaction id after the backup's checkpoint, "epoch:xid": the epoch
    #: of a 32-bit xid found in the WAL after it (None for backups taken before it was kept)
    next_xid: str | None = None
    #: an HA cluster's member it was read from (a standby's name, or the primary's)
    member: str | None = None
    #: keys this version does not know, kept so that a rewrite loses nothing
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def completed(self) -> bool:
        return self.status == "Completed"

    @property
    def incremental(self) -> bool:
        return self.type == INCREMENTAL

    @property
    def start_lsn_int(self) -> Lsn:
        assert self.start_lsn is not None, f"backup {self.name} has no start LSN"
        return Lsn.parse(self.start_lsn)

    @property
    def stop_lsn_int(self) -> Lsn:
        assert self.stop_lsn is not None, f"backup {self.name} has no stop LSN"
        return Lsn.parse(self.stop_lsn)

    def full_xid(self, xid32: int) -> int | None:
        """The 64-bit id of a 32-bit ``xid32`` that the WAL shows after this backup: the one
        of its possible epochs nearest ``next_xid`` (as PostgreSQL widens an xid near the
        next one); None when the backup did not keep ``next_xid``."""
        if not self.next_xid:
            return None
        epoch, _, low = self.next_xid.partition(":")
        reference = int(epoch) * 2**32 + int(low)
        candidates = [(reference // 2**32 + e) * 2**32 + xid32 for e in (-1, 0, 1)]
        return min((c for c in candidates if c >= 0), key=lambda c: abs(c - reference))

    @property
    def data_compression(self) -> str:
        """How the data object is stored: ``zstd`` (base.tar.zst) or ``none`` (base.tar)."""
        return "none" if self.compression == "none" else "zstd"

    def replace(self, **changes: Any) -> BackupManifest:
        return dataclasses.replace(self, **changes)

    # -- the JSON form -----------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackupManifest:
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        values: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for key in _TIMES:
            if values.get(key):
                values[key] = datetime.fromisoformat(values[key])
        for key in ("pg_version", "wal_segment_size", "timeline"):
            if values.get(key) is not None:
                values[key] = int(values[key])
        extra = {k: v for k, v in data.items() if k not in known}
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = dict(self.extra)
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None:
                continue
            data[f.name] = value.isoformat() if isinstance(value, datetime) else value
        return data


def backup_row(b: BackupManifest) -> dict[str, Any]:
    """A backup as the CLI's list-backup and the backups artifact show it."""
    return {
        "name": b.name,
        "cluster": b.cluster,
        "type": b.type,
        "parent": b.parent,
        "status": b.status,
        "total_size": b.database_size,
        "stored_size": b.stored_size,
        "duration_seconds": b.duration_seconds,
        "create_time": b.start_time.isoformat(),
        "completion_time": b.stop_time.isoformat() if b.completed and b.stop_time else None,
        "start_lsn": b.start_lsn,
        "stop_lsn": b.stop_lsn,
        "timeline": b.timeline,
        "expiration": b.expiration.isoformat() if b.expiration else None,
    }


# -- where a backup's objects are, and reading its data back ---------------------------------

COPY_CHUNK = 1 << 20


def manifest_key(stanza: str, name: str) -> str:
    return f"{stanza}/backups/{name}/backup.json"


def read_manifest(repo: Repository, stanza: str, name: str) -> BackupManifest:
    """The manifest stored as backup ``name`` of ``stanza``, refused as tampering when it
    says it is another backup or another cluster's: one backup's manifest copied over
    another's would otherwise be read as that backup, and its data checked against the wrong
    checksum, or another cluster's backup restored.  An encrypted repository refuses such a
    copy earlier (the object is bound to its key); this check is what a plain one has."""
    key = manifest_key(stanza, name)
    manifest = BackupManifest.from_dict(repo.get_json(key))
    if (manifest.name, manifest.cluster) != (name, stanza):
        raise TamperedObject(
            f"object {repo.url}/{key} is the manifest of backup {manifest.name!r} of cluster "
            f"{manifest.cluster!r}, not of backup {name!r} of cluster {stanza!r}: it was "
            "copied or moved in the repository, and is refused",
            hint="the repository was changed behind pgpitr's back: find who changes it; "
            f"`pgpitr cluster delete-backup {stanza} --name {name}` removes the backup",
        )
    return manifest


def check_system(
    repo: Repository, stanza: str, archive_info: dict | None, backups: Iterable[BackupManifest]
) -> None:
    """Refuse a backup of another PostgreSQL system than the stanza's archive: a manifest and
    its data put back from an earlier cluster of the same name (deleted, then created again)
    pass every name check and authenticate, but would restore that other cluster."""
    expected = str((archive_info or {}).get("system_identifier", ""))
    for backup in backups:
        if expected and backup.system_identifier and backup.system_identifier != expected:
            raise TamperedObject(
                f"object {repo.url}/{manifest_key(stanza, backup.name)} is the manifest of a "
                f"backup of another PostgreSQL system (system identifier "
                f"{backup.system_identifier}; the archive of {stanza!r} is {expected}): it was "
                "put back or copied in the repository, and is refused",
                hint="the repository was changed behind pgpitr's back: find who changes it; "
                f"`pgpitr cluster delete-backup {stanza} --name {backup.name}` removes it",
            )


def data_key(stanza: str, name: str, compression: str = "zstd") -> str:
    """Where a backup's tar is: ``base.tar.zst``, or ``base.tar`` with compression ``none``."""
    return f"{stanza}/backups/{name}/base.{'tar' if compression == 'none' else 'tar.zst'}"


def backup_manifest_key(stanza: str, name: str) -> str:
    """PostgreSQL's backup_manifest of a backup, as its own object: the next incremental's
    ``pg_basebackup --incremental`` reads it as a file."""
    return f"{stanza}/backups/{name}/backup_manifest"


def damage_key(stanza: str, name: str) -> str:
    """The record that a read of the backup's data found it damaged (``copy_data``): the window
    stops counting the backup and its dependents until a ``verify-backup`` finds it intact."""
    return f"{stanza}/backups/{name}/damaged.json"


def data_keys(stanza: str, name: str) -> list[str]:
    """Every object a backup may have but its manifest, for deleting what an attempt left."""
    return [data_key(stanza, name, c) for c in ("zstd", "none")] + [
        backup_manifest_key(stanza, name),
        damage_key(stanza, name),
    ]


def copy_data(
    repo: Repository,
    stanza: str,
    manifest: BackupManifest,
    out: BinaryIO,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Write a backup's tar to ``out``: read back, checked against the manifest's SHA-256, and
    decompressed.  A damaged object raises ChecksumMismatch when its end is reached, and is
    recorded as damaged (``damage_key``) first, whoever read it: a restore, a drill, a verify."""
    try:
        _copy_data(repo, stanza, manifest, out, progress)
    except ChecksumMismatch as exc:
        record_damage(repo, stanza, manifest.name, exc.message)
        raise


def record_damage(repo: Repository, stanza: str, name: str, reason: str) -> None:
    try:
        repo.put_json(
            damage_key(stanza, name), {"found_at": datetime.now(UTC).isoformat(), "reason": reason}
        )
    except PitrError as exc:  # the damage itself is the error to report
        log.warning("could not record backup %s as damaged: %s", name, exc.message)


def clear_damage(repo: Repository, stanza: str, name: str) -> bool:
    """Forget a damage record (a verify found the backup intact); whether there was one."""
    key = damage_key(stanza, name)
    if not repo.exists(key):
        return False
    repo.delete(key)
    return True


def _copy_data(
    repo: Repository,
    stanza: str,
    manifest: BackupManifest,
    out: BinaryIO,
    progress: Callable[[int, int], None] | None,
) -> None:
    assert manifest.stored_size is not None and manifest.sha256 is not None
    total = manifest.stored_size
    key = data_key(stanza, manifest.name, manifest.data_compression)
    with repo.open_verified(key, manifest.sha256, total) as raw:
        done = 0

        class Counting:
            def read(self, size: int = -1) -> bytes:
                nonlocal done
                chunk = raw.read(size)
                done += len(chunk)
                if progress:
                    progress(done, total)
                return chunk

        try:
            if manifest.data_compression == "none":
                shutil.copyfileobj(Counting(), out, COPY_CHUNK)
            else:
                import zstandard

                try:
                    zstandard.ZstdDecompressor().copy_stream(
                        Counting(), out, read_size=COPY_CHUNK, write_size=COPY_CHUNK
                    )
                except zstandard.ZstdError as exc:
                    # the frame breaks before its end, where the SHA-256 would have told
                    raise ChecksumMismatch(
                        f"object {repo.url}/{key} of backup {manifest.name} is damaged: {exc}",
                        hint="the copy in the repository is damaged; use another backup",
                    ) from None
        except BrokenPipeError:
            # the reader (tar) quit, perhaps on garbage that damage decompressed into: the rest
            # of the object decides, at its end, whether it is damaged (ChecksumMismatch) or
            # the reader failed on its own (its error, reported by the caller)
            while raw.read(COPY_CHUNK):
                pass
            raise
