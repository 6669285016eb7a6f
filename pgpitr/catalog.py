"""What the repository holds for one cluster: backups, the WAL chain, the recoverable window.

The window of a backup runs from its stop time (the consistency point, measured after
pg_basebackup returned, so never early) to the last commit found in the unbroken chain of archived
segments that starts at the backup's start segment.  PostgreSQL (13+) refuses to finish a recovery
whose target time it did not reach, and it reaches a time only by seeing a commit at or after it:
so the window ends at the last commit, and a missing segment ends it at the last commit before
the gap.  The window never claims a time a restore cannot reach.
"""

from __future__ import annotations

import re
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pgpitr import wal
from pgpitr.errors import NotFound
from pgpitr.manifest import BackupManifest, manifest_key
from pgpitr.osutil import process_alive
from pgpitr.postgres.command import run, waldump_command
from pgpitr.repository import Repository

_XACT_TIME = re.compile(
    r"desc: (?:COMMIT|ABORT|COMMIT_PREPARED|ABORT_PREPARED) "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)
#: How many segments back from a chain's end to look for a commit before giving up.
COMMIT_SEARCH_DEPTH = 32


def _alive(manifest: BackupManifest) -> bool:
    """Whether the process an InProgress backup names still runs (on this host; elsewhere,
    it is taken at its word)."""
    if manifest.host != socket.gethostname():
        return True
    return bool(manifest.pid) and process_alive(int(manifest.pid or 0))


def _loaded(data: dict) -> BackupManifest:
    manifest = BackupManifest.from_dict(data)
    if manifest.status == "InProgress" and not _alive(manifest):
        return manifest.replace(status="Failed")  # its process died: it never completes
    return manifest


def list_backups(repo: Repository, stanza: str) -> list[BackupManifest]:
    """Every backup of a stanza, oldest first; one whose process died is Failed."""
    found = []
    for info in repo.list(f"{stanza}/backups/"):
        if info.key.endswith("/backup.json"):
            found.append(_loaded(repo.get_json(info.key)))
    return sorted(found, key=lambda b: (b.start_time, b.name))


def get_backup(repo: Repository, stanza: str, name: str) -> BackupManifest:
    key = manifest_key(stanza, name)
    if not repo.exists(key):
        raise NotFound(
            f"backup {name!r} of cluster {stanza!r} does not exist",
            hint=f"see `pgpitr cluster list-backup {stanza}`",
        )
    return _loaded(repo.get_json(key))


def save_backup(repo: Repository, stanza: str, manifest: BackupManifest) -> None:
    repo.put_json(manifest_key(stanza, manifest.name), manifest.to_dict())


def leftover_stanza(repo: Repository, stanza: str) -> bool:
    """True when a stanza holds no backup and no WAL segment, only its archive info or history
    files: what `delete-backup --force` leaves of a deleted cluster.  Those would mislead a new
    cluster of the same name (another system identifier, old timelines), so creating one removes
    them."""
    found = False
    for info in repo.list(f"{stanza}/"):
        found = True
        name = info.key.rsplit("/", 1)[-1]
        if info.key.endswith("/backup.json") or wal.SEGMENT_RE.match(name.split("-", 1)[0]):
            return False
    return found


# -- the WAL archive -------------------------------------------------------------------------


@dataclass
class WalIndex:
    """Names of the archived WAL files of one stanza, and their object keys."""

    segment_size: int
    objects: dict[str, str] = field(default_factory=dict)  # file name -> key
    history: dict[int, list[tuple[int, int]]] = field(default_factory=dict)

    def has(self, segment: wal.Segment) -> bool:
        return segment.name(self.segment_size) in self.objects

    def timelines(self) -> set[int]:
        found = {int(n[:8], 16) for n in self.objects if wal.SEGMENT_RE.match(n)}
        return found | set(self.history)


def wal_index(repo: Repository, stanza: str, segment_size: int) -> WalIndex:
    index = WalIndex(segment_size)
    for info in repo.list(f"{stanza}/wal/"):
        parsed = wal.split_object_key(info.key)
        if parsed:
            index.objects[parsed[0]] = info.key
    for name, key in index.objects.items():
        if name.endswith(".history"):
            index.history[int(name[:8], 16)] = parse_history(repo.get_document(key).decode())
    return index


def parse_history(text: str) -> list[tuple[int, int]]:
    """(parent timeline, switch LSN) lines of a timeline history file."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            entries.append((int(parts[0]), wal.lsn_to_int(parts[1])))
    return entries


def timeline_path(index: WalIndex, start_timeline: int) -> list[tuple[int, int]]:
    """(timeline, first LSN) from the backup's timeline to the newest one descending from it,
    the way recovery_target_timeline=latest follows them."""
    best = [(start_timeline, 0)]
    for tli, entries in index.history.items():
        parents = [parent for parent, _ in entries]
        if tli > best[-1][0] and start_timeline in parents:
            path, begin = [], 0
            for parent, switch in entries:
                if parent >= start_timeline:
                    path.append((parent, begin))
                begin = switch
            path.append((tli, begin))
            best = path
    return best


def chain_end(index: WalIndex, start: wal.Segment, path: list[tuple[int, int]]) -> wal.Segment:
    """The last segment of the unbroken chain from ``start``, following ``path``.

    Raises NotFound when even the start segment is missing."""

    def segment_at(number: int) -> wal.Segment:
        tli = path[0][0]
        for timeline, begin in path:
            if begin // index.segment_size <= number:
                tli = timeline
        return wal.Segment(tli, number)

    current = segment_at(start.number)
    if not index.has(current):
        raise NotFound(f"WAL segment {current.name(index.segment_size)} is not archived")
    while True:
        following = segment_at(current.number + 1)
        if not index.has(following):
            return current
        current = following


def last_commit(
    repo: Repository, index: WalIndex, bindir: Path, end: wal.Segment, floor: int
) -> datetime | None:
    """The newest commit time in the segments ending at ``end`` (searching back to ``floor``)."""
    with tempfile.TemporaryDirectory(prefix="pgpitr-waldump-") as tmp:
        number = end.number
        while number >= max(floor, end.number - COMMIT_SEARCH_DEPTH):
            segment = wal.Segment(end.timeline, number)
            name = segment.name(index.segment_size)
            if name not in index.objects:
                # an earlier segment of this chain may be on a parent timeline
                candidates = [n for n in index.objects if n[8:] == name[8:] and len(n) == 24]
                if not candidates:
                    return None
                name = max(candidates)
            path = Path(tmp, name)
            path.write_bytes(repo.get_document(index.objects[name]))
            times = commit_times(bindir, path, int(name[:8], 16))
            path.unlink()
            if times:
                return max(times)
            number -= 1
    return None


def commit_times(bindir: Path, segment: Path, timeline: int) -> list[datetime]:
    result = run(
        waldump_command(bindir, segment, timeline=timeline), env={"TZ": "UTC"}, check=False
    )
    return [
        datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC)
        for m in _XACT_TIME.finditer(result.stdout)
    ]


# -- the window ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """Times a restore can reach starting from one backup."""

    backup: str
    start: datetime
    end: datetime
    end_segment: str


@dataclass(frozen=True)
class Window:
    """What a stanza can be restored to: its backups, each one's range, and their union."""

    backups: list[BackupManifest]
    ranges: list[Range]

    @property
    def periods(self) -> list[tuple[datetime, datetime]]:
        """The recoverable time, as disjoint (start, end) periods, oldest first."""
        return merge(self.ranges)

    @property
    def start_backup(self) -> str | None:
        """The backup the recoverable window starts from: the oldest one with a range."""
        return min(self.ranges, key=lambda r: r.start).backup if self.ranges else None

    def fitting(self, target: datetime) -> list[Range]:
        return [r for r in self.ranges if r.start <= target <= r.end]


def recoverable_window(
    repo: Repository,
    stanza: str,
    bindir: Path | None = None,
    backups: list[BackupManifest] | None = None,
) -> Window:
    """The window of ``stanza``: from ``backups`` (all of its backups when None).  Commit
    times are read with the pg_waldump of ``bindir``, by default the installed one of the
    backups' major (pg_waldump reads only its own major's WAL)."""
    backups = list_backups(repo, stanza) if backups is None else backups
    completed = [b for b in backups if b.completed]
    if bindir is None and completed:
        from pgpitr.postgres import binaries

        bindir = binaries.resolve(completed[-1].pg_version or None)
    if bindir is None:
        return Window(backups, [])
    return Window(backups, backup_ranges(repo, stanza, bindir, backups))


def backup_ranges(
    repo: Repository, stanza: str, bindir: Path, backups: list[BackupManifest]
) -> list[Range]:
    """One range per completed backup whose WAL chain reaches a commit after its stop time."""
    backups = [b for b in backups if b.completed]
    if not backups:
        return []
    segment_size = backups[0].wal_segment_size
    index = wal_index(repo, stanza, segment_size)
    ranges, ends = [], {}
    for b in backups:
        assert b.timeline is not None
        start = wal.segment_of(b.start_lsn_int, b.timeline, segment_size)
        stop = wal.segment_of(b.stop_lsn_int, b.timeline, segment_size)
        path = timeline_path(index, b.timeline)
        try:
            end = chain_end(index, start, path)
        except NotFound:
            continue
        if end.number < stop.number:
            continue  # the backup's own WAL is not all archived: it cannot become consistent
        if end not in ends:
            ends[end] = last_commit(repo, index, bindir, end, stop.number)
        commit = ends[end]
        if commit is not None and b.stop_time is not None and commit >= b.stop_time:
            ranges.append(Range(b.name, b.stop_time, commit, end.name(segment_size)))
    return ranges


def merge(ranges: list[Range]) -> list[tuple[datetime, datetime]]:
    merged: list[list[datetime]] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if merged and r.start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], r.end)
        else:
            merged.append([r.start, r.end])
    return [(a, b) for a, b in merged]
