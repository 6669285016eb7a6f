"""What the archived WAL says, read with pg_waldump: commit times and transaction records.

A transaction id is found by reading a chain's commit records (``find_transaction``); the last
commit of a chain (``last_commit``) ends the recoverable window.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pgpitr.catalog.timelines import segment_name
from pgpitr.catalog.walindex import WalIndex
from pgpitr.postgres.command import run, waldump_command
from pgpitr.repository import Repository
from pgpitr.wal import archive
from pgpitr.wal.lsn import Lsn

_XACT_TIME = re.compile(
    r"desc: (?:COMMIT|ABORT|COMMIT_PREPARED|ABORT_PREPARED) "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC"
)


#: How many segments back from a chain's end to look for a commit before giving up.
COMMIT_SEARCH_DEPTH = 32


#: How many segments back from the archive's end a transaction id is looked for: each costs a
#: fetch and a pg_waldump run (~0.1 s for 16 MB), so a scan stops at about half a minute.
XID_SEARCH_DEPTH = 256


_XACT_RECORD = re.compile(
    r"tx:\s*(?P<tx>\d+), lsn: (?P<lsn>[0-9A-F]+/[0-9A-F]+), prev [^,]*, desc: "
    r"(?P<kind>COMMIT|ABORT)(?P<prepared>_PREPARED)?(?: (?P<pxid>\d+):)? "
    r"(?P<time>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC(?P<rest>[^\n]*)"
)


_ANY_RECORD_LSN = re.compile(r"\blsn: ([0-9A-F]+/[0-9A-F]+),")


def last_commit(
    repo: Repository, index: WalIndex, bindir: Path, end: archive.Segment, floor: int
) -> datetime | None:
    """The newest commit time in the segments ending at ``end`` (searching back to ``floor``)."""
    with tempfile.TemporaryDirectory(prefix="pgpitr-waldump-") as tmp:
        number = end.number
        while number >= max(floor, end.number - COMMIT_SEARCH_DEPTH):
            # an earlier segment of this chain may be on a parent timeline
            name = segment_name(index, end.timeline, number)
            if name is None:
                return None
            path = Path(tmp, name)
            path.write_bytes(index.read(repo, name))
            times = commit_times(bindir, path, int(name[:8], 16))
            path.unlink()
            if times:
                return max(times)
            number -= 1
    return None


@dataclass(frozen=True)
class XactRecord:
    """A COMMIT or ABORT record of a top-level transaction, as pg_waldump shows it."""

    xid: int
    lsn: Lsn
    committed: bool
    time: datetime
    subxacts: tuple[int, ...] = ()


def transaction_records(bindir: Path, segment: Path, timeline: int) -> list[XactRecord]:
    """The COMMIT/ABORT records that start in ``segment`` (one that ends in the next segment is
    read too when that file lies beside it)."""
    result = run(
        waldump_command(bindir, segment, timeline=timeline), env={"TZ": "UTC"}, check=False
    )
    found = []
    for m in _XACT_RECORD.finditer(result.stdout):
        subxacts: tuple[int, ...] = ()
        sub = re.search(r"subxacts:((?: \d+)+)", m["rest"])
        if sub:
            subxacts = tuple(int(x) for x in sub.group(1).split())
        found.append(
            XactRecord(
                xid=int(m["pxid"] or m["tx"]),
                lsn=Lsn.parse(m["lsn"]),
                committed=m["kind"] == "COMMIT",
                time=datetime.fromisoformat(m["time"]).replace(tzinfo=UTC),
                subxacts=subxacts,
            )
        )
    return found


@dataclass(frozen=True)
class XidSearch:
    """What a search for a transaction id found, and which segments it read."""

    xid: int
    record: XactRecord | None
    #: the top-level transaction when ``xid`` was one of its subtransactions
    parent: XactRecord | None
    first_segment: str | None  # the oldest segment read
    last_segment: str | None  # the newest
    #: every segment from the floor was read (False: the depth bound stopped the search)
    complete: bool
    newest_xid: int | None  # the highest transaction id seen finishing


def find_transaction(
    repo: Repository,
    index: WalIndex,
    bindir: Path,
    end: archive.Segment,
    floor: int,
    xid: int,
    depth: int | None = None,
) -> XidSearch:
    """Look for the COMMIT or ABORT of ``xid`` in the segments from ``end`` back to ``floor``
    (a segment number), newest first, reading at most ``depth`` segments (XID_SEARCH_DEPTH)."""
    depth = XID_SEARCH_DEPTH if depth is None else depth
    first = last = None
    newest: int | None = None
    with tempfile.TemporaryDirectory(prefix="pgpitr-waldump-") as tmp:
        number, read = end.number, 0
        following: Path | None = None
        while number >= floor and read < depth:
            name = segment_name(index, end.timeline, number)
            if name is None:
                break
            path = Path(tmp, name)
            path.write_bytes(index.read(repo, name))
            records = transaction_records(bindir, path, int(name[:8], 16))
            if following is not None:
                following.unlink()  # kept beside this one for a record across the boundary
            following = path
            read += 1
            last = last or name
            first = name
            for record in records:
                newest = max(newest or 0, record.xid)
            for record in reversed(records):
                if record.xid == xid:
                    return XidSearch(xid, record, None, first, last, True, newest)
                if xid in record.subxacts:
                    return XidSearch(xid, None, record, first, last, True, newest)
            number -= 1
        return XidSearch(xid, None, None, first, last, number < floor, newest)


def last_record_lsn(repo: Repository, index: WalIndex, bindir: Path, segment: str) -> Lsn | None:
    """The start LSN of the last WAL record in an archived segment (what recovery to an LSN can
    reach: the rest of a switched segment is zeros)."""
    with tempfile.TemporaryDirectory(prefix="pgpitr-waldump-") as tmp:
        path = Path(tmp, segment)
        path.write_bytes(index.read(repo, segment))
        argv = waldump_command(bindir, path, timeline=int(segment[:8], 16))
        argv.remove("--rmgr")
        argv.remove("Transaction")
        result = run(argv, env={"TZ": "UTC"}, check=False)
    found = _ANY_RECORD_LSN.findall(result.stdout)
    return Lsn.parse(found[-1]) if found else None


def commit_times(bindir: Path, segment: Path, timeline: int) -> list[datetime]:
    result = run(
        waldump_command(bindir, segment, timeline=timeline), env={"TZ": "UTC"}, check=False
    )
    return [
        datetime.fromisoformat(m.group(1)).replace(tzinfo=UTC)
        for m in _XACT_TIME.finditer(result.stdout)
    ]
