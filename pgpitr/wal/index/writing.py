"""Writing to the index: a new stanza's empty index (``start``), the ``Journal`` of pushed files
flushed as one delta per timeline, and the ``record_*`` writers (pushed, dropped, repaired,
checked)."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterable
from typing import Any

from pgpitr.repository.base import Repository
from pgpitr.wal.index.state import _CHECKED, BASE, VERSION, _listing, _timeline_dir, prefix


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
