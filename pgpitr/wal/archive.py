"""The WAL archive: push, fetch, names, and the commit times inside segments.

Repository layout of one cluster (its *stanza*)::

    STANZA/archive.info                                   system identifier, version, segment size
    STANZA/wal/TTTTTTTTLLLLLLLL/<file>-<sha256>.zst       segments, .partial and .backup files
    STANZA/wal/history/<TTTTTTTT.history>-<sha256>.zst    timeline history files

The SHA-256 of the stored object (the zstd frame) is part of its name: a fetch checks the bytes it
reads against it before decompressing (and the frame's content checksum checks what comes out), and
a re-push of the same file usually finds its own object by name.  Hashing the 1 MB frame instead of
the 16 MB segment saves a quarter of the CPU of a push.  Compression is deterministic for one zstd
version and level only, so an object under the same file name with another checksum is read back
and compared: the same content succeeds, a different one is refused without overwriting the stored
copy.  This module is imported by the per-segment commands: it must
stay light (no Prefect, no boto3 unless the repository is S3).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import re
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

from pgpitr.errors import NotFound, SystemIdMismatch, WalConflict
from pgpitr.osutil import write_atomic
from pgpitr.repository.base import Repository, document_frame
from pgpitr.wal import index as archive_index
from pgpitr.wal.lsn import Lsn

SEGMENT_RE = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})\Z")
WAL_FILE_RE = re.compile(
    r"^[0-9A-F]{24}(\.partial|\.[0-9A-F]{8}\.backup)?\Z|^[0-9A-F]{8}\.history\Z"
)
OBJECT_RE = re.compile(r"^(?P<name>.+)-(?P<sha>[0-9a-f]{64})\.zst\Z")
#: a streamed segment still being written (pgpitr/wal/stream/): its name and how many bytes of
#: it were written, so that the newest of several is the longest
STREAMED_PARTIAL_RE = re.compile(r"^(?P<segment>[0-9A-F]{24})\.(?P<extent>[0-9A-F]{8})\.partial\Z")


@dataclass(frozen=True, order=True)
class Segment:
    """A WAL segment's position: timeline and segment number (log * segs_per_log + seg)."""

    timeline: int
    number: int

    @classmethod
    def parse(cls, name: str, segment_size: int) -> Segment:
        match = SEGMENT_RE.match(name)
        if not match:
            raise ValueError(f"{name!r} is not a WAL segment name")
        tli, log, seg = (int(g, 16) for g in match.groups())
        return cls(tli, log * segments_per_log(segment_size) + seg)

    def name(self, segment_size: int) -> str:
        per_log = segments_per_log(segment_size)
        return f"{self.timeline:08X}{self.number // per_log:08X}{self.number % per_log:08X}"

    def next(self) -> Segment:
        return Segment(self.timeline, self.number + 1)


def segments_per_log(segment_size: int) -> int:
    return 0x100000000 // segment_size


def segment_of(lsn: str | int, timeline: int, segment_size: int) -> Segment:
    value = Lsn.parse(lsn) if isinstance(lsn, str) else lsn
    return Segment(timeline, value // segment_size)


def wal_dir(stanza: str, name: str) -> str:
    if name.endswith(".history"):
        return f"{stanza}/wal/history"
    return f"{stanza}/wal/{name[:16]}"


def object_key(stanza: str, name: str, sha256: str) -> str:
    return f"{wal_dir(stanza, name)}/{name}-{sha256}.zst"


def split_object_key(key: str) -> tuple[str, str] | None:
    """(file name, sha256) of a WAL object key, or None for anything else."""
    match = OBJECT_RE.match(key.rsplit("/", 1)[-1])
    return (match.group("name"), match.group("sha")) if match else None


def stored_versions(repo: Repository, stanza: str, name: str) -> list[tuple[str, str]]:
    """(key, sha256) of every stored object for one WAL file name."""
    found = []
    for info in repo.list(f"{wal_dir(stanza, name)}/{name}-"):
        parsed = split_object_key(info.key)
        if parsed and parsed[0] == name:
            found.append((info.key, parsed[1]))
    return found


# -- archive info ----------------------------------------------------------------------------


def archive_info_key(stanza: str) -> str:
    return f"{stanza}/archive.info"


def check_archive_info(
    repo: Repository, stanza: str, system_identifier: str, *, create: dict | None = None
) -> dict:
    """The stanza's archive info; refuses a cluster with another system identifier.

    ``create`` (version, segment size, ...) writes the record when the stanza has none yet."""
    key = archive_info_key(stanza)
    if repo.exists(key):
        info = repo.get_json(key)
        if str(info["system_identifier"]) != str(system_identifier):
            raise SystemIdMismatch(
                f"the repository {repo.url} holds the archive of another cluster under "
                f"{stanza!r} (system identifier {info['system_identifier']}, this cluster has "
                f"{system_identifier})",
                hint="use another repository or cluster name, or remove the old archive with "
                "`pgpitr cluster delete-backup NAME --force`",
            )
        return info
    if create is None:
        raise NotFound(f"the repository {repo.url} has no archive for cluster {stanza!r}")
    info = {"system_identifier": str(system_identifier), **create, **repo.encryption_record()}
    archive_index.start(repo, stanza)  # before any push: the index of an empty archive
    repo.put_json(key, info)
    return info


def system_identifier_of(datadir: Path) -> str:
    """Read pg_control's first field (uint64, native order) without running pg_controldata."""
    with open(datadir / "global" / "pg_control", "rb") as f:
        return str(int.from_bytes(f.read(8), "little"))


# -- push and fetch --------------------------------------------------------------------------


@dataclass(frozen=True)
class PushResult:
    name: str
    key: str
    size: int
    stored: int
    already_there: bool


def push_file(
    repo: Repository,
    stanza: str,
    path: Path,
    level: int = 3,
    journal: archive_index.Journal | None = None,
) -> PushResult:
    """Archive one WAL file.  Returns only once it is durably stored *and indexed*.

    The one entry point of every pusher (archive_command, its worker, a WAL streamer): it keeps
    the catalog index (pgpitr/wal/index/).  With a ``journal`` the file is added to it,
    and the caller flushes the journal before acknowledging the file (the push worker does, once
    per batch); without one, the file is recorded here, in a delta of its own.

    The same content under the same name succeeds without writing (and is indexed again: a
    pusher killed between the store and the index record left it unindexed); a different
    content fails with WalConflict and leaves the stored copy untouched."""
    result, content = _store(repo, stanza, path, level)
    sha = result.key.rsplit("-", 1)[1][: -len(".zst")]
    if journal is not None:
        journal.add(result.name, sha, content)
    else:
        archive_index.record_pushed(repo, stanza, [(result.name, sha, content)])
    return result


def _store(
    repo: Repository, stanza: str, path: Path, level: int
) -> tuple[PushResult, bytes | None]:
    """Store one WAL file; the result, and a history file's content (kept in the index)."""
    name = path.name
    if not WAL_FILE_RE.match(name):
        raise ValueError(f"{name!r} is not a WAL file name")
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        # Mapped, not read: compressed where the page cache holds it, without a 16 MB copy.
        # PostgreSQL leaves a .ready file alone until it is archived.
        with (
            mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else nullcontext(b"") as data
        ):
            content = bytes(data) if name.endswith(".history") else None
            frame = document_frame(data, level)
            sha256 = hashlib.sha256(frame).hexdigest()
            existing = stored_versions(repo, stanza, name)
            for key, stored_sha in existing:
                if stored_sha == sha256 or repo.get_document(key, stored_sha) == data[:]:
                    return PushResult(name, key, size, 0, True), content
    if existing:
        raise WalConflict(
            f"WAL file {name} is already archived in {repo.url} with different content "
            f"({existing[0][0]}); the stored copy is kept",
            hint="two clusters may be archiving into the same stanza; check the cluster names",
        )
    key = object_key(stanza, name, sha256)
    return PushResult(name, key, size, repo.put_frame(key, frame), False), content


def streamed_partial_name(segment: str, extent: int) -> str:
    return f"{segment}.{extent:08X}.partial"


def streamed_partials(repo: Repository, stanza: str, segment: str) -> list[tuple[str, str, int]]:
    """(key, sha256, extent) of every stored streamed partial of ``segment``, longest last."""
    found = []
    for info in repo.list(f"{wal_dir(stanza, segment)}/{segment}."):
        parsed = split_object_key(info.key)
        match = STREAMED_PARTIAL_RE.match(parsed[0]) if parsed else None
        if parsed and match and match["segment"] == segment:
            found.append((info.key, parsed[1], int(match["extent"], 16)))
    return sorted(found, key=lambda found: found[2])


def remove_streamed_partials(repo: Repository, stanza: str) -> int:
    """Remove every streamed partial of a stanza (streaming turned off, once archive_command has
    the segment they were part of): none is left behind."""
    removed = 0
    for info in list(repo.list(f"{stanza}/wal/")):
        parsed = split_object_key(info.key)
        if parsed and STREAMED_PARTIAL_RE.match(parsed[0]):
            repo.delete(info.key)
            removed += 1
    return removed


def fetch_file(repo: Repository, stanza: str, name: str, destination: Path) -> int:
    """Restore one WAL file to ``destination`` (atomically), verifying its checksums.

    A segment that was streamed but not completed yet is handed over as its newest partial,
    under the segment's own name: replay reads it to its last record and, with no segment after
    it, ends recovery there (a restore to ``latest`` reaches commits a second old).

    Not fsynced: replay reads it from the page cache, an interrupted restore is discarded whole,
    and the end-of-recovery checkpoint makes what replay wrote durable."""
    versions = stored_versions(repo, stanza, name)
    if not versions and SEGMENT_RE.match(name):
        versions = [(key, sha) for key, sha, _ in streamed_partials(repo, stanza, name)[-1:]]
    if not versions:
        raise NotFound(f"WAL file {name} is not in the archive of {stanza!r}")
    key, sha256 = versions[0]
    data = repo.get_document(key, sha256)
    write_atomic(destination, data, durable=False)
    return len(data)


def following_segments(name: str, segment_size: int, count: int) -> list[str]:
    """The names of the ``count`` segments after ``name`` on the same timeline."""
    if not SEGMENT_RE.match(name):
        return []
    segment = Segment.parse(name, segment_size)
    names = []
    for _ in range(count):
        segment = segment.next()
        names.append(segment.name(segment_size))
    return names
