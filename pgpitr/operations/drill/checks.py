"""What a drill measures and checks on the restored scratch cluster: the RTO and the volumes
behind it (``measure``), the heartbeat oracle (``check_heartbeat``), ``pg_amcheck``; and, after a
failed restore, the damaged WAL object to blame (``find_damage``)."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from pgpitr import cluster_repository, heartbeat, rto
from pgpitr.catalog import backups, walindex
from pgpitr.errors import ChecksumMismatch, PitrError
from pgpitr.manifest import BackupManifest
from pgpitr.operations.drill.plan import DrillPlan
from pgpitr.operations.drill.records import DrillResult, history
from pgpitr.postgres import command
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import run as run_command
from pgpitr.repository import Repository
from pgpitr.wal import archive
from pgpitr.wal.lsn import Lsn

if TYPE_CHECKING:
    from pgpitr.operations import restore as rs

log = logging.getLogger(__name__)

#: a heartbeat committed within this of its own time stamp: rows older than target - SLACK
#: must be restored; younger ones may or may not be (their commit may come after the target)
SLACK = timedelta(seconds=1)
AMCHECK_TIMEOUT = 6 * 3600


def find_damage(plan: DrillPlan) -> str | None:
    """After a failed restore: which WAL object between the backup and the target does not
    read back as stored (its checksum), if one; else None."""
    c = Cluster.get(plan.cluster)
    repo = cluster_repository.repository(c)
    backup = _backup_before(repo, c.state.stanza, plan.target)
    if backup is None or backup.timeline is None:
        return None
    index = walindex.wal_index(repo, c.state.stanza, backup.wal_segment_size)
    segment = archive.segment_of(backup.start_lsn_int, backup.timeline, backup.wal_segment_size)
    while index.has(segment):
        name = segment.name(backup.wal_segment_size)
        key = index.objects[name]
        sha = archive.split_object_key(key)
        try:
            repo.get_document(key, sha[1] if sha else None)
        except ChecksumMismatch as exc:
            return f"damaged WAL object {key}: {exc.message}"
        except PitrError as exc:
            return f"unreadable WAL object {key}: {exc.message}"
        segment = segment.next()
    return None


def _backup_before(repo: Repository, stanza: str, target: datetime) -> BackupManifest | None:
    done = [b for b in backups.list_backups(repo, stanza) if b.completed and b.stop_time]
    before = [b for b in done if b.stop_time and b.stop_time <= target]
    return before[-1] if before else None


def measure(plan: DrillPlan, restored: rs.RestoreResult) -> DrillResult:
    """The RTO and the volumes behind it; the prediction of the drills before this one."""
    c = Cluster.get(plan.cluster)
    repo = cluster_repository.repository(c)
    backup = backups.get_backup(repo, c.state.stanza, restored.backup)
    with Cluster.get(plan.scratch).connect() as db:
        row = db.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    replayed = max(0, Lsn.parse(row[0]) - backup.start_lsn_int)
    size = backup.database_size or 0
    phases = dict(restored.phases)
    measured = round(
        sum(phases.get(p, 0.0) for p in ("plan", "materialise", "replay", "promote")), 3
    )
    predicted = rto.predict(history(repo, c.state.stanza), size, replayed)
    error = round(100.0 * (measured - predicted) / predicted, 1) if predicted else None
    return DrillResult(
        plan.id,
        plan.cluster,
        plan.scratch,
        plan.target.isoformat(),
        plan.started,
        backup=restored.backup,
        phases=phases,
        rto_seconds=measured,
        predicted_rto_seconds=round(predicted, 3) if predicted else None,
        prediction_error_percent=error,
        materialised_bytes=size,
        replayed_bytes=replayed,
    )


def check_heartbeat(plan: DrillPlan) -> dict[str, Any]:
    """The oracle: the source's newest heartbeat at or before target - SLACK is restored, and
    no heartbeat after the target is."""
    started = datetime.now(UTC)
    restored = Cluster.get(plan.scratch)
    expected = None
    try:
        source = Cluster.get(plan.cluster)
        if source.is_running():
            expected = heartbeat.newest(source, plan.target - SLACK)
    except PitrError as exc:
        log.warning("heartbeats of %s not readable: %s", plan.cluster, exc.message)
    newest = heartbeat.newest(restored, plan.target)
    late = heartbeat.after(restored, plan.target)
    problems = []
    if late:
        problems.append(
            f"{len(late)} heartbeat row(s) after the target restored, the first of "
            f"{late[0].isoformat()}: recovery went past the target"
        )
    if expected is not None and heartbeat.newest(restored, expected) != expected:
        problems.append(
            f"the heartbeat of {expected.isoformat()} (the source's newest before the target) "
            "is missing: recovery stopped early or lost a commit"
        )
    if problems:
        status, detail = "failed", "; ".join(problems)
    elif expected is None and newest is None:
        status = "unchecked"
        detail = (
            "no heartbeat row at or before the target, in the source or the restored cluster: "
            "nothing to check against (heartbeat.enable is off, or no agent wrote one)"
        )
    elif expected is None:
        status = "passed"
        detail = "none after the target; the source no longer keeps the newest one before it"
    else:
        status = "passed"
        detail = f"the newest before the target ({expected.isoformat()}) present, none after"
    seconds = round((datetime.now(UTC) - started).total_seconds(), 3)
    return {
        "status": status,
        "detail": detail,
        "expected": expected.isoformat() if expected else None,
        "newest_restored": newest.isoformat() if newest else None,
        "after_target": len(late),
        "seconds": seconds,
    }


def run_amcheck(name: str) -> dict[str, Any]:
    """pg_amcheck on the scratch cluster; a finding is a failed check, not an exception."""
    started = datetime.now(UTC)
    c = Cluster.get(name)
    with c.connect() as db:
        databases = [
            r[0]
            for r in db.execute(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"
            ).fetchall()
        ]
    result = run_command(
        command.amcheck_command(c.bindir, c.client_options()),
        user=c.client_user,
        timeout=AMCHECK_TIMEOUT,
        check=False,
    )
    output = (result.stdout + result.stderr).strip().splitlines()
    passed = result.returncode == 0
    detail = (
        f"pg_amcheck found no corruption in {len(databases)} database(s)"
        if passed
        else f"pg_amcheck exited with {result.returncode}: " + " | ".join(output[:5])
    )
    return {
        "status": "passed" if passed else "failed",
        "detail": detail,
        "databases": databases,
        "exit_code": result.returncode,
        "output": output[:50],
        "seconds": round((datetime.now(UTC) - started).total_seconds(), 3),
    }
