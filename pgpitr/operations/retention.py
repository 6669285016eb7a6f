"""Removing backups and the WAL no remaining backup needs: the TTL's retention, and the unit of
work deletes share (``delete_backups``).

``run`` (the policy's TTL) is the operation here, the one place its steps are put in order;
``pgpitr.operations.delete_backup`` deletes what the user names.  A backup the recoverable window
starts from is removed only with ``force``, or by retention when another backup can start a
window; WAL is pruned only below the start of the oldest backup that remains (a running backup
counts), so nothing a restore can still use is ever removed by accident.

Incremental backups: a backup goes only together with its dependents (the backups whose lineage
runs through it, ``catalog.dependents``).  A delete of a backup with dependents is refused
unless ``force``, which deletes them too and says which; the TTL expires a lineage only as a
whole: a backup past its TTL stays while any backup depending on it does not expire.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pgpitr import cluster_repository
from pgpitr.catalog import backups as catalog_backups
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import DeleteIncomplete, PitrError, RepositoryError
from pgpitr.manifest import data_keys, manifest_key
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import Repository
from pgpitr.steps import Steps
from pgpitr.wal import archive
from pgpitr.wal import index as archive_index

log = logging.getLogger(__name__)


@dataclass
class Removed:
    backups: list[str] = field(default_factory=list)
    wal_files: int = 0
    #: backups removed only because they depended on one named (``force``), with that one
    dependents: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        names = ", ".join(self.backups) if self.backups else "no backup"
        why = "".join(
            f"; {dep} because it depended on {base}" for dep, base in self.dependents.items()
        )
        return f"removed {names} and {self.wal_files} WAL file(s){why}"


@dataclass(frozen=True)
class ExpiryPlan:
    remove: list[str]
    #: backups past their TTL that stay, with the reason
    kept: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RetentionReport:
    removed: Removed
    kept: dict[str, str]


# -- the operation ---------------------------------------------------------------------------


def run(steps: Steps, cluster: str) -> RetentionReport:
    """Remove what the policy's TTL expired, and the WAL older than every remaining backup."""
    plan = steps(choose_expired, cluster)
    removed = steps(delete_expired, cluster, plan.remove)
    return RetentionReport(removed, plan.kept)


# -- the steps -------------------------------------------------------------------------------


def choose_expired(cluster: str, now: datetime | None = None) -> ExpiryPlan:
    """The backups the TTL removes now, and those past it that must stay (with the reason).

    The backup the recoverable window starts from stays while no other backup can start a
    window, so that retention never leaves a cluster with nothing to restore from."""
    c = Cluster.get(cluster)
    repo = cluster_repository.repository(c)
    when = now or datetime.now(UTC)
    due = expired(repo, c.state.stanza, when)
    kept: dict[str, str] = {}
    backups = catalog_backups.list_backups(repo, c.state.stanza)
    for b in backups:
        if b.completed and b.expiration and b.expiration <= when and b.name not in due:
            live = [d for d in catalog_backups.dependents(backups, b.name) if d not in due]
            if live:
                kept[b.name] = f"{', '.join(live)} depend(s) on it and stay"
    if due:
        window = catalog_window.recoverable_window(repo, c.state.stanza, c.bindir)
        others = {r.backup for r in window.ranges} - set(due)
        if window.start_backup in due and not others:
            # an incremental the window starts from keeps the links it restores through
            for link in catalog_backups.lineage(backups, window.start_backup):
                if link.name in due:
                    kept[link.name] = (
                        "the recoverable window starts from it (or from a backup restored "
                        "through it) and no other backup can start one yet"
                    )
    for name, why in kept.items():
        log.info("backup %s is past its TTL but stays: %s", name, why)
    return ExpiryPlan([name for name in due if name not in kept], kept)


def delete_expired(cluster: str, names: list[str]) -> Removed:
    """Remove the chosen backups (maybe none), then the WAL older than every remaining one."""
    c = Cluster.get(cluster)
    repo = cluster_repository.repository(c)
    # Already deleted by an earlier attempt of this step: not an error on a retry.
    present = {b.name for b in catalog_backups.list_backups(repo, c.state.stanza)}
    removed = delete_backups(repo, c.state.stanza, [n for n in names if n in present], force=True)
    log.info("%s: %s", cluster, removed.describe())
    return removed


# -- the unit of work ------------------------------------------------------------------------


def delete_backups(
    repo: Repository, stanza: str, names: list[str], *, force: bool = False
) -> Removed:
    listed = catalog_backups.list_backups(repo, stanza)
    backups = {b.name: b for b in listed}
    for name in names:
        if name not in backups:
            catalog_backups.get_backup(repo, stanza, name)  # raises NotFound with a hint
        if backups[name].status == "InProgress":
            raise PitrError(f"backup {name!r} is still running; it cannot be deleted")
    # a backup goes only with every backup that restores through it
    extra: dict[str, str] = {}
    for name in names:
        for dep in catalog_backups.dependents(listed, name):
            if dep not in names and dep not in extra:
                extra[dep] = name
    if extra and not force:
        shown = ", ".join(f"{dep} (on {base})" for dep, base in extra.items())
        raise PitrError(
            f"backup(s) of {stanza!r} depend on what you asked to delete: {shown}; without "
            "their parents they cannot be restored",
            hint="add --force to delete them too, or name them with --name as well",
        )
    # dependents first, newest first: an interrupted delete never leaves an orphan
    everything = set(names) | set(extra)
    # a running incremental against any of them, however far down (--force included)
    running = [
        b.name
        for b in listed
        if b.status == "InProgress" and (b.name in extra or b.parent in everything)
    ]
    if running:
        raise PitrError(f"incremental backup {running[0]!r} is being taken against it; wait")
    ordered = sorted(everything, key=lambda n: (backups[n].start_time, n), reverse=True)
    if not force:
        first = catalog_window.recoverable_window(repo, stanza).start_backup
        if first in names:
            raise PitrError(
                f"the recoverable window of {stanza!r} starts from backup {first!r}; deleting it "
                "shortens the window",
                hint="add --force to delete it anyway",
            )
    removed = Removed(dependents=extra)
    for name in ordered:
        try:
            repo.delete_many(data_keys(stanza, name))
        except RepositoryError as exc:
            raise _after(exc, removed.backups, f"backup {name!r} of {stanza!r}") from None
        repo.delete(manifest_key(stanza, name))  # last: a half-deleted backup stays listed
        removed.backups.append(name)
    try:
        removed.wal_files = prune_wal(repo, stanza)
    except RepositoryError as exc:
        raise _after(
            exc, removed.backups, f"the WAL older than every backup of {stanza!r}"
        ) from None
    return removed


def _after(exc: RepositoryError, done: list[str], what: str) -> RepositoryError:
    """The repository's error, saying which backups were removed before it: the report of what
    went is the error itself, and it names only what really went."""
    before = f"; removed before it: {', '.join(done)}" if done else "; nothing was removed"
    exc.message = f"deleting {what}: {exc.message}{before}"
    hint = "the backup stays listed until its data is gone: run the deletion again"
    exc.hint = f"{exc.hint}; {hint}" if exc.hint else hint
    return exc


def prune_wal(repo: Repository, stanza: str) -> int:
    """Remove archived WAL older than the start of every remaining backup; keep history files."""
    keep = [
        b
        for b in catalog_backups.list_backups(repo, stanza)
        if b.status in ("Completed", "InProgress")
    ]
    if any(b.status == "InProgress" and b.start_lsn is None for b in keep):
        return 0  # a running backup's start is not known yet: keep everything
    info_key = archive.archive_info_key(stanza)
    if not repo.exists(info_key):
        return 0
    segment_size = int(repo.get_json(info_key)["wal_segment_size"])
    floor = min(
        (
            archive.segment_of(b.start_lsn_int, b.timeline or 1, segment_size).number
            for b in keep
            if b.status == "Completed"
        ),
        default=None,
    )
    repo.remove_stale_temporaries()
    # The whole archive is listed here (not the index): whatever the index missed goes too.
    going = []
    for info in repo.list(f"{stanza}/wal/"):
        parsed = archive.split_object_key(info.key)
        if not parsed or parsed[0].endswith(".history"):
            continue
        segment = archive.Segment.parse(parsed[0][:24], segment_size)
        if floor is None or segment.number < floor:
            going.append((segment.timeline, info.key))
    if not going:
        return 0
    # the catalog index first: a crash among the deletes leaves objects it no longer claims,
    # never a claim without an object
    timelines = {t for t, _ in going} | archive_index.indexed_timelines(repo, stanza)
    below = archive_index.EVERYTHING if floor is None else floor
    archive_index.record_dropped(repo, stanza, timelines, below=below)
    try:
        return repo.delete_many(key for _, key in going)
    except DeleteIncomplete as exc:
        # the refused objects are still there: the index claims them again, so that it names
        # exactly what is stored (the next retention lists the archive and tries them again)
        kept = [archive.split_object_key(key) for key in exc.failed]
        archive_index.record_pushed(repo, stanza, [(n, sha, None) for n, sha in filter(None, kept)])
        raise


def expired(repo: Repository, stanza: str, now: datetime) -> list[str]:
    """Completed or failed backups past their expiration; never the only completed backup."""
    backups = catalog_backups.list_backups(repo, stanza)
    completed = [b for b in backups if b.completed]
    due = [b.name for b in backups if b.status == "Failed"]
    past = [b for b in completed if b.expiration is not None and b.expiration <= now]
    if len(past) == len(completed) and past:
        past = past[:-1]  # the newest completed backup stays, expired or not
    # a lineage expires only as a whole: a backup stays while one depending on it stays
    going = {b.name for b in past}
    past = [b for b in past if set(catalog_backups.dependents(backups, b.name)) <= going]
    return due + [b.name for b in past]
