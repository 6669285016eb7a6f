"""``edit-backup-policy`` (the policy and the schedules it drives, in one run) and
``set-log-backup`` (the WAL archiving switch)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from pgpitr import clusters
from pgpitr import policy as pol
from pgpitr.postgres.cluster import Cluster
from tasks import clusters as t
from tasks.schedules import sync_schedules


@flow(name="set-log-backup", flow_run_name="set-log-backup-{cluster}", persist_result=True)
def set_log_backup(cluster: str, enabled: bool) -> str | None:
    """Turn WAL archiving on (and wait until a switched segment is archived) or off."""
    return t.set_log_backup(cluster, enabled)


@flow(
    name="edit-backup-policy",
    flow_run_name="edit-backup-policy-{cluster}",
    persist_result=True,
)
def edit_backup_policy(
    cluster: str,
    settings: list[str] | None = None,
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Change CLUSTER's backup policy with kbcli settings (``schedule.logfile.enable=true``) or
    a whole policy, then make the deployments' schedules say the same."""
    current = clusters.load_policy(Cluster.get(cluster))
    new = pol.apply_settings(current, settings or []) if policy is None else pol.from_dict(policy)
    same_repository = new.repository in ("", current.repository)
    if same_repository and new.logfile_enabled != current.logfile_enabled:
        set_log_backup(cluster, new.logfile_enabled)
    saved = t.save_policy(cluster, pol.to_dict(new))
    return {"policy": saved, "schedules": sync_schedules(cluster)}
