"""What a stanza's WAL archive holds, read through the stored index (pgpitr/catalog/index.py).

``WalIndex`` answers which segments, history and ``.partial`` files are archived on which
timeline without listing the archive; ``wal_index`` loads it (rebuilding a missing index).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator

from pgpitr.errors import NotFound, RepositoryError
from pgpitr.repository import Repository
from pgpitr.wal import archive
from pgpitr.wal import index as archive_index
from pgpitr.wal.lsn import Lsn

log = logging.getLogger(__name__)


_TIMELINE = re.compile(r"^[0-9A-F]{8}")


class WalIndex:
    """The archived WAL files of one stanza: what the catalog index says, corrected by what the
    listed log directories show.

    ``has``, ``timelines``, ``objects`` (file name -> key) and ``history`` are what the chains
    and the window read.  Built by ``wal_index`` from the catalog index
    (pgpitr/wal/index/): segments as runs of numbers, so that a chain is followed in
    steps of runs, not of segments.  The index is a hint: ``look`` lists one log directory
    (``STANZA/wal/TTTTTTTTLLLLLLLL/``, at most 256 segments of 16 MB: one LIST page), and from
    then on what that directory holds is the truth for its segments.  Without a repository
    (a unit test) it is a plain map filled through ``objects``."""

    def __init__(
        self,
        segment_size: int,
        repo: Repository | None = None,
        stanza: str | None = None,
        state: archive_index.IndexState | None = None,
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
        self.state = state or archive_index.IndexState(segment_size)
        self.objects = _Objects(self)
        self.history: dict[int, list[tuple[int, int]]] = {}
        #: listed log directories ("TTTTTTTTLLLLLLLL"): segment name -> key, the truth
        self._listed: dict[str, dict[str, str]] = {}
        #: segment name -> key of its newest streamed partial (pgpitr/wal/stream/), as the
        #: listed log directories show them: a segment still being streamed, which a chain may
        #: end in, never pass through.  Never in the catalog index: they change every second.
        self.partials: dict[str, str] = {}
        self._extents: dict[str, int] = {}
        self._per_log = archive.segments_per_log(segment_size)
        for tli, entry in self.state.timelines.items():
            if entry.history:
                self.history[tli] = parse_history(entry.history)

    # -- what the chains read -------------------------------------------------------------
    def has(self, segment: archive.Segment) -> bool:
        return self._has(segment.timeline, segment.number)

    def _has(self, timeline: int, number: int) -> bool:
        name = archive.Segment(timeline, number).name(self.segment_size)
        listed = self._listed.get(name[:16])
        if listed is not None:
            return name in listed
        entry = self.state.timelines.get(timeline)
        return entry is not None and entry.contains(number)

    def timelines(self) -> set[int]:
        found = {t for t, e in self.state.timelines.items() if e.runs}
        found |= {int(d[:8], 16) for d, names in self._listed.items() if names}
        return found | set(self.history)

    def run_end(self, segment: archive.Segment) -> int:
        """The last number of the run of consecutive segments from ``segment`` (which is
        there) on its timeline: whole runs of the index at a time, one by one in a listed
        directory."""
        tli, n = segment.timeline, segment.number
        while True:
            dir_last = (n // self._per_log + 1) * self._per_log - 1
            if archive.Segment(tli, n).name(self.segment_size)[:16] in self._listed:
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
    def listed(self, segment: archive.Segment) -> bool:
        """Whether the log directory of ``segment`` was listed (its truth is known)."""
        return segment.name(self.segment_size)[:16] in self._listed

    def look(self, segment: archive.Segment) -> bool:
        """List the log directory of ``segment`` (once) and say whether the segment is there."""
        name = segment.name(self.segment_size)
        if name[:16] not in self._listed and self.repo is not None:
            found: dict[str, str] = {}
            assert self.stanza is not None
            listed_at_ns = time.time_ns()
            for info in self.repo.list(f"{archive.wal_dir(self.stanza, name)}/"):
                parsed = archive.split_object_key(info.key)
                partial = archive.STREAMED_PARTIAL_RE.match(parsed[0]) if parsed else None
                if parsed and archive.SEGMENT_RE.match(parsed[0]):
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

    def _repair(self, segment: archive.Segment, found: dict[str, str], listed_at_ns: int) -> None:
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
            archive.Segment(tli, n).name(size)
            for a, b in entry.runs
            if b >= first and a < first + self._per_log
            for n in range(max(a, first), min(b, first + self._per_log - 1) + 1)
        }
        add = {}
        for name in sorted(set(found) - claimed):
            parsed = archive.split_object_key(found[name])
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
            archive_index.record_repair(
                self.repo, self.stanza, tli, listed_at_ns=listed_at_ns, add=add, drop=drop
            )
            self.repairs += 1
        except RepositoryError as exc:
            log.debug("index of %s not corrected: %s", self.stanza, exc.message)

    def can_look(self) -> bool:
        return self.repo is not None

    def has_partial(self, segment: archive.Segment) -> bool:
        """Whether a listed log directory shows a streamed partial of ``segment``."""
        return segment.name(self.segment_size) in self.partials

    def read(self, repo: Repository, name: str) -> bytes:
        """The archived file NAME.  A streamed partial is replaced while a reader holds its key
        (the receiver stores a longer partial, or the whole segment, then deletes the old one):
        when it is gone, its log directory is listed again and the newer object read."""
        key = self.key(name)
        try:
            return repo.get_document(key)
        except NotFound:
            if self.partials.get(name) != key:
                raise
        self._listed.pop(name[:16], None)
        self.partials.pop(name, None)
        self._extents.pop(name, None)
        self.look(archive.Segment.parse(name, self.segment_size))
        return repo.get_document(self.key(name))

    def key(self, name: str) -> str:
        """The object key of an archived file; KeyError when it is not archived."""
        assert self.stanza is not None or name in self.objects._extra
        if name in self.objects._extra:
            return self.objects._extra[name]
        if archive.SEGMENT_RE.match(name):
            segment = archive.Segment.parse(name, self.segment_size)
            listed = self._listed.get(name[:16])
            if listed is None:
                sha = self.state.timeline(segment.timeline).recent.get(name)
                if sha is not None and self.has(segment):
                    return archive.object_key(self.stanza or "", name, sha)
                self.look(segment)
                listed = self._listed.get(name[:16], {})
            if name not in listed and name in self.partials:
                return self.partials[name]  # the complete segment is not there yet
            return listed[name]
        sha = self.state.timeline(int(name[:8], 16)).files[name]
        return archive.object_key(self.stanza or "", name, sha)


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
        if archive.SEGMENT_RE.match(name):
            return self._index.has(archive.Segment.parse(name, self._index.segment_size))
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
        if archive.SEGMENT_RE.match(name):
            segment = archive.Segment.parse(name, self._index.segment_size)
            self._index.state.timeline(segment.timeline).add(segment.number)
            listed = self._index._listed.get(name[:16])
            if listed is not None:
                listed[name] = key

    def __delitem__(self, name: str) -> None:
        self._extra.pop(name, None)
        if archive.SEGMENT_RE.match(name):
            segment = archive.Segment.parse(name, self._index.segment_size)
            self._index.state.timeline(segment.timeline).remove(segment.number)
            self._index._listed.get(name[:16], {}).pop(name, None)

    def __iter__(self) -> Iterator[str]:
        ix, size = self._index, self._index.segment_size
        names = set(self._extra)
        for tli in ix.timelines():
            entry = ix.state.timeline(tli)
            for first, last in entry.runs:
                segments = (archive.Segment(tli, n) for n in range(first, last + 1))
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
    state = archive_index.load(repo, stanza, segment_size, write=write)
    return WalIndex(segment_size, repo, stanza, state, write=write)


def parse_history(text: str) -> list[tuple[int, int]]:
    """(parent timeline, switch LSN) lines of a timeline history file."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            entries.append((int(parts[0]), Lsn.parse(parts[1])))
    return entries
