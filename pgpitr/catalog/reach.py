"""Which backup a restore target needs, checked before anything is created.

For each kind of target, the newest completed backup consistent before it whose archived,
unbroken chain of WAL reaches it (pgpitr/catalog/window.py ``Chain``): a time inside the backup's
range
of the recoverable window; an LSN between the backup's stop LSN and the last archived record; a
restore point's LSN, on the chain's timeline path; a transaction's COMMIT, found by reading the
chain's commit records (newest first, at most ``catalog.XID_SEARCH_DEPTH`` segments), decides by
its LSN.  ``latest`` and ``immediate`` take the newest backup that can become consistent.  What
cannot be reached is refused with what was checked and what to do instead.  A backup whose
lineage is broken (``catalog.unusable``) has no chain and is never chosen.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from pgpitr import timeparse
from pgpitr.catalog import records, restore_points, walindex
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import RecoveryTargetError
from pgpitr.manifest import BackupManifest
from pgpitr.repository import Repository
from pgpitr.targets import XID_SPACE, RestoreTarget
from pgpitr.wal.lsn import Lsn

log = logging.getLogger(__name__)


def backup_for(
    repo: Repository,
    stanza: str,
    bindir: Path,
    window: catalog_window.Window,
    target: RestoreTarget,
) -> tuple[BackupManifest, str]:
    """The backup to restore ``target`` from, and what the target was found to be, for a person
    ("the commit of transaction 745 at LSN 0/3000140 (…)"; empty when it says nothing more)."""
    chains = [c for c in window.chains if c.consistent]
    return _Finder(repo, stanza, bindir, window, chains, target).choose()


@dataclass
class _Finder:
    """The backup each kind of target needs, and what is wrong when there is none."""

    repo: Repository
    stanza: str
    bindir: Path
    window: catalog_window.Window
    chains: list[catalog_window.Chain]
    target: RestoreTarget

    def choose(self) -> tuple[BackupManifest, str]:
        kind = self.target.kind
        if kind == "time":
            return self._time(), ""
        if kind in ("latest", "immediate"):
            latest = self.window.latest_backup
            if latest is not None:
                return latest, ""
        if not self.chains:
            raise RecoveryTargetError(
                f"no backup of {self.stanza!r} has all of its own WAL archived, so none can "
                "become consistent",
                hint="check WAL archiving (`pgpitr cluster describe`), then take a new backup",
            )
        if kind == "lsn":
            return self._lsn(self.target.lsn_int, f"LSN {self.target.lsn}", None), ""
        if kind == "name":
            return self._point()
        return self._xid()

    def _time(self) -> BackupManifest:
        when = self.target.time
        assert when is not None
        fitting = self.window.fitting(when)
        if self.target.inclusive:
            # inclusive, recovery stops at the first commit *after* the target: at the last
            # commit's own time there is none, and PostgreSQL ends without reaching it
            at_end = [r for r in fitting if when >= r.end]
            fitting = [r for r in fitting if when < r.end]
            if at_end and not fitting:
                raise RecoveryTargetError(
                    f"{timeparse.format_kbcli(when)} ({when.isoformat()}) is the time of the "
                    f"last archived commit of {self.stanza!r}: recovery to it, inclusive, "
                    "stops only at a later commit, and there is none yet",
                    hint="add --exclusive to stop just before that commit, or wait for a "
                    "later commit to be archived (archive_timeout)",
                )
        if not fitting:
            raise RecoveryTargetError(
                f"{timeparse.format_kbcli(when)} is outside the recoverable window of "
                f"{self.stanza!r}: {_describe(self.window.periods)}",
                hint=f"pick a time inside the window (`pgpitr cluster describe {self.stanza}`)",
            )
        best = max(fitting, key=lambda r: r.start)
        return next(b for b in self.window.backups if b.name == best.backup)

    def _lsn(self, lsn: int, what: str, timeline: int | None) -> BackupManifest:
        reaching = [c for c in self.chains if c.reaches(lsn, timeline)]
        if self.target.kind == "lsn":
            reaching = [c for c in reaching if self._record_at_or_after(c, lsn)]
        if reaching:
            return max(reaching, key=lambda c: c.backup.stop_lsn_int).backup
        oldest = min(self.chains, key=lambda c: c.backup.stop_lsn_int)
        newest_end = max(c.end_lsn for c in self.chains)
        if lsn < oldest.backup.stop_lsn_int:
            reason = (
                f"before the consistency point of the oldest usable backup "
                f"({oldest.backup.name}, stop LSN {oldest.backup.stop_lsn})"
            )
        elif lsn > newest_end or self.target.kind == "lsn":
            reason = f"past the end of the archived WAL ({_archive_ranges(self.chains)})"
        else:
            reason = f"not on the timeline path of any backup ({_archive_ranges(self.chains)})"
        raise RecoveryTargetError(
            f"{what} of {self.stanza!r} cannot be reached: it is {reason}",
            hint="a WAL position a restore can reach lies between a backup's stop LSN and the "
            f"end of its archived WAL; see `pgpitr cluster list-backup {self.stanza}` and "
            "wait for archiving (archive_timeout) for a position just written",
        )

    def _record_at_or_after(self, chain: catalog_window.Chain, lsn: int) -> bool:
        """Whether a WAL record starts at or after ``lsn`` in the chain: recovery to an LSN
        stops at such a record, and the tail of a switched segment holds none."""
        last_segment_start = chain.end.number * chain.segment_size
        if lsn < last_segment_start:
            return True
        name = chain.end.name(chain.segment_size)
        if name not in self._last_records:
            self._last_records[name] = records.last_record_lsn(
                self.repo, self._index, self.bindir, name
            )
        last = self._last_records[name]
        return last is not None and lsn <= last

    @functools.cached_property
    def _index(self) -> walindex.WalIndex:
        return walindex.wal_index(self.repo, self.stanza, self.chains[0].segment_size)

    @functools.cached_property
    def _last_records(self) -> dict[str, int | None]:
        return {}

    def _point(self) -> tuple[BackupManifest, str]:
        name = self.target.name
        assert name is not None
        point = restore_points.get_point(self.repo, self.stanza, name)
        what = f"restore point {name!r} (LSN {point.lsn}, timeline {point.timeline})"
        chosen = self._lsn(point.lsn_int, what, point.timeline)
        when = timeparse.format_kbcli(point.time)
        return chosen, f"restore point {name!r} made {when} at LSN {point.lsn}"

    def _xid(self) -> tuple[BackupManifest, str]:
        xid = self.target.xid32  # what WAL shows: the epoch is checked once the commit is found
        assert xid is not None
        newest = max(self.chains, key=lambda c: (c.end.timeline, c.end.number))
        floor = min(c.backup.start_lsn_int // c.segment_size for c in self.chains)
        search = records.find_transaction(
            self.repo, self._index, self.bindir, newest.end, floor, xid
        )
        scanned = (
            f"segments {search.first_segment} to {search.last_segment}"
            if search.first_segment
            else "no segment"
        )
        if search.parent is not None:
            raise RecoveryTargetError(
                f"transaction {xid} is a subtransaction of {search.parent.xid}: recovery stops "
                "only at a top-level transaction's commit",
                hint=f"restore to transaction {search.parent.xid} (--restore-to-xid "
                f"{search.parent.xid})",
            )
        record = search.record
        if record is None:
            if search.complete:
                newest_xid = (
                    f"; the newest transaction finishing there is {search.newest_xid}"
                    if search.newest_xid
                    else ""
                )
                raise RecoveryTargetError(
                    f"transaction {xid} never committed in the archived WAL of {self.stanza!r} "
                    f"(read {scanned}, from the oldest backup on){newest_xid}: it is in the "
                    "future, still running, or its WAL is not archived yet",
                    hint="check the id (txid_current(), or xmin of a row on the source) and "
                    "wait for archiving (archive_timeout)",
                )
            raise RecoveryTargetError(
                f"transaction {xid} was not found in the newest {records.XID_SEARCH_DEPTH} "
                f"archived WAL segments of {self.stanza!r} ({scanned}); older WAL was not read, "
                "so whether it committed earlier could not be checked",
                hint="restore to the transaction's commit time or LSN instead "
                "(--restore-to-time, --restore-to-lsn)",
            )
        when = timeparse.format_kbcli(record.time)
        at = f"LSN {record.lsn} ({when})"
        if not record.committed:
            raise RecoveryTargetError(
                f"transaction {xid} aborted at {at}: there is no commit to stop at",
                hint="restore to a committed transaction, or to the time or LSN before it",
            )
        chosen = self._lsn(record.lsn, f"the commit of transaction {xid} at {at}", None)
        return chosen, f"the commit of transaction {xid} at {at}{self._epoch_checked(chosen, at)}"

    def _epoch_checked(self, chosen: BackupManifest, at: str) -> str:
        """A 64-bit target names an epoch: refuse it unless the transaction the WAL shows is of
        that epoch (placed by the chosen backup's next transaction id); say when that cannot
        be told."""
        given, epoch, xid = self.target.xid, self.target.xid_epoch, self.target.xid32
        if epoch is None:
            return ""
        assert given is not None and xid is not None
        found = chosen.full_xid(xid)
        if found is None:
            log.warning(
                "%s: the epoch of transaction %d is not checked: backup %s predates pgpitr "
                "keeping the next transaction id",
                self.stanza,
                given,
                chosen.name,
            )
            return f" (epoch {epoch} not checked: backup {chosen.name} does not record it)"
        if found != given:
            raise RecoveryTargetError(
                f"transaction {given} (epoch {epoch}, {xid} in the WAL) is not in the archived "
                f"WAL of {self.stanza!r}: the transaction {xid} that committed at {at} is "
                f"{found}, of epoch {found // XID_SPACE}",
                hint=f"check the id (txid_current() on the source); to stop at that commit, "
                f"restore to transaction {found}",
            )
        return f", epoch {epoch}"


def _archive_ranges(chains: list[catalog_window.Chain]) -> str:
    spans = sorted({(c.backup.stop_lsn_int, c.end_lsn) for c in chains})
    return "reachable: " + ", ".join(f"{Lsn(a)} to {Lsn(b)}" for a, b in spans)


def _describe(window: list[tuple[datetime, datetime]]) -> str:
    if not window:
        return "there is none yet (no completed backup followed by archived WAL with a commit)"
    return ", ".join(timeparse.format_window(a, b) for a, b in window)
