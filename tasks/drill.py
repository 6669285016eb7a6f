"""Tasks of a drill (pgpitr/operations/drill/ composes them; the restore inside it runs the
restore's own tasks, tasks/restore.py).  ``remove-scratch-cluster`` runs whatever happened
before it."""

from __future__ import annotations

from pgpitr.operations import drill
from pgpitr.operations.drill import checks as drill_checks
from tasks._common import ONCE, RETRYING, step_task

remove_leftovers = step_task(drill.remove_leftovers, "remove-killed-drills", **RETRYING)
choose_target = step_task(drill.choose_target, "choose-drill-target", **RETRYING)
mark_scratch = step_task(drill.mark_scratch, "mark-scratch-cluster", **ONCE)
find_damage = step_task(drill.find_damage, "find-damaged-wal", **RETRYING)
measure = step_task(drill.measure, "measure-rto", **RETRYING)
check_heartbeat = step_task(drill.check_heartbeat, "check-heartbeat", **RETRYING)
# pg_amcheck's own bound (run's timeout) is the inner one
run_amcheck = step_task(
    drill.run_amcheck, "pg-amcheck", timeout_seconds=drill_checks.AMCHECK_TIMEOUT + 60, **ONCE
)
remove_scratch = step_task(drill.remove_scratch, "remove-scratch-cluster", **RETRYING)
record = step_task(drill.record, "record-drill", **RETRYING)
