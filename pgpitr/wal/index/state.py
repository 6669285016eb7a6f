"""The index's stored form: where its objects are and how they are named, what one timeline holds
(``TimelineIndex``: runs of segments, other files, its summary and a delta applied to it) and a
stanza's whole index (``IndexState``)."""

from __future__ import annotations

import bisect
import re
import time
from dataclasses import dataclass, field
from typing import Any

from pgpitr.repository.base import Repository

VERSION = 1
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
