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

import logging
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pgpitr import wal
from pgpitr.errors import NotFound, RepositoryError
from pgpitr.manifest import BackupManifest, damage_key, manifest_key, read_manifest
from pgpitr.osutil import process_alive
from pgpitr.postgres.command import run, waldump_command
from pgpitr.repository import Repository
from pgpitr.repository import index as catalog_index

_XACT_TIME = re.compile(
    r"desc: (?:COMMIT|ABORT|COMMIT_PREPARED|ABORT_PREPARED) "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)
log = logging.getLogger(__name__)

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
_TIMELINE = re.compile(r"^[0-9A-F]{8}")


def _alive(manifest: BackupManifest) -> bool:
    """Whether the process an InProgress backup names still runs (on this host; elsewhere,
    it is taken at its word)."""
    if manifest.host != socket.gethostname():
        return True
    return bool(manifest.pid) and process_alive(int(manifest.pid or 0))


def _loaded(repo: Repository, stanza: str, name: str) -> BackupManifest:
    manifest = read_manifest(repo, stanza, name)
    if manifest.status == "InProgress" and not _alive(manifest):
        return manifest.replace(status="Failed")  # its process died: it never completes
    return manifest


def list_backups(repo: Repository, stanza: str) -> list[BackupManifest]:
    """Every backup of a stanza, oldest first; one whose process died is Failed."""
    found = []
    folder = f"{stanza}/backups/"
    for info in repo.list(folder):
        if info.key.endswith("/backup.json"):
            found.append(_loaded(repo, stanza, info.key[len(folder) : -len("/backup.json")]))
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


def unusable(
    backups: list[BackupManifest],
    present: set[str] | None = None,
    damaged: set[str] | frozenset[str] = frozenset(),
) -> dict[str, str]:
    """Completed backups a restore cannot use, and why: a link of the lineage Failed, running
    or missing, or (when ``present``, the names whose data object exists, is given) a link's
    data gone, or a link's data found damaged by a read (``damaged``)."""
    by_name = {b.name: b for b in backups}
    reasons: dict[str, str] = {}
    for b in backups:
        if not b.completed:
            continue
        current: BackupManifest | None = b
        while current is not None:
            own = current.name == b.name
            if present is not None and current.name not in present:
                reasons[b.name] = (
                    "its data is missing from the repository"
                    if own
                    else f"its parent {current.name} has no data in the repository"
                )
                break
            if current.name in damaged:
                reasons[b.name] = (
                    "its data was found damaged (checksum mismatch); `pgpitr cluster "
                    "verify-backup` reads it again"
                    if own
                    else f"its parent {current.name} was found damaged"
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


def broken_links(
    repo: Repository, stanza: str, backups: list[BackupManifest], damage: bool = True
) -> dict[str, str]:
    """``unusable`` with what the repository holds, from one listing of the stanza's backups:
    whose data is there, and (unless ``damage`` is False: a verify reads it again) which reads
    found damaged."""
    present, damaged = set(), set()
    for info in repo.list(f"{stanza}/backups/"):
        name = info.key.split("/")[-2]
        if info.key.endswith(("/base.tar.zst", "/base.tar")):
            present.add(name)
        elif info.key == damage_key(stanza, name):
            damaged.add(name)
    return unusable(backups, present, damaged if damage else set())


def get_backup(repo: Repository, stanza: str, name: str) -> BackupManifest:
    key = manifest_key(stanza, name)
    if not repo.exists(key):
        raise NotFound(
            f"backup {name!r} of cluster {stanza!r} does not exist",
            hint=f"see `pgpitr cluster list-backup {stanza}`",
        )
    return _loaded(repo, stanza, name)


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


class WalIndex:
    """The archived WAL files of one stanza: what the catalog index says, corrected by what the
    listed log directories show.

    ``has``, ``timelines``, ``objects`` (file name -> key) and ``history`` are what the chains
    and the window read.  Built by ``wal_index`` from the catalog index
    (pgpitr/repository/index.py): segments as runs of numbers, so that a chain is followed in
    steps of runs, not of segments.  The index is a hint: ``look`` lists one log directory
    (``STANZA/wal/TTTTTTTTLLLLLLLL/``, at most 256 segments of 16 MB: one LIST page), and from
    then on what that directory holds is the truth for its segments.  Without a repository
    (a unit test) it is a plain map filled through ``objects``."""

    def __init__(
        self,
        segment_size: int,
        repo: Repository | None = None,
        stanza: str | None = None,
        state: catalog_index.IndexState | None = None,
        *,
        write: bool = True,
    ) -> None:
        self.segment_size = segment_size
        self.repo = repo
        self.stanza = stanza
        #: whether a listed directory that disagrees with the index is written back (``_repair``)
        self.write = write
        #: correcting deltas written (one per listed directory that disagreed)
        self.repairs = 0
        self.state = state or catalog_index.IndexState(segment_size)
        self.objects = _Objects(self)
        self.history: dict[int, list[tuple[int, int]]] = {}
        #: listed log directories ("TTTTTTTTLLLLLLLL"): segment name -> key, the truth
        self._listed: dict[str, dict[str, str]] = {}
        #: segment name -> key of its newest streamed partial (pgpitr/walstream.py), as the
        #: listed log directories show them: a segment still being streamed, which a chain may
        #: end in, never pass through.  Never in the catalog index: they change every second.
        self.partials: dict[str, str] = {}
        self._extents: dict[str, int] = {}
        self._per_log = wal.segments_per_log(segment_size)
        for tli, entry in self.state.timelines.items():
            if entry.history:
                self.history[tli] = parse_history(entry.history)

    # -- what the chains read -------------------------------------------------------------
    def has(self, segment: wal.Segment) -> bool:
        return self._has(segment.timeline, segment.number)

    def _has(self, timeline: int, number: int) -> bool:
        name = wal.Segment(timeline, number).name(self.segment_size)
        listed = self._listed.get(name[:16])
        if listed is not None:
            return name in listed
        entry = self.state.timelines.get(timeline)
        return entry is not None and entry.contains(number)

    def timelines(self) -> set[int]:
        found = {t for t, e in self.state.timelines.items() if e.runs}
        found |= {int(d[:8], 16) for d, names in self._listed.items() if names}
        return found | set(self.history)

    def run_end(self, segment: wal.Segment) -> int:
        """The last number of the run of consecutive segments from ``segment`` (which is
        there) on its timeline: whole runs of the index at a time, one by one in a listed
        directory."""
        tli, n = segment.timeline, segment.number
        while True:
            dir_last = (n // self._per_log + 1) * self._per_log - 1
            if wal.Segment(tli, n).name(self.segment_size)[:16] in self._listed:
                while n < dir_last and self._has(tli, n + 1):
                    n += 1
            else:
                run = self.state.timeline(tli).run_at(n)
                n = min(run[1], dir_last) if run else n
            if n < dir_last or not self._has(tli, n + 1):
                return n
            n += 1

    def copies(self, number: int) -> list[int]:
        """The timelines that have segment ``number``, highest first."""
        return sorted((t for t in self.timelines() if self._has(t, number)), reverse=True)

    # -- what exists ---------------------------------------------------------------------
    def listed(self, segment: wal.Segment) -> bool:
        """Whether the log directory of ``segment`` was listed (its truth is known)."""
        return segment.name(self.segment_size)[:16] in self._listed

    def look(self, segment: wal.Segment) -> bool:
        """List the log directory of ``segment`` (once) and say whether the segment is there."""
        name = segment.name(self.segment_size)
        if name[:16] not in self._listed and self.repo is not None:
            found: dict[str, str] = {}
            assert self.stanza is not None
            listed_at_ns = time.time_ns()
            for info in self.repo.list(f"{wal.wal_dir(self.stanza, name)}/"):
                parsed = wal.split_object_key(info.key)
                partial = wal.STREAMED_PARTIAL_RE.match(parsed[0]) if parsed else None
                if parsed and wal.SEGMENT_RE.match(parsed[0]):
                    found.setdefault(parsed[0], info.key)
                elif partial:
                    extent = int(partial["extent"], 16)
                    if extent >= self._extents.get(partial["segment"], -1):
                        self._extents[partial["segment"]] = extent
                        self.partials[partial["segment"]] = info.key
                elif parsed:
                    self.state.timeline(segment.timeline).files.setdefault(parsed[0], parsed[1])
            self._listed[name[:16]] = found
            self._repair(segment, found, listed_at_ns)
        return self.has(segment)

    def _repair(self, segment: wal.Segment, found: dict[str, str], listed_at_ns: int) -> None:
        """Make the index agree with the log directory of ``segment`` just listed (``found``:
        its segments, name -> key): the segments it has that the directory lacks are dropped,
        those it lacks are added, in memory and, with ``write``, in one correcting delta, so
        that the next reader sees the truth without listing the directory again (a describe
        lists only a chain's ends; a hole in the middle is found by a refresh or a restore).
        Best effort, as compaction is: a reader without write access keeps its answer."""
        size, tli = self.segment_size, segment.timeline
        first = segment.number - segment.number % self._per_log
        entry = self.state.timeline(tli)
        claimed = {
            wal.Segment(tli, n).name(size)
            for a, b in entry.runs
            if b >= first and a < first + self._per_log
            for n in range(max(a, first), min(b, first + self._per_log - 1) + 1)
        }
        add = {}
        for name in sorted(set(found) - claimed):
            parsed = wal.split_object_key(found[name])
            if parsed:
                add[name] = parsed[1]
        drop = sorted(claimed - set(found))
        if not add and not drop:
            return
        entry.apply({"drop": drop, "add": add})
        log.info(
            "catalog index of %s corrected from a listing of %s: %d segment(s) missing, %d found",
            self.stanza,
            segment.name(size)[:16],
            len(drop),
            len(add),
        )
        if not self.write or self.repo is None or self.stanza is None:
            return
        try:
            catalog_index.record_repair(
                self.repo, self.stanza, tli, listed_at_ns=listed_at_ns, add=add, drop=drop
            )
            self.repairs += 1
        except RepositoryError as exc:
            log.debug("index of %s not corrected: %s", self.stanza, exc.message)

    def can_look(self) -> bool:
        return self.repo is not None

    def has_partial(self, segment: wal.Segment) -> bool:
        """Whether a listed log directory shows a streamed partial of ``segment``."""
        return segment.name(self.segment_size) in self.partials

    def key(self, name: str) -> str:
        """The object key of an archived file; KeyError when it is not archived."""
        assert self.stanza is not None or name in self.objects._extra
        if name in self.objects._extra:
            return self.objects._extra[name]
        if wal.SEGMENT_RE.match(name):
            segment = wal.Segment.parse(name, self.segment_size)
            listed = self._listed.get(name[:16])
            if listed is None:
                sha = self.state.timeline(segment.timeline).recent.get(name)
                if sha is not None and self.has(segment):
                    return wal.object_key(self.stanza or "", name, sha)
                self.look(segment)
                listed = self._listed.get(name[:16], {})
            if name not in listed and name in self.partials:
                return self.partials[name]  # the complete segment is not there yet
            return listed[name]
        sha = self.state.timeline(int(name[:8], 16)).files[name]
        return wal.object_key(self.stanza or "", name, sha)


class _Objects:
    """``WalIndex.objects``: file name -> object key, answered from the index and listed
    directories.  Iterating enumerates every segment of every run: for tests and small
    archives, not for the paths that must stay flat."""

    def __init__(self, index: WalIndex) -> None:
        self._index = index
        self._extra: dict[str, str] = {}  # keys set by hand (tests), for names of any kind

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        if wal.SEGMENT_RE.match(name):
            return self._index.has(wal.Segment.parse(name, self._index.segment_size))
        if name in self._extra:
            return True
        if not _TIMELINE.match(name):
            return False
        entry = self._index.state.timelines.get(int(name[:8], 16))
        return entry is not None and name in entry.files

    def __getitem__(self, name: str) -> str:
        if name not in self:
            raise KeyError(name)
        return self._index.key(name)

    def get(self, name: str, default: str | None = None) -> str | None:
        try:
            return self[name]
        except KeyError:
            return default

    def __setitem__(self, name: str, key: str) -> None:
        self._extra[name] = key
        if wal.SEGMENT_RE.match(name):
            segment = wal.Segment.parse(name, self._index.segment_size)
            self._index.state.timeline(segment.timeline).add(segment.number)
            listed = self._index._listed.get(name[:16])
            if listed is not None:
                listed[name] = key

    def __delitem__(self, name: str) -> None:
        self._extra.pop(name, None)
        if wal.SEGMENT_RE.match(name):
            segment = wal.Segment.parse(name, self._index.segment_size)
            self._index.state.timeline(segment.timeline).remove(segment.number)
            self._index._listed.get(name[:16], {}).pop(name, None)

    def __iter__(self) -> Iterator[str]:
        ix, size = self._index, self._index.segment_size
        names = set(self._extra)
        for tli in ix.timelines():
            entry = ix.state.timeline(tli)
            for first, last in entry.runs:
                segments = (wal.Segment(tli, n) for n in range(first, last + 1))
                names.update(s.name(size) for s in segments if ix.has(s))
            names.update(entry.files)
        for listed in ix._listed.values():
            names.update(listed)
        return iter(sorted(names))

    def __len__(self) -> int:
        return sum(1 for _ in self)


def wal_index(repo: Repository, stanza: str, segment_size: int, *, write: bool = True) -> WalIndex:
    """What the catalog index says of the stanza's WAL (read in a bounded number of objects;
    rebuilt from a listing when absent, and then stored unless ``write`` is False)."""
    state = catalog_index.load(repo, stanza, segment_size, write=write)
    return WalIndex(segment_size, repo, stanza, state, write=write)


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


def segment_at(path: list[tuple[int, int]], number: int, segment_size: int) -> wal.Segment:
    """Segment ``number`` of the chain that follows ``path``: on the newest timeline of the
    path that had begun by then."""
    tli = path[0][0]
    for timeline, begin in path:
        if begin // segment_size <= number:
            tli = timeline
    return wal.Segment(tli, number)


def chain_end(index: WalIndex, start: wal.Segment, path: list[tuple[int, int]]) -> wal.Segment:
    """The last segment of the unbroken chain from ``start``, following ``path``: a run of the
    index at a time (never segment by segment: a chain may hold 100,000 of them).

    Raises NotFound when even the start segment is missing."""
    size = index.segment_size
    switches = sorted({begin // size for _, begin in path[1:]})
    current = segment_at(path, start.number, size)
    if not index.has(current):
        if index.has_partial(current):
            return current
        raise NotFound(f"WAL segment {current.name(size)} is not archived")
    while True:
        last = index.run_end(current)
        ahead = [b for b in switches if b > current.number]
        if ahead and last >= ahead[0]:
            last = ahead[0] - 1  # the path moves to the next timeline there
        following = segment_at(path, last + 1, size)
        if not index.has(following):
            # a segment still being streamed ends the chain (its newest partial)
            end = wal.Segment(current.timeline, last)
            return following if index.has_partial(following) else end
        current = following


def _segment_name(index: WalIndex, timeline: int, number: int) -> str | None:
    """The archived name of segment ``number`` of a chain ending on ``timeline``: an earlier
    segment of the chain may be on a parent timeline (the newest one that has it)."""
    name = wal.Segment(timeline, number).name(index.segment_size)
    if name in index.objects or name in index.partials:
        return name
    copies = index.copies(number)
    return wal.Segment(copies[0], number).name(index.segment_size) if copies else None


def last_commit(
    repo: Repository, index: WalIndex, bindir: Path, end: wal.Segment, floor: int
) -> datetime | None:
    """The newest commit time in the segments ending at ``end`` (searching back to ``floor``)."""
    with tempfile.TemporaryDirectory(prefix="pgpitr-waldump-") as tmp:
        number = end.number
        while number >= max(floor, end.number - COMMIT_SEARCH_DEPTH):
            # an earlier segment of this chain may be on a parent timeline
            name = _segment_name(index, end.timeline, number)
            if name is None:
                return None
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


def backup_chains(
    index: WalIndex, backups: list[BackupManifest], *, every_segment: bool = False
) -> list[Chain]:
    """One chain per completed backup whose start segment is archived, oldest backup first.

    The index is not trusted over what exists: the log directories of each chain's start
    segment, of its end and of the segment after the end are listed (``WalIndex.look``), and
    the chain is followed again until those agree, so that an object deleted behind pgpitr's
    back shrinks the chain and one the index missed extends it.  A constant number of listings
    per chain, whatever the archive's size.  With ``every_segment`` (a restore, before it
    creates anything) every log directory the chain runs through is listed: a segment missing
    in the middle then ends the chain there."""
    chains = []
    for b in backups:
        if not b.completed:
            continue
        assert b.timeline is not None
        start = wal.segment_of(b.start_lsn_int, b.timeline, index.segment_size)
        path = timeline_path(index, b.timeline)
        try:
            end = _checked_end(index, start, path, every_segment)
        except NotFound:
            continue
        chains.append(Chain(b, path, end, index.segment_size))
    return chains


def _checked_end(
    index: WalIndex, start: wal.Segment, path: list[tuple[int, int]], every_segment: bool
) -> wal.Segment:
    size = index.segment_size
    if index.can_look():
        index.look(segment_at(path, start.number, size))
    end = chain_end(index, start, path)
    while index.can_look():
        needed = [end, segment_at(path, end.number + 1, size)]
        if every_segment:
            per_log = wal.segments_per_log(size)
            first = start.number - start.number % per_log
            needed += [segment_at(path, n, size) for n in range(first, end.number, per_log)]
            # where the path changes timeline, the next timeline's directory too
            needed += [
                segment_at(path, begin // size, size)
                for _, begin in path[1:]
                if start.number <= begin // size <= end.number
            ]
        unlisted = [s for s in needed if not index.listed(s)]
        if not unlisted:
            return end
        for segment in unlisted:
            index.look(segment)
        end = chain_end(index, start, path)
    return end


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
    #: when every log directory of every chain was last listed (and the index repaired): how
    #: fresh the guarantee is that no segment is missing in the middle of a chain
    wal_checked_at: datetime | None = None

    @property
    def usable(self) -> list[BackupManifest]:
        """Completed backups whose whole lineage is Completed and stored."""
        return [b for b in self.backups if b.completed and b.name not in self.unusable]

    @property
    def latest_backup(self) -> BackupManifest | None:
        """The backup a restore to ``latest`` or ``immediate`` takes: the newest usable one that
        can become consistent (its own WAL archived, or inside it)."""
        consistent = {c.backup.name for c in self.chains if c.consistent}
        candidates = [b for b in self.usable if b.name in consistent or b.wal_in_backup]
        return max(candidates, key=lambda b: (b.start_time, b.name), default=None)

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
    *,
    every_segment: bool = False,
    write: bool = True,
) -> Window:
    """The window of ``stanza``: from ``backups`` (all of its backups when None).  Commit
    times are read with the pg_waldump of ``bindir``, by default the installed one of the
    backups' major (pg_waldump reads only its own major's WAL).  The chains are read from the
    catalog index and checked against the repository (``backup_chains``); ``every_segment``
    checks every segment (what a restore plan asks for); with ``write`` False nothing is
    written back (no rebuilt index, no repair: ``pgpitr info`` only reads)."""
    backups = list_backups(repo, stanza) if backups is None else backups
    # an incremental chosen by name comes without its parents: the lineage needs all of them
    everything = backups if all(b.parent is None for b in backups) else list_backups(repo, stanza)
    broken = broken_links(repo, stanza, everything)
    broken = {name: why for name, why in broken.items() if name in {b.name for b in backups}}
    completed = [b for b in backups if b.completed and b.name not in broken]
    if bindir is None and completed:
        from pgpitr.postgres import binaries

        bindir = binaries.resolve(completed[-1].pg_version or None)
    if bindir is None or not completed:
        return Window(backups, [], unusable=broken)
    index = wal_index(repo, stanza, completed[0].wal_segment_size, write=write)
    started = time.time()
    chains = backup_chains(index, completed, every_segment=every_segment)
    checked_at = index.state.checked_at
    every_chain = {b.name for b in completed} >= {
        b.name for b in everything if b.completed and b.name not in broken
    }
    if every_segment and every_chain:
        # every directory of every chain was listed and the index repaired: record it, so that
        # describe says how fresh that is (best effort, as the repairs are)
        try:
            catalog_index.record_checked(repo, stanza, started)
            checked_at = started
        except RepositoryError as exc:
            log.debug("full check of %s not recorded: %s", stanza, exc.message)
    checked = datetime.fromtimestamp(checked_at, UTC) if checked_at is not None else None
    return Window(backups, chain_ranges(repo, index, bindir, chains), chains, broken, checked)


def backup_ranges(
    repo: Repository, stanza: str, bindir: Path, backups: list[BackupManifest]
) -> list[Range]:
    """One range per usable backup (its whole lineage Completed and stored) whose WAL chain
    reaches a commit after its stop time."""
    broken = broken_links(repo, stanza, list_backups(repo, stanza))
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
