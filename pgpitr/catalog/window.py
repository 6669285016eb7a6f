"""The recoverable window: each backup's WAL chain and the times a restore can reach.

The window of a backup runs from its stop time (the consistency point, measured after
pg_basebackup returned, so never early) to the last commit found in the unbroken chain of archived
segments that starts at the backup's start segment.  PostgreSQL (13+) refuses to finish a recovery
whose target time it did not reach, and it reaches a time only by seeing a commit after it (at or
after it, exclusive: the restore plan refuses the last commit's own time inclusive): so the
window ends at the last commit, and a missing segment ends it at the last commit before
the gap.  The window never claims a time a restore cannot reach.

The other targets are positions in that same chain (``Chain``): an LSN or a restore point is
reachable from a backup when it lies between the backup's stop LSN and the end of its chain, on its
timeline path; a transaction id decides like an LSN, by its commit's LSN.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pgpitr.catalog.backups import broken_links, list_backups
from pgpitr.catalog.records import last_commit
from pgpitr.catalog.timelines import chain_end, on_path, segment_at, timeline_path
from pgpitr.catalog.walindex import WalIndex, wal_index
from pgpitr.errors import NotFound, RepositoryError
from pgpitr.manifest import BackupManifest
from pgpitr.repository import Repository
from pgpitr.wal import archive
from pgpitr.wal import index as archive_index

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Chain:
    """The archived WAL one completed backup can replay: from its start segment, unbroken,
    along its timeline path (what recovery_target_timeline=latest follows)."""

    backup: BackupManifest
    path: list[tuple[int, int]]
    end: archive.Segment  # the last segment of the unbroken chain
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
        start = archive.segment_of(b.start_lsn_int, b.timeline, index.segment_size)
        path = timeline_path(index, b.timeline)
        try:
            end = _checked_end(index, start, path, every_segment)
        except NotFound:
            continue
        chains.append(Chain(b, path, end, index.segment_size))
    return chains


def _checked_end(
    index: WalIndex, start: archive.Segment, path: list[tuple[int, int]], every_segment: bool
) -> archive.Segment:
    size = index.segment_size
    if index.can_look():
        index.look(segment_at(path, start.number, size))
    end = chain_end(index, start, path)
    while index.can_look():
        needed = [end, segment_at(path, end.number + 1, size)]
        if every_segment:
            per_log = archive.segments_per_log(size)
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
            archive_index.record_checked(repo, stanza, started)
            checked_at = started
        except RepositoryError as exc:
            log.debug("full check of %s not recorded: %s", stanza, exc.message)
    checked = datetime.fromtimestamp(checked_at, UTC) if checked_at is not None else None
    return Window(backups, chain_ranges(repo, index, bindir, chains), chains, broken, checked)


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
