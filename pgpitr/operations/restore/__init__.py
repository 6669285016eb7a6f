"""Restore a cluster's backup and WAL to a target, into a new cluster.

The target (pgpitr/targets.py) is a time, an LSN, a transaction id, a restore point, the end of the
backup (immediate) or the end of the archived WAL (latest). ``run`` is the restore operation, the
one place its steps are put in order. ``choose_backup`` checks everything it can before anything is
created: the source has backups, the new name is free, the target can be reached
(pgpitr/catalog/reach.py: a time inside the recoverable window; an LSN, a transaction's commit
or a restore point inside the archived chain of a backup consistent before it), there is room for
the data. An incremental backup restores with its lineage (pgpitr/catalog/backups.py ``lineage``):
``materialise`` combines the links with pg_combinebackup. The steps after it (``prepare``,
``materialise``, ``configure_recovery``, ``start_recovery``, ``wait_promoted``, ``finish``) each do
one thing, so that each can be run and retried on its own; they run in one transaction, and a
failure removes the new cluster. ``finish`` checks where PostgreSQL says recovery stopped against
the target. With ``into_datadir`` (Patroni's custom bootstrap), the new cluster is a temporary
one that archives nothing, and ``hand_over`` moves its data directory there and forgets it, in
the same transaction. The source cluster is only read from the repository, never touched.

``planning`` holds the request and the plan, ``data`` the new cluster's files, ``recovery`` its
configuration, the wait and the check of where it stopped, ``handover`` the hand-over."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from contextlib import contextmanager

from pgpitr.operations.restore.data import materialise, prepare
from pgpitr.operations.restore.handover import hand_over
from pgpitr.operations.restore.planning import Plan, RestoreRequest, choose_backup
from pgpitr.operations.restore.recovery import (
    RestoreResult,
    configure_recovery,
    finish,
    start_recovery,
    wait_promoted,
)
from pgpitr.steps import Steps
from pgpitr.targets import RestoreTarget

__all__ = ["Plan", "RestoreRequest", "RestoreResult", "RestoreTarget", "run"]


# -- the operation ---------------------------------------------------------------------------


def run(steps: Steps, request: RestoreRequest) -> RestoreResult:
    """Restore ``request.source_cluster`` to its target into the new cluster; all or nothing.

    Each phase is timed (``RestoreResult.phases``): what a drill reports as the RTO."""
    clock = _PhaseClock()
    with clock("plan"):
        plan = steps(choose_backup, request)
    with steps.transaction():
        with clock("materialise"):
            name = steps(prepare, plan)
            steps(materialise, plan, name)
            steps(configure_recovery, plan, name)
        with clock("replay"):
            steps(start_recovery, name)
            steps(wait_promoted, name)
        with clock("promote"):
            result = steps(finish, plan, name)
        if request.into_datadir:
            with clock("hand-over"):
                into = steps(hand_over, plan, name)
            result = dataclasses.replace(result, into_datadir=into)
    if not request.into_datadir:  # a handed-over cluster is gone: it has no schedules
        steps.sync_schedules(request.new_name)
    return dataclasses.replace(result, phases=dict(clock.phases))


class _PhaseClock:
    """Seconds spent in each named phase (monotonic clock)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases[phase] = round(time.monotonic() - started, 3)
