"""``edit-backup-policy`` (the policy and the schedules it drives, in one run) and
``set-log-backup`` (the WAL archiving switch); pgpitr/operations/edit_policy.py and log_backup.py
hold the steps' order."""

from __future__ import annotations

from typing import Any

from prefect import flow

from pgpitr import policy as pol
from pgpitr.operations import edit_policy, log_backup
from tasks.naming import run_name
from tasks.results import PERSISTED
from tasks.steps import STEPS


@flow(
    name="set-log-backup",
    flow_run_name=run_name("set-log-backup-{host}/{cluster}"),
    **PERSISTED,
)
def set_log_backup(cluster: str, enabled: bool) -> str | None:
    """Turn WAL archiving on (and wait until a switched segment is archived) or off."""
    return log_backup.run(STEPS, cluster, enabled)


@flow(
    name="set-log-backup-for-members",
    flow_run_name=run_name("set-log-backup-for-members-{host}/{cluster}"),
    **PERSISTED,
)
def set_log_backup_for_members(cluster: str, enabled: bool) -> str | None:
    """Turn WAL archiving on or off for another host's HA cluster whose primary runs here
    (started by that host's run, which saves the policy): on waits until a switched segment
    is archived."""
    return log_backup.run_for_members(STEPS, cluster, enabled)


@flow(
    name="edit-backup-policy",
    flow_run_name=run_name("edit-backup-policy-{host}/{cluster}"),
    **PERSISTED,
)
def edit_backup_policy(
    cluster: str,
    settings: list[str] | None = None,
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Change CLUSTER's backup policy with kbcli settings (``schedule.logfile.enable=true``) or
    a whole policy, then make the deployments' schedules say the same."""
    edit = edit_policy.run(STEPS, cluster, settings, policy)
    return {"policy": pol.to_dict(edit.policy), "schedules": edit.schedules}
