"""Reading a stanza's index (``load``: the summaries and the deltas not folded yet), and
compacting a timeline's deltas into its summary on the way."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from pgpitr.errors import ChecksumMismatch, NotFound, RepositoryError, TamperedObject
from pgpitr.repository.base import Repository
from pgpitr.wal.index.rebuilding import rebuild
from pgpitr.wal.index.state import (
    _DELTA,
    BASE,
    SUMMARY,
    IndexState,
    TimelineIndex,
    _checked_at,
    _listing,
    _timeline_dir,
    prefix,
)

log = logging.getLogger(__name__)

#: Unfolded deltas of one timeline that make a compaction worth its requests.
COMPACT_AT = 16
#: Seconds a summary stays in place before the deltas it folded are deleted.
GRACE = 300.0


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


def indexed_timelines(repo: Repository, stanza: str) -> set[int]:
    """The timelines the index has a directory for (one LIST)."""
    return {t for t in _listing(repo, stanza) if t is not None}


def objects(repo: Repository, stanza: str) -> Iterator[str]:
    """Every key of the index (what a full delete of the stanza removes with the rest)."""
    for info in repo.list(prefix(stanza)):
        yield info.key
