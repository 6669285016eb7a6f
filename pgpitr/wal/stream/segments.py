"""A segment pg_receivewal is writing: how much of it is written (``written_extent``), and that
much of it stored in the repository as its streamed partial (``push_partial``)."""

from __future__ import annotations

import hashlib
import mmap
import os
from pathlib import Path

from pgpitr.repository import Repository
from pgpitr.repository.base import document_frame
from pgpitr.wal import archive

PAGE = 8192  # XLOG_BLCKSZ: every page written starts with a non-zero magic number


def written_extent(path: Path) -> int:
    """How many bytes of a segment pg_receivewal has written: it pads a new segment with zeros
    and writes pages in order, so the written pages are a prefix (found by bisection on their
    magic numbers), and the last one ends at its last non-zero byte."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < PAGE:
            return 0
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            low, high = 0, size // PAGE  # pages [0, low) written; [high, end) not
            while low < high:
                middle = (low + high) // 2
                if data[middle * PAGE : middle * PAGE + 2] != b"\0\0":
                    low = middle + 1
                else:
                    high = middle
            if low == 0:
                return 0
            last = data[(low - 1) * PAGE : low * PAGE]
            return (low - 1) * PAGE + len(last.rstrip(b"\0"))


def older_timeline_segments(directory: Path, timeline: int) -> list[Path]:
    """The segments in DIRECTORY, whole or partial, of timelines before TIMELINE."""
    return [
        Path(entry.path)
        for entry in os.scandir(directory)
        if archive.WAL_FILE_RE.match(entry.name)
        and not entry.name.endswith(".history")
        and int(entry.name[:8], 16) < timeline
    ]


def push_partial(repo: Repository, stanza: str, path: Path, extent: int, level: int = 3) -> str:
    """Store the segment being streamed as its partial of ``extent`` bytes; its key."""
    data = path.read_bytes()
    frame = document_frame(data, level)
    name = archive.streamed_partial_name(path.name[:24], extent)
    key = archive.object_key(stanza, name, hashlib.sha256(frame).hexdigest())
    repo.put_frame(key, frame)
    return key
