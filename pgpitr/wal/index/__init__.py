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
wrapper (encryption) wraps the index too.  This package imports only the standard library and the
repository base: the WAL commands import it.

``state`` holds the stored form, ``loading`` the reading and compaction, ``rebuilding`` the
rebuild from a listing, ``writing`` the journal and the ``record_*`` writers.
"""

from __future__ import annotations

from pgpitr.wal.index.loading import COMPACT_AT, compact, indexed_timelines, load, objects
from pgpitr.wal.index.rebuilding import rebuild
from pgpitr.wal.index.state import BASE, EVERYTHING, IndexState, TimelineIndex, prefix
from pgpitr.wal.index.writing import (
    Journal,
    record_checked,
    record_dropped,
    record_pushed,
    record_repair,
    start,
)

__all__ = [
    "BASE",
    "COMPACT_AT",
    "EVERYTHING",
    "IndexState",
    "Journal",
    "TimelineIndex",
    "compact",
    "indexed_timelines",
    "load",
    "objects",
    "prefix",
    "rebuild",
    "record_checked",
    "record_dropped",
    "record_pushed",
    "record_repair",
    "start",
]
