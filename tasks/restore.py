"""Tasks of a restore into a new cluster (pgpitr/operations/restore/ composes them, in a
transaction).

``create-cluster-directory`` is undone on rollback: when a later step fails for good, the
flow's transaction rolls back and nothing of the new cluster is left.  Each later step takes the
new cluster's name and reloads its state, so that a retried step starts from what is on disk.
"""

from __future__ import annotations

from pgpitr.operations import restore as rs
from pgpitr.operations import restore_points as operations_restore_points
from pgpitr.operations.restore import handover, recovery
from tasks._common import ONCE, RETRYING, step_task

choose_backup = step_task(rs.choose_backup, "choose-backup", **RETRYING)
create_cluster_directory = step_task(rs.prepare, "create-cluster-directory", **ONCE)
materialise = step_task(
    rs.materialise, "materialise", progress=("restore-progress", "new_cluster"), **RETRYING
)
configure_recovery = step_task(rs.configure_recovery, "configure-recovery", **ONCE)
# the engine enforces each bound (pg_ctl -t, its own polling); the task's is the outer one
start_recovery = step_task(
    rs.start_recovery, "start-recovery", timeout_seconds=recovery.START_TIMEOUT + 60, **RETRYING
)
wait_promoted = step_task(
    rs.wait_promoted, "wait-promoted", timeout_seconds=recovery.REPLAY_TIMEOUT + 60, **ONCE
)
verify_restored = step_task(rs.finish, "verify-restored", **RETRYING)
# a move half done is undone by the step itself: retrying it would find nothing to move
hand_over_data = step_task(handover.hand_over, "hand-over-data-directory", **ONCE)

# restore points: the check may retry (a connection); the creation never (a second WAL point)
check_new_restore_point = step_task(
    operations_restore_points.check_new_point, "check-restore-point", **RETRYING
)
create_restore_point = step_task(
    operations_restore_points.create_point, "create-restore-point", **ONCE
)
recorded_restore_point = step_task(
    operations_restore_points.recorded_point, "read-restore-point", **RETRYING
)
