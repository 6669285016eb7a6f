"""The ``restore`` flow: a point in time of a cluster, into a new cluster."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.transactions import transaction

from tasks import restore as t
from tasks._common import artifact_key
from tasks._slots import cluster_slot
from tasks.schedules import sync_schedules


@flow(
    name="restore",
    flow_run_name="restore-{new_name}-from-{source_cluster}",
    persist_result=True,
)
def restore(
    new_name: str,
    source_cluster: str,
    restore_to_time: str = "latest",
    backup_name: str | None = None,
    backup_repo: str | None = None,
) -> dict[str, Any]:
    """Restore SOURCE_CLUSTER as it was at RESTORE_TO_TIME into the new cluster NEW_NAME.

    Times: "Apr 17,2023 19:56:40 UTC+0800", RFC 3339, or latest.  Everything is checked before
    anything is created; if a later step fails for good, the new cluster is removed.  One restore
    per source cluster at a time: a second one is refused."""
    with cluster_slot("restore", source_cluster, wait=False):
        plan = t.choose_backup(new_name, source_cluster, restore_to_time, backup_name, backup_repo)
        with transaction():
            name = t.create_cluster_directory(plan)
            t.materialise(plan, name)
            t.configure_recovery(plan, name)
            t.start_recovery(name)
            t.wait_promoted(name)
            result = t.verify_restored(plan, name)
    sync_schedules(new_name)
    create_markdown_artifact(
        f"# {new_name} restored from {source_cluster}\n\n"
        f"| backup | target | last replayed commit | timeline |\n|---|---|---|---|\n"
        f"| {result['backup']} | {result['target'] or 'latest'} | {result['last_commit']} "
        f"| {result['timeline']} |\n",
        key=artifact_key("restore", new_name),
        description=f"restore of {new_name}",
    )
    return result
