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

``plan`` holds the target and the drill's names, ``scratch_cluster`` the scratch cluster's marking
and removal, ``checks`` what is measured and checked on it, ``records`` the stored results.
"""

from __future__ import annotations

import dataclasses
import logging
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pgpitr.errors import DrillFailed, PitrError
from pgpitr.operations.drill.checks import check_heartbeat, find_damage, measure, run_amcheck
from pgpitr.operations.drill.plan import DrillPlan, DrillRequest, choose_target
from pgpitr.operations.drill.records import DrillResult, describe_fields, list_drills, record
from pgpitr.operations.drill.scratch_cluster import mark_scratch, remove_leftovers, remove_scratch
from pgpitr.steps import Steps

if TYPE_CHECKING:
    from pgpitr.operations import restore as rs

log = logging.getLogger(__name__)


# -- the operation ---------------------------------------------------------------------------


def run(steps: Steps, request: DrillRequest) -> DrillResult:
    """Drill the request's cluster: restore its time (random inside the window when None) into
    a scratch cluster, check it, time it, remove it, record the result."""
    steps(remove_leftovers)
    plan = steps(choose_target, request)
    steps(mark_scratch, plan)
    result: DrillResult | None = None
    try:
        result = _restore_and_check(steps, plan)
    finally:
        # also when the drill itself fails or is cancelled: a scratch cluster never stays
        removed = steps(remove_scratch, plan)
    result = dataclasses.replace(
        result, scratch_removed=removed, finished=datetime.now(UTC).isoformat(timespec="seconds")
    )
    steps(record, result)
    level = {"Passed": logging.INFO, "Unchecked": logging.WARNING}.get(result.result, logging.ERROR)
    log.log(level, "%s", result.summary())
    return result


def _restore_and_check(steps: Steps, plan: DrillPlan) -> DrillResult:
    # imported here, as in _request: describe imports this package for the drills' records
    from pgpitr.operations import restore as rs

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
        checked=oracle["status"] != "unchecked",
        heartbeat=oracle,
        amcheck=amcheck,
        phases={**measured.phases, "heartbeat": oracle["seconds"], "amcheck": amcheck["seconds"]},
        error="; ".join(problems) or None,
    )


def _reason(exc: Exception) -> str:
    return exc.message if isinstance(exc, PitrError) else f"{type(exc).__name__}: {exc}"


def _time_target(when: datetime) -> rs.RestoreTarget:
    """The one place a drill builds a restore target."""
    from pgpitr.operations import restore as rs

    return rs.RestoreTarget(time=when)


def _request(plan: DrillPlan) -> rs.RestoreRequest:
    from pgpitr.operations import restore as rs

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


__all__ = [
    "DrillFailed",  # raised by the flow for a failed drill; defined with the other errors
    "DrillPlan",
    "DrillRequest",
    "DrillResult",
    "describe_fields",
    "list_drills",
    "run",
]
