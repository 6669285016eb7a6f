"""Timeline math: history files, the timeline path to a target, and the end of a WAL chain."""

from __future__ import annotations

from pgpitr.catalog.walindex import WalIndex
from pgpitr.errors import NotFound
from pgpitr.wal import archive


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


def segment_at(path: list[tuple[int, int]], number: int, segment_size: int) -> archive.Segment:
    """Segment ``number`` of the chain that follows ``path``: on the newest timeline of the
    path that had begun by then."""
    tli = path[0][0]
    for timeline, begin in path:
        if begin // segment_size <= number:
            tli = timeline
    return archive.Segment(tli, number)


def chain_end(
    index: WalIndex, start: archive.Segment, path: list[tuple[int, int]]
) -> archive.Segment:
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
            end = archive.Segment(current.timeline, last)
            return following if index.has_partial(following) else end
        current = following


def segment_name(index: WalIndex, timeline: int, number: int) -> str | None:
    """The archived name of segment ``number`` of a chain ending on ``timeline``: an earlier
    segment of the chain may be on a parent timeline (the newest one that has it)."""
    name = archive.Segment(timeline, number).name(index.segment_size)
    if name in index.objects or name in index.partials:
        return name
    copies = index.copies(number)
    return archive.Segment(copies[0], number).name(index.segment_size) if copies else None


def on_path(path: list[tuple[int, int]], timeline: int, lsn: int) -> bool:
    """Whether position ``lsn`` of ``timeline`` is on the timeline path (not on a branch that a
    later timeline of the path left behind)."""
    for i, (tli, begin) in enumerate(path):
        if tli == timeline:
            switch = path[i + 1][1] if i + 1 < len(path) else None
            return lsn >= begin and (switch is None or lsn <= switch)
    return False
