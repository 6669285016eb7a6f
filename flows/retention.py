"""``apply-retention`` (the policy's TTL) and ``delete-backup`` (what the user names);
pgpitr/operations/retention.py and delete_backup.py hold the steps' order."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pgpitr.errors import NotFound
from pgpitr.operations import delete_backup as deleting
from pgpitr.operations import retention
from pgpitr.repository.url import RepositoryUrl
from tasks import backup as tb
from tasks._common import cluster_artifact_key
from tasks.naming import run_name
from tasks.results import PERSISTED
from tasks.steps import STEPS


@flow(
    name="apply-retention",
    flow_run_name=run_name("apply-retention-{host}/{cluster}"),
    **PERSISTED,
)
def apply_retention(cluster: str) -> dict[str, Any]:
    """Remove the backups past the policy's retention.ttl (never the one the window needs while
    no other can replace it) and the WAL older than every remaining backup."""
    report = retention.run(STEPS, cluster)
    removed = report.removed
    tb.publish_backup_table(cluster)
    lines = [f"- removed backup `{name}`" for name in removed.backups] or ["- no backup expired"]
    lines += [f"- kept `{name}` although expired: {why}" for name, why in report.kept.items()]
    lines.append(f"- removed {removed.wal_files} WAL file(s) older than every remaining backup")
    create_markdown_artifact(
        f"# Retention of {cluster}\n\n" + "\n".join(lines),
        key=cluster_artifact_key("retention", cluster),
        description=f"what retention removed from {cluster}",
    )
    return {"removed": removed.backups, "wal_files": removed.wal_files, "kept": report.kept}


@flow(
    name="delete-backup",
    flow_run_name=run_name("delete-backup-{host}/{cluster}"),
    **PERSISTED,
)
def delete_backup(
    cluster: str,
    names: list[str] | None = None,
    force: bool = False,
    backup_repo: str | None = None,
) -> dict[str, Any]:
    """Delete the named backups, or with ``force`` and no names every backup of CLUSTER, and
    the WAL no remaining backup needs.  ``force`` also allows the backup the window starts from,
    and deletes the backups that depend on a named one (its incrementals) with it."""
    url = RepositoryUrl.parse_optional(backup_repo)
    removed = deleting.run(STEPS, cluster, names, force=force, repository=url)
    try:
        tb.publish_backup_table(cluster)
    except NotFound:  # a deleted cluster's backups: nothing left to show for it
        pass
    return {
        "removed": removed.backups,
        "wal_files": removed.wal_files,
        "dependents": removed.dependents,
    }
