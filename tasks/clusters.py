"""Tasks that create, change and remove clusters, their policy and their accounts
(pgpitr/operations/: create.py, delete.py, register/, unregister.py,
accounts.py and roles.py compose them)."""

from __future__ import annotations

from pgpitr.operations import (
    accounts,
    create,
    delete,
    edit_policy,
    log_backup,
    primary_host,
    register,
    roles,
    start,
    stop,
    unregister,
)
from tasks._common import ONCE, RETRYING, step_task

create_cluster = step_task(create.create_cluster, "create-cluster", **RETRYING)
delete_cluster = step_task(delete.delete_cluster, "delete-cluster", **ONCE)
set_log_backup = step_task(log_backup.switch_log_backup, "set-log-backup", **RETRYING)
apply_log_backup = step_task(log_backup.apply_log_backup, "set-log-backup", **RETRYING)
record_log_backup = step_task(log_backup.record_log_backup, "save-log-backup", **RETRYING)
primary_host_of = step_task(primary_host.primary_host_of, "primary-host", **RETRYING)
set_streaming = step_task(log_backup.switch_streaming, "set-streaming", **RETRYING)
set_wal_summaries = step_task(edit_policy.switch_wal_summaries, "set-wal-summaries", **RETRYING)
read_policy_change = step_task(edit_policy.read_policy_change, "read-policy-change", **ONCE)
switch_repository = step_task(edit_policy.switch_repository, "switch-repository", **RETRYING)
save_policy = step_task(edit_policy.save_policy_of, "save-backup-policy", **RETRYING)
create_account = step_task(accounts.create_account_from_environment, "create-account", **ONCE)
grant_role = step_task(roles.grant, "grant-role", **RETRYING)
find_server = step_task(register.find_server, "find-server", **ONCE)
check_server = step_task(register.check_server, "check-server", **RETRYING)
record_of = step_task(register.record_of, "record-of", **ONCE)
save_registration = step_task(register.save_registration, "save-registration", **ONCE)
turn_on_archive_mode = step_task(register.turn_on_archive_mode, "turn-on-archive-mode", **ONCE)
set_archive_settings = step_task(register.set_archive_settings, "set-archive-settings", **RETRYING)
check_registered = step_task(unregister.check_registered, "check-registered", **ONCE)
put_back_settings = step_task(unregister.put_back_settings, "put-back-settings", **RETRYING)
forget_cluster = step_task(unregister.forget_cluster, "forget-cluster", **ONCE)
start_cluster = step_task(start.start_cluster, "start-cluster", **ONCE)
stop_cluster = step_task(stop.stop_cluster, "stop-cluster", **ONCE)
