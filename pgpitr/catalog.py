"""What the repository holds for one cluster: backups, the WAL chain, the recoverable window.

The window of a backup runs from its stop time (the consistency point, measured after
pg_basebackup returned, so never early) to the last commit found in the unbroken chain of archived
segments that starts at the backup's start segment.  PostgreSQL (13+) refuses to finish a recovery
whose target time it did not reach, and it reaches a time only by seeing a commit after it (at or
after it, exclusive: the restore plan refuses the last commit's own time inclusive): so the
window ends at the last commit, and a missing segment ends it at the last commit before
the gap.  The window never claims a time a restore cannot reach.

The other targets are positions in that same chain (``Chain``): an LSN or a restore point is
reachable from a backup when it lies between the backup's stop LSN and the end of its chain, on its
timeline path; a transaction id is found by reading the chain's commit records
(``find_transaction``), and its commit's LSN decides like an LSN.

An incremental backup (PostgreSQL 17+) restores only with every backup it was taken against:
its *lineage* (``lineage``), from the full backup through each parent to itself, oldest first.
("Chain" above is a backup's WAL; the lineage is its backups.)  A backup counts in the window
only when every link of its lineage is Completed and its data object is in the repository
(``unusable`` says why one does not); ``dependents`` are the backups whose lineage runs through
a backup, which is deleted or expired only together with them.
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
#: How many segments back from the archive's end a transaction id is looked for: each costs a
#: fetch and a pg_waldump run (~0.1 s for 16 MB), so a scan stops at about half a minute.
XID_SEARCH_DEPTH = 256
_XACT_RECORD = re.compile(
    r"tx:\s*(?P<tx>\d+), lsn: (?P<lsn>[0-9A-F]+/[0-9A-F]+), prev [^,]*, desc: "
    r"(?P<kind>COMMIT|ABORT)(?P<prepared>_PREPARED)?(?: (?P<pxid>\d+):)? "
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC(?P<rest>[^\n]*)"
)
_ANY_RECORD_LSN = re.compile(r"\blsn: ([0-9A-F]+/[0-9A-F]+),")


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


def lineage(backups: list[BackupManifest], name: str) -> list[BackupManifest]:
    """The backups ``name`` restores from, the full one first and ``name`` last; a link that
    is not listed ends it early (``unusable`` names it)."""
    by_name = {b.name: b for b in backups}
    links: list[BackupManifest] = []
    current = by_name.get(name)
    while current is not None and current.name not in {b.name for b in links}:
        links.append(current)
        current = by_name.get(current.parent) if current.parent else None
    return links[::-1]


def dependents(backups: list[BackupManifest], name: str) -> list[str]:
    """Every backup whose lineage runs through ``name`` (not ``name`` itself), newest first:
    the order in which they can be removed without ever leaving an orphan behind."""
    found = [
        b
        for b in backups
        if b.name != name and any(link.name == name for link in lineage(backups, b.name))
    ]
    return [b.name for b in sorted(found, key=lambda b: (b.start_time, b.name), reverse=True)]


def unusable(backups: list[BackupManifest], present: set[str] | None = None) -> dict[str, str]:
    """Completed backups a restore cannot use, and why: a link of the lineage Failed, running
    or missing, or (when ``present``, the names whose data object exists, is given) a link's
    data gone."""
    by_name = {b.name: b for b in backups}
    reasons: dict[str, str] = {}
    for b in backups:
        if not b.completed:
            continue
        current: BackupManifest | None = b
        while current is not None:
            if present is not None and current.name not in present:
                own = current.name == b.name
                reasons[b.name] = (
                    "its data is missing from the repository"
                    if own
                    else f"its parent {current.name} has no data in the repository"
                )
                break
            if not current.parent:
                break
            parent = by_name.get(current.parent)
            if parent is None:
                reasons[b.name] = f"its parent {current.parent} is missing"
                break
            if not parent.completed:
                reasons[b.name] = f"its parent {parent.name} is {parent.status}"
                break
            current = parent
    return reasons


def present_data(repo: Repository, stanza: str) -> set[str]:
    """Names of the backups whose data object is in the repository (one listing)."""
    found = set()
    for info in repo.list(f"{stanza}/backups/"):
        if info.key.endswith(("/base.tar.zst", "/base.tar")):
            found.add(info.key.split("/")[-2])
    return found


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
    #: segment name -> key of its newest streamed partial (pgpitr/walstream.py), for segments
    #: being streamed that are not complete yet: a chain may end in one, never pass through it
    partials: dict[str, str] = field(default_factory=dict)

    def has(self, segment: wal.Segment) -> bool:
        return segment.name(self.segment_size) in self.objects

    def has_partial(self, segment: wal.Segment) -> bool:
        return segment.name(self.segment_size) in self.partials

    def key(self, name: str) -> str:
        """The object to read for a segment: the complete one, else its newest partial."""
        return self.objects.get(name) or self.partials[name]

    def timelines(self) -> set[int]:
        found = {int(n[:8], 16) for n in self.objects if wal.SEGMENT_RE.match(n)}
        return found | set(self.history)


def wal_index(repo: Repository, stanza: str, segment_size: int) -> WalIndex:
    index = WalIndex(segment_size)
    for info in repo.list(f"{stanza}/wal/"):
        parsed = wal.split_object_key(info.key)
        if parsed:
            index.objects[parsed[0]] = info.key
    extents: dict[str, int] = {}
    for name, key in index.objects.items():
        partial = wal.STREAMED_PARTIAL_RE.match(name)
        if partial and int(partial["extent"], 16) >= extents.get(partial["segment"], -1):
            extents[partial["segment"]] = int(partial["extent"], 16)
            index.partials[partial["segment"]] = key
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
    """The last segment of the unbroken chain from ``start``, following ``path``: a segment
    still being streamed ends it (its newest partial).

    Raises NotFound when even the start segment is missing."""

    def segment_at(number: int) -> wal.Segment:
        tli = path[0][0]
        for timeline, begin in path:
            if begin // index.segment_size <= number:
                tli = timeline
        return wal.Segment(tli, number)

    current = segment_at(start.number)
    if not index.has(current):
        if index.has_partial(current):
            return current
        raise NotFound(f"WAL segment {current.name(index.segment_size)} is not archived")
    while True:
        following = segment_at(current.number + 1)
        if not index.has(following):
            return following if index.has_partial(following) else current
        current = following


def _segment_name(index: WalIndex, timeline: int, number: int) -> str | None:
    """The archived name of segment ``number`` of a chain ending on ``timeline``: an earlier
    segment of the chain may be on a parent timeline (the newest one that has it)."""
    name = wal.Segment(timeline, number).name(index.segment_size)
    if name in index.objects or name in index.partials:
        return name
    candidates = [n for n in index.objects if n[8:] == name[8:] and len(n) == 24]
    return max(candidates) if candidates else None


def last_commit(
    repo: Repository, index: WalIndex, bindir: Path, end: wal.Segment, floor: int
) -> datetime | None:
    """The newest commit time in the segments ending at ``end`` (searching back to ``floor``)."""
    with tempfile.TemporaryDirectory(prefix="pgpitr-waldump-") as tmp:
        number = end.number
        while number >= max(floor, end.number - COMMIT_SEARCH_DEPTH):
            segment = wal.Segment(end.timeline, number)
            name = segment.name(index.segment_size)
            if name not in index.objects and name not in index.partials:
                # an earlier segment of this chain may be on a parent timeline
                candidates = [n for n in index.objects if n[8:] == name[8:] and len(n) == 24]
                if not candidates:
                    return None
                name = max(candidates)
            path = Path(tmp, name)
            path.write_bytes(repo.get_document(index.key(name)))
            times = commit_times(bindir, path, int(name[:8], 16))
            path.unlink()
            if times:
                return max(times)
            number -= 1
    return None


@dataclass(frozen=True)
class XactRecord:
    """A COMMIT or ABORT record of a top-level transaction, as pg_waldump shows it."""

    xid: int
    lsn: int
    committed: bool
    time: datetime
    subxacts: tuple[int, ...] = ()


def transaction_records(bindir: Path, segment: Path, timeline: int) -> list[XactRecord]:
    """The COMMIT/ABORT records that start in ``segment`` (one that ends in the next segment is
    read too when that file lies beside it)."""
    result = run(
        waldump_command(bindir, segment, timeline=timeline), env={"TZ": "UTC"}, check=False
    )
    found = []
    for m in _XACT_RECORD.finditer(result.stdout):
        subxacts: tuple[int, ...] = ()
        sub = re.search(r"subxacts:((?: \d+)+)", m["rest"])
        if sub:
            subxacts = tuple(int(x) for x in sub.group(1).split())
        found.append(
            XactRecord(
                xid=int(m["pxid"] or m["tx"]),
                lsn=wal.lsn_to_int(m["lsn"]),
                committed=m["kind"] == "COMMIT",
                time=datetime.fromisoformat(m["time"]).replace(tzinfo=UTC),
                subxacts=subxacts,
            )
        )
    return found


@dataclass(frozen=True)
class XidSearch:
    """What a search for a transaction id found, and which segments it read."""

    xid: int
    record: XactRecord | None
    #: the top-level transaction when ``xid`` was one of its subtransactions
    parent: XactRecord | None
    first_segment: str | None  # the oldest segment read
    last_segment: str | None  # the newest
    #: every segment from the floor was read (False: the depth bound stopped the search)
    complete: bool
    newest_xid: int | None  # the highest transaction id seen finishing


def find_transaction(
    repo: Repository,
    index: WalIndex,
    bindir: Path,
    end: wal.Segment,
    floor: int,
    xid: int,
    depth: int | None = None,
) -> XidSearch:
    """Look for the COMMIT or ABORT of ``xid`` in the segments from ``end`` back to ``floor``
    (a segment number), newest first, reading at most ``depth`` segments (XID_SEARCH_DEPTH)."""
    depth = XID_SEARCH_DEPTH if depth is None else depth
    first = last = None
    newest: int | None = None
    with tempfile.TemporaryDirectory(prefix="pgpitr-waldump-") as tmp:
        number, read = end.number, 0
        following: Path | None = None
        while number >= floor and read < depth:
            name = _segment_name(index, end.timeline, number)
            if name is None:
                break
            path = Path(tmp, name)
            path.write_bytes(repo.get_document(index.key(name)))
            records = transaction_records(bindir, path, int(name[:8], 16))
            if following is not None:
                following.unlink()  # kept beside this one for a record across the boundary
            following = path
            read += 1
            last = last or name
            first = name
            for record in records:
                newest = max(newest or 0, record.xid)
            for record in reversed(records):
                if record.xid == xid:
                    return XidSearch(xid, record, None, first, last, True, newest)
                if xid in record.subxacts:
                    return XidSearch(xid, None, record, first, last, True, newest)
            number -= 1
        return XidSearch(xid, None, None, first, last, number < floor, newest)


def last_record_lsn(repo: Repository, index: WalIndex, bindir: Path, segment: str) -> int | None:
    """The start LSN of the last WAL record in an archived segment (what recovery to an LSN can
    reach: the rest of a switched segment is zeros)."""
    with tempfile.TemporaryDirectory(prefix="pgpitr-waldump-") as tmp:
        path = Path(tmp, segment)
        path.write_bytes(repo.get_document(index.key(segment)))
        argv = waldump_command(bindir, path, timeline=int(segment[:8], 16))
        argv.remove("--rmgr")
        argv.remove("Transaction")
        result = run(argv, env={"TZ": "UTC"}, check=False)
    found = _ANY_RECORD_LSN.findall(result.stdout)
    return wal.lsn_to_int(found[-1]) if found else None


def commit_times(bindir: Path, segment: Path, timeline: int) -> list[datetime]:
    result = run(
        waldump_command(bindir, segment, timeline=timeline), env={"TZ": "UTC"}, check=False
    )
    return [
        datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC)
        for m in _XACT_TIME.finditer(result.stdout)
    ]


# -- the chains ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Chain:
    """The archived WAL one completed backup can replay: from its start segment, unbroken,
    along its timeline path (what recovery_target_timeline=latest follows)."""

    backup: BackupManifest
    path: list[tuple[int, int]]
    end: wal.Segment  # the last segment of the unbroken chain
    segment_size: int

    @property
    def consistent(self) -> bool:
        """Whether the backup's own WAL is all archived (else it can never become consistent)."""
        return self.end.number >= self.backup.stop_lsn_int // self.segment_size

    @property
    def end_lsn(self) -> int:
        """Where the archived chain ends: the end of its last segment."""
        return (self.end.number + 1) * self.segment_size

    def reaches(self, lsn: int, timeline: int | None = None) -> bool:
        """Whether recovery from this backup passes ``lsn`` (on ``timeline``, when given)."""
        if not self.consistent or not self.backup.stop_lsn_int <= lsn <= self.end_lsn:
            return False
        return timeline is None or on_path(self.path, timeline, lsn)


def on_path(path: list[tuple[int, int]], timeline: int, lsn: int) -> bool:
    """Whether position ``lsn`` of ``timeline`` is on the timeline path (not on a branch that a
    later timeline of the path left behind)."""
    for i, (tli, begin) in enumerate(path):
        if tli == timeline:
            switch = path[i + 1][1] if i + 1 < len(path) else None
            return lsn >= begin and (switch is None or lsn <= switch)
    return False


def backup_chains(index: WalIndex, backups: list[BackupManifest]) -> list[Chain]:
    """One chain per completed backup whose start segment is archived, oldest backup first."""
    chains = []
    for b in backups:
        if not b.completed:
            continue
        assert b.timeline is not None
        start = wal.segment_of(b.start_lsn_int, b.timeline, index.segment_size)
        path = timeline_path(index, b.timeline)
        try:
            end = chain_end(index, start, path)
        except NotFound:
            continue
        chains.append(Chain(b, path, end, index.segment_size))
    return chains


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
    #: the archived chain of each completed backup (LSN, transaction and restore point targets)
    chains: list[Chain] = field(default_factory=list)
    #: completed backups that cannot be restored, and why ("its parent X is Failed")
    unusable: dict[str, str] = field(default_factory=dict)

    @property
    def usable(self) -> list[BackupManifest]:
        """Completed backups whose whole lineage is Completed and stored."""
        return [b for b in self.backups if b.completed and b.name not in self.unusable]

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
    # an incremental chosen by name comes without its parents: the lineage needs all of them
    everything = backups if all(b.parent is None for b in backups) else list_backups(repo, stanza)
    broken = unusable(everything, present_data(repo, stanza))
    broken = {name: why for name, why in broken.items() if name in {b.name for b in backups}}
    completed = [b for b in backups if b.completed and b.name not in broken]
    if bindir is None and completed:
        from pgpitr.postgres import binaries

        bindir = binaries.resolve(completed[-1].pg_version or None)
    if bindir is None or not completed:
        return Window(backups, [], unusable=broken)
    index = wal_index(repo, stanza, completed[0].wal_segment_size)
    chains = backup_chains(index, completed)
    return Window(backups, chain_ranges(repo, index, bindir, chains), chains, broken)


def backup_ranges(
    repo: Repository, stanza: str, bindir: Path, backups: list[BackupManifest]
) -> list[Range]:
    """One range per usable backup (its whole lineage Completed and stored) whose WAL chain
    reaches a commit after its stop time."""
    broken = unusable(list_backups(repo, stanza), present_data(repo, stanza))
    backups = [b for b in backups if b.completed and b.name not in broken]
    if not backups:
        return []
    index = wal_index(repo, stanza, backups[0].wal_segment_size)
    return chain_ranges(repo, index, bindir, backup_chains(index, backups))


def chain_ranges(
    repo: Repository, index: WalIndex, bindir: Path, chains: list[Chain]
) -> list[Range]:
    ranges, ends = [], {}
    for chain in chains:
        b = chain.backup
        if not chain.consistent:
            continue  # the backup's own WAL is not all archived: it cannot become consistent
        stop = b.stop_lsn_int // index.segment_size
        if chain.end not in ends:
            ends[chain.end] = last_commit(repo, index, bindir, chain.end, stop)
        commit = ends[chain.end]
        if commit is not None and b.stop_time is not None and commit >= b.stop_time:
            ranges.append(Range(b.name, b.stop_time, commit, chain.end.name(index.segment_size)))
    return ranges


def merge(ranges: list[Range]) -> list[tuple[datetime, datetime]]:
    merged: list[list[datetime]] = []
    for r in sorted(ranges, key=lambda r: r.start):
        if merged and r.start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], r.end)
        else:
            merged.append([r.start, r.end])
    return [(a, b) for a, b in merged]
