"""Drills: prove that a cluster's archive restores, by restoring it, and time it (the RTO).

``run`` is the drill operation, the one place its steps are put in order: remove what a killed
drill left; pick a target (a random time inside the recoverable window, or the one given);
restore into a scratch cluster ``NAME-drill-XXXXXX`` on a free port (the restore operation
itself, ``restore.run``, with its steps and its rollback); check the heartbeat oracle (the
source's newest heartbeat row at or before the target is there, none after it:
pgpitr/heartbeat.py); run ``pg_amcheck`` on every database, heap and indexes; remove the
scratch cluster, always; record the result in the repository (``STANZA/drills/ID.json``).

A failed check is a result, not an exception: the result says what failed and why, so that it
is recorded and reported; the flow then raises ``DrillFailed`` (a failed run, a non-zero exit).

Each drill compares its measured RTO with what the drills before it predict for its own
volumes (pgpitr/rto.py); ``describe`` predicts a restore to ``latest`` the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import random
import re
import secrets
import shutil
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from pgpitr import cluster_repository, heartbeat, rto, scratch, timeparse
from pgpitr import state as st
from pgpitr.catalog import backups, walindex
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import (
    ChecksumMismatch,
    DrillFailed,
    NotFound,
    PitrError,
    RecoveryTargetError,
)
from pgpitr.manifest import BackupManifest
from pgpitr.operations import restore as rs
from pgpitr.operations.restore import data as restore_data
from pgpitr.postgres.cluster import Cluster, validate_name
from pgpitr.postgres.command import run as run_command
from pgpitr.repository import Repository
from pgpitr.steps import Steps
from pgpitr.wal import archive, spool
from pgpitr.wal.lsn import Lsn

log = logging.getLogger(__name__)

#: drill records kept per cluster (older ones go when a drill records its result)
KEEP_RECORDS = 100
#: how many of the newest passed drills measure the rates
RATE_SAMPLE = 5
#: a heartbeat committed within this of its own time stamp: rows older than target - SLACK
#: must be restored; younger ones may or may not be (their commit may come after the target)
SLACK = timedelta(seconds=1)
AMCHECK_TIMEOUT = 6 * 3600
_SCRATCH = re.compile(r"-drill-[0-9a-f]{6}$")


@dataclass(frozen=True)
class DrillPlan:
    cluster: str
    scratch: str
    target: datetime
    id: str  # 20261202T012345Z-ab12cd: sorts by time
    started: str


@dataclass(frozen=True)
class DrillResult:
    id: str
    cluster: str
    scratch: str
    target: str
    started: str
    finished: str = ""
    passed: bool = False
    backup: str | None = None
    #: seconds of plan, materialise, replay, promote (the RTO), then of the checks
    phases: dict[str, float] = field(default_factory=dict)
    rto_seconds: float | None = None
    predicted_rto_seconds: float | None = None
    prediction_error_percent: float | None = None
    materialised_bytes: int | None = None
    replayed_bytes: int | None = None
    heartbeat: dict[str, Any] = field(default_factory=dict)
    amcheck: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    scratch_removed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DrillResult:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    @property
    def result(self) -> str:
        return "Passed" if self.passed else "Failed"

    def summary(self) -> str:
        """One line: what a person reads first."""
        when = timeparse.format_kbcli(datetime.fromisoformat(self.target))
        rto = f"RTO {self.rto_seconds:.1f} s" if self.rto_seconds is not None else "no RTO"
        if self.predicted_rto_seconds is not None and self.prediction_error_percent is not None:
            rto += (
                f" (predicted {self.predicted_rto_seconds:.1f} s, "
                f"{self.prediction_error_percent:+.0f} %)"
            )
        elif self.rto_seconds is not None:
            rto += " (no prediction: no drill before this one)"
        why = f": {self.error}" if self.error else ""
        return f"drill {self.id} of {self.cluster} to {when}: {self.result}, {rto}{why}"


# -- the operation ---------------------------------------------------------------------------


def run(steps: Steps, cluster: str, at: datetime | None = None) -> DrillResult:
    """Drill ``cluster``: restore ``at`` (random inside the window when None) into a scratch
    cluster, check it, time it, remove it, record the result."""
    steps(remove_leftovers)
    plan = steps(choose_target, cluster, at)
    steps(mark_scratch, plan)
    result: DrillResult | None = None
    try:
        result = _restore_and_check(steps, plan)
    finally:
        # also when the drill itself fails or is cancelled: a scratch cluster never stays
        removed = steps(remove_scratch, plan)
    result = dataclasses.replace(
        result, scratch_removed=removed, finished=_now().isoformat(timespec="seconds")
    )
    steps(record, result)
    (log.info if result.passed else log.error)("%s", result.summary())
    return result


def _restore_and_check(steps: Steps, plan: DrillPlan) -> DrillResult:
    base = DrillResult(plan.id, plan.cluster, plan.scratch, plan.target.isoformat(), plan.started)
    try:
        restored = rs.run(_ScratchSteps(steps), _request(plan))
    except Exception as exc:  # the drill's finding, recorded and reported, not a crash
        found = steps(find_damage, plan)
        error = f"the restore failed: {_reason(exc)}" + (f"; {found}" if found else "")
        return dataclasses.replace(base, error=error)
    try:
        measured = steps(measure, plan, restored)
        oracle = steps(check_heartbeat, plan)
        amcheck = steps(run_amcheck, plan.scratch)
    except Exception as exc:  # a check that cannot run is a failed drill, recorded as such
        error = f"the restored cluster could not be checked: {_reason(exc)}"
        return dataclasses.replace(
            base, backup=restored.backup, phases=restored.phases, error=error
        )
    problems = [c["detail"] for c in (oracle, amcheck) if c["status"] == "failed"]
    return dataclasses.replace(
        measured,
        passed=not problems,
        heartbeat=oracle,
        amcheck=amcheck,
        phases={**measured.phases, "heartbeat": oracle["seconds"], "amcheck": amcheck["seconds"]},
        error="; ".join(problems) or None,
    )


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, PitrError) else f"{type(exc).__name__}: {exc}"


def _time_target(when: datetime) -> rs.RestoreTarget:
    """The one place a drill builds a restore target."""
    return rs.RestoreTarget(time=when)


def _request(plan: DrillPlan) -> rs.RestoreRequest:
    return rs.RestoreRequest(plan.scratch, plan.cluster, _time_target(plan.target))


class _ScratchSteps(Steps):
    """The caller's steps, without the schedule hooks: a scratch cluster gets no schedules."""

    def __init__(self, inner: Steps) -> None:
        super().__init__()
        self._inner = inner

    def __call__(self, step: Any, *args: Any, **kwargs: Any) -> Any:
        return self._inner(step, *args, **kwargs)

    def transaction(self) -> AbstractContextManager[None]:
        return self._inner.transaction()

    def sync_schedules(self, cluster: str) -> list[str]:
        return []


# -- the steps -------------------------------------------------------------------------------


def parse_at(text: str | None) -> datetime | None:
    """``--at``: a restore time (as ``restore --restore-to-time`` reads it) or ``random``."""
    if text is None or text.strip().lower() in ("", "random"):
        return None
    when = timeparse.parse_restore_target(text)
    if when is None:
        raise RecoveryTargetError(
            "a drill restores to a time inside the window, not to latest",
            hint="pass --at TIME or --at random",
        )
    return when


def scratch_name(cluster: str) -> str:
    """``NAME-drill-XXXXXX``, within the length of a cluster name."""
    return f"{cluster[:34].rstrip('-')}-drill-{secrets.token_hex(3)}"


def choose_target(cluster: str, at: datetime | None = None) -> DrillPlan:
    """The drill's target: ``at``, or a random time inside the recoverable window."""
    validate_name(cluster)
    c = Cluster.get(cluster)
    window = catalog_window.recoverable_window(
        cluster_repository.repository(c), c.state.stanza, c.bindir
    )
    periods = window.periods
    if not periods:
        raise RecoveryTargetError(
            f"cluster {cluster!r} has no recoverable window yet: nothing to drill",
            hint=f"turn log backup on and take a backup (`pgpitr cluster backup {cluster}`)",
        )
    if at is None:
        target = random_time(periods)
    elif not any(a <= at < b for a, b in periods):  # at the last commit: see reach.py
        shown = ", ".join(timeparse.format_window(a, b) for a, b in periods)
        raise RecoveryTargetError(
            f"{timeparse.format_kbcli(at)} is outside the recoverable window of {cluster!r}: "
            f"{shown}",
            hint="pick a time inside it, or --at random",
        )
    else:
        target = at
    now = _now()
    name = scratch_name(cluster)
    drill_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{name[-6:]}"
    log.info("drill %s: %s to %s", drill_id, name, timeparse.format_kbcli(target))
    return DrillPlan(cluster, name, target, drill_id, now.isoformat(timespec="seconds"))


def random_time(periods: list[tuple[datetime, datetime]]) -> datetime:
    """A uniformly random time in the periods, on a whole second when one fits."""
    total = sum((b - a).total_seconds() for a, b in periods)
    offset = random.uniform(0, total)
    for a, b in periods:
        length = (b - a).total_seconds()
        if offset <= length:
            when = a + timedelta(seconds=offset)
            whole = when.replace(microsecond=0)
            return whole if a <= whole < b else min(when, b - timedelta(microseconds=1))
        offset -= length
    return periods[-1][1] - timedelta(microseconds=1)


def mark_scratch(plan: DrillPlan) -> None:
    """Name the scratch cluster as this process's before it exists (see pgpitr/scratch.py)."""
    scratch.write(plan.scratch, cluster=plan.cluster, drill=plan.id)


def remove_leftovers() -> list[str]:
    """Remove the scratch clusters of drills whose process was killed; their names."""
    removed = []
    for marker in scratch.orphaned():
        name = marker["scratch"]
        _remove(name, marker.get("cluster"))
        scratch.remove(name)
        log.warning("removed %s, the scratch cluster of a killed drill", name)
        removed.append(name)
    return removed


def remove_scratch(plan: DrillPlan) -> bool:
    """Stop and remove the scratch cluster and whatever its server archived; True when gone."""
    _remove(plan.scratch, plan.cluster)
    gone = not (st.clusters_dir() / plan.scratch).exists()
    if gone:
        scratch.remove(plan.scratch)
    return gone


def _remove(name: str, source: str | None) -> None:
    if not _SCRATCH.search(name):  # a marker names only scratch clusters; never anything else
        return
    restore_data.remove_interrupted(name)  # killed mid-restore: the restore's own cleanup
    try:
        c = Cluster.get(name)
    except (NotFound, FileNotFoundError):
        c = None
    if c is not None:
        if c.is_running():
            c.stop(mode="immediate")
        spool.wait_idle(c.state.spool)
        c.remove()
    shutil.rmtree(st.clusters_dir() / name, ignore_errors=True)  # prepared, never saved
    if source:
        # promoted, the scratch server archived as NAME: its stanza is the drill's alone
        repo = _source_repository(source)
        if repo is not None:
            repo.delete_prefix(f"{name}/")


def _source_repository(source: str) -> Repository | None:
    try:
        return cluster_repository.repository(Cluster.get(source))
    except (NotFound, FileNotFoundError):
        return None


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
    predicted = rto.predict(_history(repo, c.state.stanza), size, replayed)
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
    started = _now()
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
    seconds = round((_now() - started).total_seconds(), 3)
    return {
        "status": status,
        "detail": detail,
        "expected": expected.isoformat() if expected else None,
        "newest_restored": newest.isoformat() if newest else None,
        "after_target": len(late),
        "seconds": seconds,
    }


def amcheck_command(cluster: Cluster) -> list[str]:
    """pg_amcheck over every database: heap, and B-tree indexes against their heap."""
    return [
        str(cluster.bindir / "pg_amcheck"),
        "--all",
        "--heapallindexed",
        "--install-missing",
        "--no-password",
        *cluster.client_options(),
    ]


def run_amcheck(name: str) -> dict[str, Any]:
    """pg_amcheck on the scratch cluster; a finding is a failed check, not an exception."""
    started = _now()
    c = Cluster.get(name)
    with c.connect() as db:
        databases = [
            r[0]
            for r in db.execute(
                "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname"
            ).fetchall()
        ]
    result = run_command(
        amcheck_command(c), user=c.client_user, timeout=AMCHECK_TIMEOUT, check=False
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
        "seconds": round((_now() - started).total_seconds(), 3),
    }


# -- records ---------------------------------------------------------------------------------


def records_prefix(stanza: str) -> str:
    return f"{stanza}/drills/"


def record(result: DrillResult) -> str:
    """Store the result under the source's stanza; keep the newest KEEP_RECORDS."""
    c = Cluster.get(result.cluster)
    repo = cluster_repository.repository(c)
    prefix = records_prefix(c.state.stanza)
    key = f"{prefix}{result.id}.json"
    repo.put_json(key, result.as_dict())
    keys = _record_keys(repo, c.state.stanza)
    for old in keys[:-KEEP_RECORDS]:
        repo.delete(old)
    return key


def _record_keys(repo: Repository, stanza: str) -> list[str]:
    return sorted(i.key for i in repo.list(records_prefix(stanza)) if i.key.endswith(".json"))


def list_drills(cluster: Cluster, limit: int | None = None) -> list[DrillResult]:
    """The cluster's drills, newest first (the newest ``limit`` only: one LIST, limit GETs)."""
    repo = cluster_repository.repository(cluster)
    keys = _record_keys(repo, cluster.state.stanza)
    chosen = keys if limit is None else keys[-limit:]
    return [DrillResult.from_dict(repo.get_json(k)) for k in reversed(chosen)]


def _newest(repo: Repository, stanza: str) -> list[DrillResult]:
    """The newest 2 x RATE_SAMPLE drills, newest first: one LIST, at most that many GETs."""
    keys = _record_keys(repo, stanza)[-(RATE_SAMPLE * 2) :]
    return [DrillResult.from_dict(repo.get_json(k)) for k in reversed(keys)]


def _passed(drills: list[DrillResult]) -> list[DrillResult]:
    """The drills whose rates count: passed, with an RTO; the newest RATE_SAMPLE."""
    return [d for d in drills if d.passed and d.rto_seconds is not None][:RATE_SAMPLE]


def _history(repo: Repository, stanza: str) -> list[DrillResult]:
    return _passed(_newest(repo, stanza))


def describe_fields(cluster: Cluster, window: catalog_window.Window) -> dict[str, Any]:
    """describe's drill block: the last drill, the predicted RTO of a restore to latest.
    Bounded: one LIST of the drill records (at most KEEP_RECORDS) and 2 x RATE_SAMPLE reads."""
    newest = _newest(cluster_repository.repository(cluster), cluster.state.stanza)
    history = _passed(newest)
    last = newest[0] if newest else None
    volumes = rto.latest_volumes(window)
    predicted = rto.predict(history, volumes[0], volumes[1]) if volumes else None
    if predicted is not None:
        note = f"from {len(history)} passed drill(s)"
    elif not history:
        note = "no drill yet" if last is None else "no passed drill yet"
    else:
        note = "no backup to restore"
    return {
        "last_drill": (
            {
                "id": last.id,
                "time": last.started,
                "target": last.target,
                "result": last.result,
                "rto_seconds": last.rto_seconds,
                "predicted_rto_seconds": last.predicted_rto_seconds,
                "prediction_error_percent": last.prediction_error_percent,
                "error": last.error,
            }
            if last
            else None
        ),
        "predicted_rto_latest_seconds": round(predicted, 1) if predicted is not None else None,
        "predicted_rto_note": note,
    }


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = [
    "DrillFailed",  # raised by the flow for a failed drill; defined with the other errors
    "DrillPlan",
    "DrillResult",
    "describe_fields",
    "list_drills",
    "parse_at",
    "run",
]
