"""The ``restore`` flow: a point in time of a cluster, into a new cluster."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pgpitr import restore as rs
from pgpitr import timeparse
from tasks import restore as _tasks  # noqa: F401  (the steps' tasks)
from tasks._common import artifact_key
from tasks._slots import cluster_slot
from tasks.steps import STEPS


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
    bindir: str | None = None,
) -> rs.RestoreResult:
    """Restore SOURCE_CLUSTER as it was at RESTORE_TO_TIME into the new cluster NEW_NAME.

    Times: "Apr 17,2023 19:56:40 UTC+0800", RFC 3339, or latest.  Everything is checked before
    anything is created; if a later step fails for good, the new cluster is removed.  One restore
    per source cluster at a time: a second one is refused."""
    request = rs.RestoreRequest.parse(
        new_name, source_cluster, restore_to_time, backup_name, backup_repo, bindir
    )
    with cluster_slot("restore", source_cluster, wait=False):
        result = rs.run(STEPS, request)
    last = timeparse.format_kbcli(result.last_commit) if result.last_commit else "none"
    create_markdown_artifact(
        f"# {new_name} restored from {source_cluster}\n\n"
        f"| backup | target | last replayed commit | timeline |\n|---|---|---|---|\n"
        f"| {result.backup} | {request.target} | {last} | {result.timeline} |\n",
        key=artifact_key("restore", new_name),
        description=f"restore of {new_name}",
    )
    return result
