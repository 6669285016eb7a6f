"""Which backups the retention TTL removes now, and which it must keep anyway.

``retention.expired`` names the failed backups and the completed ones past their expiration,
always keeping the newest completed one.  This adds the window's guard: the backup the
recoverable window starts from stays while no other backup can start a window, so that retention
never leaves a cluster with nothing to restore from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pgpitr import catalog, retention
from pgpitr.repository import Repository


@dataclass(frozen=True)
class ExpiryPlan:
    remove: list[str]
    #: backups past their TTL that stay, with the reason
    kept: dict[str, str] = field(default_factory=dict)


def plan(repo: Repository, stanza: str, bindir: Path, now: datetime) -> ExpiryPlan:
    due = retention.expired(repo, stanza, bindir, now)
    if not due:
        return ExpiryPlan([])
    ranges = catalog.backup_ranges(repo, stanza, bindir)
    kept: dict[str, str] = {}
    if ranges:
        first = min(ranges, key=lambda r: r.start).backup
        others = {r.backup for r in ranges} - set(due)
        if first in due and not others:
            kept[first] = (
                "the recoverable window starts from it and no other backup can start one yet"
            )
    return ExpiryPlan([name for name in due if name not in kept], kept)
