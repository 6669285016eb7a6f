"""The catalog index: what a stanza's WAL archive holds, readable in a bounded number of objects.

Without it, every describe, restore plan and window refresh LISTs the whole archive (100 pages
per 100,000 segments on S3).  The index keeps, per stanza and timeline::

    STANZA/index/base.json                              the index exists (written by a rebuild)
    STANZA/index/TTTTTTTT/summary.json                  the compacted state of one timeline
    STANZA/index/TTTTTTTT/delta-<ns>-<random>.json      one batch of changes since then
    STANZA/index/checked-<ns>.json                      when every chain's WAL was last listed

A *summary* holds the timeline's segments as runs of consecutive numbers (so its size grows with
the gaps, not with the segments), the other files (history, ``.partial``, ``.backup``) with their
checksums, the history file's text, and the names of the deltas already folded into it.  A
*delta* is what one batch changed: files added (name and checksum), and segments dropped.

Writers
    Every WAL pusher goes through ``pgpitr.wal.push_file``: that is the one entry point.  Given a
    ``Journal`` it adds the file to it, and whoever drives the pushes (the push worker in
    pgpitr/wal/spool.py) calls ``Journal.flush`` once per batch *before* acknowledging any file of
    the batch, so that nothing acknowledged is missing from the index.  Without a journal,
    push_file records the file itself (one delta per file): a new pusher (a WAL streamer) that
    calls push_file gets the index for free.  Whoever deletes WAL records the deletion first
    (``record_dropped``), then deletes: a crash in between leaves objects the index no longer
    claims, never a claim without an object.

Readers
    ``load`` reads one LIST of ``STANZA/index/``, the summaries and the deltas not folded yet.
    When the index is absent (no ``base.json``: a stanza archived before the index existed) or
    unreadable (damaged, another segment size), it is rebuilt from a listing of the WAL
    (``rebuild``; ``pgpitr repository reindex`` does it on demand).  The index is a hint, never
    the truth: pgpitr/catalog/ lists the log directories that the window's start and end rely
    on, and a restore (or the window refresh) every directory its chain runs through, before
    trusting it.  A listed directory that disagrees is written back (``record_repair``: the
    same kind of delta as retention's drops, named with the listing's start time), and a check
    of every chain's directories is recorded as ``checked-<ns>.json`` (``record_checked``), whose
    time a reader learns from the LIST of ``STANZA/index/`` it makes anyway.

Compaction
    A pusher (at the end of its worker's life) or a reader that may write folds the deltas of a
    timeline into its summary once there are COMPACT_AT of them.  Every object is written whole
    through the repository's atomic write, and deltas are named uniquely, so a kill -9 anywhere
    leaves the old state or the new one.  A delta is deleted only by a later compaction, once the
    summary that folded it has been in place for GRACE seconds: a reader or a slow compactor that
    read the older summary still finds the delta it needs.  Concurrent compactions may both write
    the summary; the one written last wins, and the deltas the other folded but it did not are
    still there (not deleted: they were not folded by the summary a compaction started from).

All objects go through the Repository API (put_json, get_json, list, delete), so a repository
wrapper (encryption) wraps the index too.  This module imports only the standard library and the
repository base: the WAL commands import it.
"""

from __future__ import annotations

import bisect
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pgpitr.errors import ChecksumMismatch, NotFound, RepositoryError, TamperedObject
from pgpitr.repository.base import Repository

log = logging.getLogger(__name__)

VERSION = 1
#: Unfolded deltas of one timeline that make a compaction worth its requests.
COMPACT_AT = 16
#: Seconds a summary stays in place before the deltas it folded are deleted.
GRACE = 300.0
BASE = "base.json"
SUMMARY = "summary.json"

# The naming of pgpitr/wal/archive.py (object_key): repeated here because wal imports the
# repository, never the other way round.
_SEGMENT = re.compile(r"^[0-9A-F]{24}\Z")
_OBJECT = re.compile(r"^(?P<name>.+)-(?P<sha>[0-9a-f]{64})\.zst\Z")
#: a segment being streamed (wal.STREAMED_PARTIAL_RE, pgpitr/wal/stream/): never indexed, as
#: it changes every second; the window finds it in the listed log directory of a chain's end
_STREAMED_PARTIAL = re.compile(r"^[0-9A-F]{24}\.[0-9A-F]{8}\.partial\Z")
_DELTA = re.compile(r"^delta-\d{20}-[0-9a-f]{8}\.json\Z")
_TIMELINE_DIR = re.compile(r"^[0-9A-F]{8}\Z")
#: when the stanza's WAL was last listed whole along every chain (``record_checked``): the time
#: is in the name, so a reader learns it from the listing it makes anyway, at no extra request
_CHECKED = re.compile(r"^checked-(?P<ns>\d{20})\.json\Z")
#: A segment number past any real one: "drop every segment".
EVERYTHING = 1 << 62


def prefix(stanza: str) -> str:
    return f"{stanza}/index/"


def _timeline_dir(stanza: str, timeline: int) -> str:
    return f"{stanza}/index/{timeline:08X}"


def _number(name: str, segment_size: int) -> int:
    """The segment number of a 24-hex name (or its 16-hex log/seg tail)."""
    tail = name[-16:] if len(name) == 16 else name[8:24]
    return int(tail[:8], 16) * (0x100000000 // segment_size) + int(tail[8:16], 16)


# -- one timeline ------------------------------------------------------------------------------


@dataclass
class TimelineIndex:
    """What the index says one timeline holds."""

    timeline: int
    #: sorted, disjoint, inclusive [first, last] runs of segment numbers
    runs: list[list[int]] = field(default_factory=list)
    #: history, .partial and .backup files: name -> sha256 of the stored object
    files: dict[str, str] = field(default_factory=dict)
    #: sha256 of segments named by the deltas not folded yet (keys known without a listing)
    recent: dict[str, str] = field(default_factory=dict)
    #: the text of the timeline's history file, when it has one
    history: str | None = None
    segment_size: int = 0

    def contains(self, number: int) -> bool:
        i = bisect.bisect_right(self.runs, [number, EVERYTHING]) - 1
        return i >= 0 and self.runs[i][0] <= number <= self.runs[i][1]

    def run_at(self, number: int) -> list[int] | None:
        i = bisect.bisect_right(self.runs, [number, EVERYTHING]) - 1
        if i >= 0 and self.runs[i][0] <= number <= self.runs[i][1]:
            return self.runs[i]
        return None

    def add(self, number: int) -> None:
        runs = self.runs
        i = bisect.bisect_right(runs, [number, EVERYTHING]) - 1
        if i >= 0 and runs[i][0] <= number <= runs[i][1]:
            return
        joins_left = i >= 0 and runs[i][1] == number - 1
        joins_right = i + 1 < len(runs) and runs[i + 1][0] == number + 1
        if joins_left and joins_right:
            runs[i][1] = runs[i + 1][1]
            del runs[i + 1]
        elif joins_left:
            runs[i][1] = number
        elif joins_right:
            runs[i + 1][0] = number
        else:
            runs.insert(i + 1, [number, number])

    def remove(self, number: int) -> None:
        run = self.run_at(number)
        if run is None:
            return
        i = self.runs.index(run)
        first, last = run
        pieces = [p for p in ([first, number - 1], [number + 1, last]) if p[0] <= p[1]]
        self.runs[i : i + 1] = pieces

    def drop_below(self, number: int) -> None:
        """Forget every segment (and .partial/.backup file) before segment ``number``."""
        self.runs = [[max(a, number), b] for a, b in self.runs if b >= number]
        self.files = {
            name: sha
            for name, sha in self.files.items()
            if name.endswith(".history") or not _below(name, number, self.segment_size)
        }
        self.recent = {
            n: s for n, s in self.recent.items() if not _below(n, number, self.segment_size)
        }

    def segment_count(self) -> int:
        return sum(b - a + 1 for a, b in self.runs)

    def to_summary(self, folded: list[str]) -> dict[str, Any]:
        return {
            "version": VERSION,
            "timeline": self.timeline,
            "segment_size": self.segment_size,
            "runs": self.runs,
            "files": self.files,
            "history": self.history,
            "folded": sorted(folded),
            "written": time.time(),
        }

    @classmethod
    def from_summary(cls, data: dict[str, Any], segment_size: int) -> TimelineIndex:
        if data.get("version") != VERSION or int(data["segment_size"]) != segment_size:
            raise ValueError("another version or segment size")
        return cls(
            int(data["timeline"]),
            [list(map(int, r)) for r in data["runs"]],
            dict(data.get("files") or {}),
            history=data.get("history"),
            segment_size=segment_size,
        )

    def apply(self, delta: dict[str, Any]) -> None:
        """One delta's changes, in the order a writer made them: drops, then additions."""
        size = self.segment_size
        if delta.get("drop_below") is not None:
            self.drop_below(int(delta["drop_below"]))
        for name in delta.get("drop") or ():
            if _SEGMENT.match(name):
                self.remove(_number(name, size))
                self.recent.pop(name, None)
            else:
                self.files.pop(name, None)
        for name, sha in (delta.get("add") or {}).items():
            if _SEGMENT.match(name):
                self.add(_number(name, size))
                self.recent[name] = sha
            else:
                self.files[name] = sha
        for text in (delta.get("history") or {}).values():
            self.history = text


def _below(name: str, number: int, segment_size: int) -> bool:
    return bool(_SEGMENT.match(name[:24])) and _number(name[:24], segment_size) < number


# -- the whole stanza --------------------------------------------------------------------------


@dataclass
class IndexState:
    """What the index says a stanza's archive holds, timeline by timeline."""

    segment_size: int
    timelines: dict[int, TimelineIndex] = field(default_factory=dict)
    #: built from a listing of the WAL just now (the index was absent or unreadable)
    rebuilt: bool = False
    #: objects read to build it (summaries and deltas; a rebuild counts its listing as one)
    objects_read: int = 0
    #: when every log directory of every chain was last listed (``record_checked``), as a
    #: Unix time; None when never
    checked_at: float | None = None

    def timeline(self, timeline: int) -> TimelineIndex:
        found = self.timelines.get(timeline)
        if found is None:
            found = self.timelines[timeline] = TimelineIndex(
                timeline, segment_size=self.segment_size
            )
        return found


def load(repo: Repository, stanza: str, segment_size: int, *, write: bool = True) -> IndexState:
    """The index of ``stanza``; rebuilt from a listing when absent or unreadable (and, with
    ``write``, stored so that the next reader finds it).  With ``write``, a timeline with
    COMPACT_AT deltas or more is compacted on the way."""
    for _attempt in range(3):
        listing = _listing(repo, stanza)
        if BASE not in listing.get(None, set()):
            return rebuild(repo, stanza, segment_size, write=write, explicit=False)
        try:
            state, pending = _read(repo, stanza, segment_size, listing)
            state.checked_at = _checked_at(listing)
        except NotFound:
            continue  # a delta was folded and deleted while we read: read again
        except (ChecksumMismatch, ValueError, KeyError, TypeError) as exc:
            if isinstance(exc, TamperedObject):
                # rebuilt all the same, but someone changes the repository: say so
                log.warning("%s; the index is rebuilt from a listing", exc.message)
            return rebuild(repo, stanza, segment_size, write=write, explicit=False)
        if write:
            for timeline, (summary, deltas) in pending.items():
                if len(deltas) >= COMPACT_AT:
                    try:
                        _compact(
                            repo, stanza, state.timelines[timeline], summary, listing[timeline]
                        )
                    except RepositoryError as exc:  # a reader's favour to the next: optional
                        log.debug("index of %s not compacted: %s", stanza, exc.message)
        return state
    return rebuild(repo, stanza, segment_size, write=write, explicit=False)


def _listing(repo: Repository, stanza: str) -> dict[int | None, set[str]]:
    """Names under STANZA/index/, by timeline (None: the top level)."""
    start = len(prefix(stanza))
    found: dict[int | None, set[str]] = {}
    for info in repo.list(prefix(stanza)):
        rest = info.key[start:]
        head, _, name = rest.partition("/")
        if not name:
            found.setdefault(None, set()).add(head)
        elif _TIMELINE_DIR.match(head):
            found.setdefault(int(head, 16), set()).add(name)
    return found


def _checked_at(listing: dict[int | None, set[str]]) -> float | None:
    found = [int(m["ns"]) for n in listing.get(None, ()) if (m := _CHECKED.match(n))]
    return max(found) / 1e9 if found else None


def _read(
    repo: Repository, stanza: str, segment_size: int, listing: dict[int | None, set[str]]
) -> tuple[IndexState, dict[int, tuple[dict | None, list[str]]]]:
    state = IndexState(segment_size)
    pending: dict[int, tuple[dict | None, list[str]]] = {}
    for timeline, names in listing.items():
        if timeline is None:
            continue
        directory = _timeline_dir(stanza, timeline)
        summary = None
        if SUMMARY in names:
            summary = repo.get_json(f"{directory}/{SUMMARY}")
            state.objects_read += 1
            tli = TimelineIndex.from_summary(summary, segment_size)
        else:
            tli = TimelineIndex(timeline, segment_size=segment_size)
        folded = set(summary["folded"]) if summary else set()
        deltas = sorted(n for n in names if _DELTA.match(n) and n not in folded)
        for name in deltas:
            tli.apply(repo.get_json(f"{directory}/{name}"))
            state.objects_read += 1
        state.timelines[timeline] = tli
        pending[timeline] = (summary, deltas)
    return state, pending


def _compact(
    repo: Repository, stanza: str, tli: TimelineIndex, summary: dict | None, names: set[str]
) -> None:
    """Fold every delta read into a new summary; delete those the old summary folded, once it
    has been in place for GRACE seconds (deletes first: the old summary still names them)."""
    directory = _timeline_dir(stanza, tli.timeline)
    deltas = {n for n in names if _DELTA.match(n)}
    old = set(summary["folded"]) & deltas if summary else set()
    if summary and time.time() - float(summary.get("written", 0)) > GRACE:
        for name in sorted(old):
            repo.delete(f"{directory}/{name}")
        deltas -= old
    repo.put_json(f"{directory}/{SUMMARY}", tli.to_summary(sorted(deltas)))


def compact(repo: Repository, stanza: str, segment_size: int) -> IndexState:
    """Read the index, compacting what needs it (what a push worker does before it exits)."""
    return load(repo, stanza, segment_size, write=True)


def rebuild(
    repo: Repository,
    stanza: str,
    segment_size: int,
    *,
    write: bool = True,
    explicit: bool = True,
) -> IndexState:
    """The index from a listing of the WAL; stored (summaries, then base.json) with ``write``.

    The deltas present before the listing are folded: the files they add were stored before
    they were written, so the listing has them; the drops they record are applied (a deletion
    records its drop before deleting, so the listing may still show what it drops)."""
    before = _listing(repo, stanza)
    drops: dict[int, list[dict]] = {}
    folded: dict[int, list[str]] = {}
    for timeline, names in before.items():
        if timeline is None:
            continue
        directory = _timeline_dir(stanza, timeline)
        for name in sorted(n for n in names if _DELTA.match(n)):
            try:
                delta = repo.get_json(f"{directory}/{name}")
            except (NotFound, ChecksumMismatch, ValueError):
                continue  # deleted meanwhile, or damaged: the listing below is the truth
            folded.setdefault(timeline, []).append(name)
            if delta.get("drop_below") is not None or delta.get("drop"):
                drops.setdefault(timeline, []).append({**delta, "add": {}, "history": {}})
    listed_at = time.time()
    state = IndexState(segment_size, rebuilt=True, objects_read=1, checked_at=_checked_at(before))
    numbers: dict[int, list[int]] = {}
    history_keys: dict[int, str] = {}
    for info in repo.list(f"{stanza}/wal/"):
        match = _OBJECT.match(info.key.rsplit("/", 1)[-1])
        if not match:
            continue
        name, sha = match.group("name"), match.group("sha")
        if name.endswith(".history"):
            timeline = int(name[:8], 16)
            state.timeline(timeline).files[name] = sha
            history_keys[timeline] = info.key
        elif _SEGMENT.match(name):
            numbers.setdefault(int(name[:8], 16), []).append(_number(name, segment_size))
        elif _SEGMENT.match(name[:24]) and not _STREAMED_PARTIAL.match(name):
            state.timeline(int(name[:8], 16)).files[name] = sha
    for timeline, found in numbers.items():
        tli = state.timeline(timeline)
        for number in sorted(set(found)):
            if tli.runs and tli.runs[-1][1] == number - 1:
                tli.runs[-1][1] = number
            else:
                tli.runs.append([number, number])
    for timeline, key in history_keys.items():
        state.timeline(timeline).history = repo.get_document(key).decode()
    for timeline, deltas in drops.items():
        for delta in deltas:
            state.timeline(timeline).apply(delta)
    if write:
        try:
            for timeline in set(state.timelines) | {t for t in before if t is not None}:
                tli = state.timeline(timeline)
                repo.put_json(
                    f"{_timeline_dir(stanza, timeline)}/{SUMMARY}",
                    tli.to_summary(folded.get(timeline, [])),
                )
            repo.put_json(f"{prefix(stanza)}{BASE}", {"version": VERSION, "built": time.time()})
            # the whole WAL was just listed: as full a check as a refresh's
            record_checked(repo, stanza, listed_at, before.get(None, set()))
            state.checked_at = listed_at
        except RepositoryError:
            if explicit:
                raise
            # a reader without write access (describe as another user) still gets its answer
            log.debug("index of %s rebuilt but not stored", stanza)
    return state


# -- writing -----------------------------------------------------------------------------------


def start(repo: Repository, stanza: str) -> None:
    """Mark a new stanza's (empty) index as complete: its archive has nothing yet, so the
    deltas its pushes write are all there is, and no reader ever needs to rebuild it."""
    repo.put_json(f"{prefix(stanza)}{BASE}", {"version": VERSION, "built": time.time()})


def _delta_name(at_ns: int | None = None) -> str:
    return f"delta-{at_ns or time.time_ns():020d}-{secrets.token_hex(4)}.json"


class Journal:
    """Index records of pushed WAL files, written as one delta per timeline at each ``flush``.

    Thread-safe: the push worker's threads add to it as their pushes complete."""

    def __init__(self, repo: Repository, stanza: str) -> None:
        self.repo = repo
        self.stanza = stanza
        self._pending: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.deltas_written = 0

    def add(self, name: str, sha256: str, content: bytes | None = None) -> None:
        """A file stored (or found stored) under ``name`` with the object checksum ``sha256``;
        ``content`` is a history file's text, kept in the index so readers need not fetch it."""
        timeline = int(name[:8], 16)
        with self._lock:
            delta = self._pending.setdefault(timeline, {"add": {}, "history": {}})
            delta["add"][name] = sha256
            if name.endswith(".history") and content is not None:
                delta["history"][name] = content.decode(errors="replace")

    def flush(self) -> int:
        """Write what was added since the last flush: one delta per timeline.  Returns how
        many deltas were written; raises the repository's error (nothing is then acknowledged:
        the files are pushed again, found stored, and added again)."""
        with self._lock:
            pending, self._pending = self._pending, {}
        written = 0
        items = sorted(pending.items())
        try:
            for timeline, delta in items:
                key = f"{_timeline_dir(self.stanza, timeline)}/{_delta_name()}"
                self.repo.put_json(key, {"version": VERSION, **delta, "written": time.time()})
                written += 1
        except BaseException:
            with self._lock:  # kept for the next flush, which the caller may try
                for timeline, delta in items[written:]:
                    again = self._pending.setdefault(timeline, {"add": {}, "history": {}})
                    again["add"].update(delta["add"])
                    again["history"].update(delta["history"])
            raise
        self.deltas_written += written
        return written


def record_pushed(
    repo: Repository, stanza: str, files: Iterable[tuple[str, str, bytes | None]]
) -> int:
    """Record stored files (name, object sha256, history text) at once: one delta per timeline."""
    journal = Journal(repo, stanza)
    for name, sha, content in files:
        journal.add(name, sha, content)
    return journal.flush()


def record_dropped(
    repo: Repository,
    stanza: str,
    timelines: Iterable[int],
    *,
    below: int | None = None,
    names: Iterable[str] = (),
) -> None:
    """Record, before deleting them, that WAL files are going: every segment (and .partial,
    .backup file) before segment number ``below`` on ``timelines``, and the files ``names``."""
    by_timeline: dict[int, list[str]] = {}
    for name in names:
        by_timeline.setdefault(int(name[:8], 16), []).append(name)
    for timeline in sorted(set(timelines) | set(by_timeline)):
        delta = {
            "version": VERSION,
            "drop_below": below,
            "drop": sorted(by_timeline.get(timeline, [])),
            "written": time.time(),
        }
        repo.put_json(f"{_timeline_dir(stanza, timeline)}/{_delta_name()}", delta)


def record_repair(
    repo: Repository,
    stanza: str,
    timeline: int,
    *,
    listed_at_ns: int,
    add: dict[str, str],
    drop: Iterable[str],
) -> None:
    """Correct the index of one timeline after a listing of one of its log directories showed
    segments it lacked (``add``: name -> object sha256) or lacked segments it had (``drop``).

    The delta is named with the time the listing *started*, not the time it is written: deltas
    apply in name order, so a push that stored a segment after the listing began (and so may be
    missing from it) writes its own delta later than this one, and its addition wins over a
    drop made from the older listing.  Same kind of delta as retention's drops."""
    delta = {
        "version": VERSION,
        "drop_below": None,
        "drop": sorted(drop),
        "add": dict(sorted(add.items())),
        "history": {},
        "repair": True,
        "written": time.time(),
    }
    repo.put_json(f"{_timeline_dir(stanza, timeline)}/{_delta_name(listed_at_ns)}", delta)


def record_checked(
    repo: Repository, stanza: str, at: float, names: Iterable[str] | None = None
) -> None:
    """Record that every log directory of every chain of ``stanza`` was listed (and so the index
    repaired) at Unix time ``at``, and delete the older records (``names``: the top level of the
    index as listed, when the caller has it; listed here otherwise)."""
    repo.put_json(
        f"{prefix(stanza)}checked-{int(at * 1e9):020d}.json", {"version": VERSION, "checked": at}
    )
    if names is None:
        names = _listing(repo, stanza).get(None, set())
    for name in names:
        match = _CHECKED.match(name)
        if match and int(match["ns"]) < int(at * 1e9):
            repo.delete(f"{prefix(stanza)}{name}")  # gone already (another checker): no error


def indexed_timelines(repo: Repository, stanza: str) -> set[int]:
    """The timelines the index has a directory for (one LIST)."""
    return {t for t in _listing(repo, stanza) if t is not None}


def objects(repo: Repository, stanza: str) -> Iterator[str]:
    """Every key of the index (what a full delete of the stanza removes with the rest)."""
    for info in repo.list(prefix(stanza)):
        yield info.key
