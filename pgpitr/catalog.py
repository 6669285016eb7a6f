"""What the repository holds for one cluster: backups, the WAL chain, the recoverable window.

The window of a backup runs from its stop time (the consistency point, measured after
pg_basebackup returned, so never early) to the last commit found in the unbroken chain of archived
segments that starts at the backup's start segment.  PostgreSQL (13+) refuses to finish a recovery
whose target time it did not reach, and it reaches a time only by seeing a commit at or after it:
so the window ends at the last commit, and a missing segment ends it at the last commit before
the gap.  The window never claims a time a restore cannot reach.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pgpitr import backup as bk
from pgpitr import wal
from pgpitr.errors import NotFound
from pgpitr.postgres.command import run, waldump_command
from pgpitr.repository import Repository

_XACT_TIME = re.compile(
    r"desc: (?:COMMIT|ABORT|COMMIT_PREPARED|ABORT_PREPARED) "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)
#: How many segments back from a chain's end to look for a commit before giving up.
COMMIT_SEARCH_DEPTH = 32


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text)


@dataclass
class Backup:
    manifest: dict

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def cluster(self) -> str:
        return self.manifest["cluster"]

    @property
    def status(self) -> str:
        """Completed, Failed, or InProgress; an InProgress backup whose process died is Failed."""
        status = self.manifest["status"]
        if status == "InProgress" and self.manifest.get("host") == socket.gethostname():
            pid = self.manifest.get("pid")
            if not pid or not _alive(int(pid)):
                return "Failed"
        return status

    @property
    def completed(self) -> bool:
        return self.status == "Completed"

    @property
    def start_time(self) -> datetime:
        return parse_time(self.manifest["start_time"])

    @property
    def stop_time(self) -> datetime | None:
        stop = self.manifest.get("stop_time")
        return parse_time(stop) if stop else None

    @property
    def timeline(self) -> int:
        return int(self.manifest["timeline"])

    @property
    def start_lsn(self) -> int:
        return wal.lsn_to_int(self.manifest["start_lsn"])

    @property
    def stop_lsn(self) -> int:
        return wal.lsn_to_int(self.manifest["stop_lsn"])

    @property
    def expiration(self) -> datetime | None:
        value = self.manifest.get("expiration")
        return parse_time(value) if value else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_backups(repo: Repository, stanza: str) -> list[Backup]:
    """Every backup of a stanza, oldest first."""
    found = []
    for info in repo.list(f"{stanza}/backups/"):
        if info.key.endswith("/backup.json"):
            found.append(Backup(repo.get_json(info.key)))
    return sorted(found, key=lambda b: (b.manifest["start_time"], b.name))


def get_backup(repo: Repository, stanza: str, name: str) -> Backup:
    key = bk.manifest_key(stanza, name)
    if not repo.exists(key):
        raise NotFound(
            f"backup {name!r} of cluster {stanza!r} does not exist",
            hint=f"see `pgpitr cluster list-backup {stanza}`",
        )
    return Backup(repo.get_json(key))


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


def backup_ranges(
    repo: Repository, stanza: str, bindir: Path, backups: list[Backup] | None = None
) -> list[Range]:
    """One range per completed backup whose WAL chain reaches a commit after its stop time."""
    backups = [b for b in (backups or list_backups(repo, stanza)) if b.completed]
    if not backups:
        return []
    segment_size = int(backups[0].manifest.get("wal_segment_size", 16 * 1024 * 1024))
    index = wal_index(repo, stanza, segment_size)
    ranges, ends = [], {}
    for b in backups:
        start = wal.segment_of(b.start_lsn, b.timeline, segment_size)
        stop = wal.segment_of(b.stop_lsn, b.timeline, segment_size)
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
