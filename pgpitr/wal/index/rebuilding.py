"""The index rebuilt from a listing of the WAL (``rebuild``): when it is absent or unreadable, and
on demand (``pgpitr repository reindex``)."""

from __future__ import annotations

import logging
import time

from pgpitr.errors import ChecksumMismatch, NotFound, RepositoryError
from pgpitr.repository.base import Repository
from pgpitr.wal.index.state import (
    _DELTA,
    _OBJECT,
    _SEGMENT,
    _STREAMED_PARTIAL,
    BASE,
    SUMMARY,
    VERSION,
    IndexState,
    _checked_at,
    _listing,
    _number,
    _timeline_dir,
    prefix,
)
from pgpitr.wal.index.writing import record_checked

log = logging.getLogger(__name__)


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
