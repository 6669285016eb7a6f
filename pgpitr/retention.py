"""Removing backups and the WAL no remaining backup needs.

A backup the recoverable window starts from is removed only when the caller says ``force``;
WAL is pruned only below the start of the oldest backup that remains (a running backup counts),
so nothing a restore can still use is ever removed by accident.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pgpitr import backup as bk
from pgpitr import catalog, wal
from pgpitr.errors import PitrError
from pgpitr.repository import Repository


@dataclass
class Removed:
    backups: list[str] = field(default_factory=list)
    wal_files: int = 0

    def describe(self) -> str:
        names = ", ".join(self.backups) if self.backups else "no backup"
        return f"removed {names} and {self.wal_files} WAL file(s)"


def window_start_backup(repo: Repository, stanza: str, bindir: Path) -> str | None:
    """The backup the recoverable window starts from: the oldest one with a range."""
    ranges = catalog.backup_ranges(repo, stanza, bindir)
    return min(ranges, key=lambda r: r.start).backup if ranges else None


def delete_backups(
    repo: Repository, stanza: str, names: list[str], bindir: Path, *, force: bool = False
) -> Removed:
    backups = {b.name: b for b in catalog.list_backups(repo, stanza)}
    for name in names:
        if name not in backups:
            catalog.get_backup(repo, stanza, name)  # raises NotFound with a hint
        if backups[name].status == "InProgress":
            raise PitrError(f"backup {name!r} is still running; it cannot be deleted")
    if not force:
        first = window_start_backup(repo, stanza, bindir)
        if first in names:
            raise PitrError(
                f"the recoverable window of {stanza!r} starts from backup {first!r}; deleting it "
                "shortens the window",
                hint="add --force to delete it anyway",
            )
    removed = Removed()
    for name in names:
        for key in bk.data_keys(stanza, name):
            repo.delete(key)
        repo.delete(bk.manifest_key(stanza, name))  # last: a half-deleted backup stays listed
        removed.backups.append(name)
    removed.wal_files = prune_wal(repo, stanza)
    return removed


def prune_wal(repo: Repository, stanza: str) -> int:
    """Remove archived WAL older than the start of every remaining backup; keep history files."""
    keep = [
        b for b in catalog.list_backups(repo, stanza) if b.status in ("Completed", "InProgress")
    ]
    if any(b.status == "InProgress" and "start_lsn" not in b.manifest for b in keep):
        return 0  # a running backup's start is not known yet: keep everything
    info_key = wal.archive_info_key(stanza)
    if not repo.exists(info_key):
        return 0
    segment_size = int(repo.get_json(info_key)["wal_segment_size"])
    floor = min(
        (
            wal.segment_of(b.start_lsn, b.timeline, segment_size).number
            for b in keep
            if b.status == "Completed"
        ),
        default=None,
    )
    repo.remove_stale_temporaries()
    removed = 0
    for info in repo.list(f"{stanza}/wal/"):
        parsed = wal.split_object_key(info.key)
        if not parsed or parsed[0].endswith(".history"):
            continue
        segment = wal.Segment.parse(parsed[0][:24], segment_size)
        if floor is None or segment.number < floor:
            repo.delete(info.key)
            removed += 1
    return removed


def expired(repo: Repository, stanza: str, bindir: Path, now: datetime) -> list[str]:
    """Completed or failed backups past their expiration; never the only completed backup."""
    backups = catalog.list_backups(repo, stanza)
    completed = [b for b in backups if b.completed]
    due = [b.name for b in backups if b.status == "Failed"]
    past = [b for b in completed if b.expiration is not None and b.expiration <= now]
    if len(past) == len(completed) and past:
        past = past[:-1]  # the newest completed backup stays, expired or not
    return due + [b.name for b in past]
