"""The ``restore`` flow (a point of a cluster's history, into a new cluster) and the
``create-restore-point`` flow (a named point to restore to later)."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pgpitr import timeparse
from pgpitr.catalog.restore_points import RestorePoint
from pgpitr.operations import restore as rs
from pgpitr.operations import restore_points
from pgpitr.targets import RestoreTarget
from tasks._common import cluster_artifact_key
from tasks._slots import cluster_slot
from tasks.naming import run_name
from tasks.results import PERSISTED
from tasks.steps import STEPS


@flow(
    name="restore",
    flow_run_name=run_name("restore-{host}/{new_name}-from-{source_cluster}"),
    **PERSISTED,
)
def restore(
    new_name: str,
    source_cluster: str,
    target: RestoreTarget = RestoreTarget(),  # noqa: B008  (frozen: one shared value is safe)
    backup_name: str | None = None,
    backup_repo: str | None = None,
    bindir: str | None = None,
    into_datadir: str | None = None,
) -> rs.RestoreResult:
    """Restore SOURCE_CLUSTER as it was at TARGET into the new cluster NEW_NAME.

    Everything is checked before anything is created; if a later step fails for good, the new
    cluster is removed.  One restore per source cluster at a time: a second one is refused.

    Args:
        new_name: the new cluster's name (lower-case letters, digits and '-').
        source_cluster: the cluster whose backups and WAL are restored; never touched.
        target: where recovery stops: its kind (time, lsn, xid, name, immediate or latest)
            and that kind's field; a kind chosen with its field empty is refused, never read
            as latest.  No kind: the kind of the field that is filled; none filled: the end of
            the archived WAL.
        backup_name: restore from this backup instead of the newest one before the target.
        backup_repo: the repository URL of a source cluster this host does not know.
        bindir: the PostgreSQL binaries of the new cluster (default: the backup's major's).
        into_datadir: hand the restored data directory over to this absolute path (absent or
            empty) and forget NEW_NAME, which archives nothing meanwhile: how Patroni's custom
            bootstrap (`pgpitr cluster bootstrap-patroni`) gets a restored leader.
    """
    request = rs.RestoreRequest(
        new_name, source_cluster, target, backup_name, backup_repo, bindir, into_datadir
    )
    with cluster_slot("restore", source_cluster, wait=False):
        result = rs.run(STEPS, request)
    last = timeparse.format_kbcli(result.last_commit) if result.last_commit else "none"
    title = result.into_datadir or new_name
    create_markdown_artifact(
        f"# {title} restored from {source_cluster}\n\n"
        "| backup | target | recovery stopped | last replayed commit | timeline |\n"
        "|---|---|---|---|---|\n"
        f"| {result.backup} | {target.describe()} | {result.stopped} | {last} "
        f"| {result.timeline} |\n",
        key=cluster_artifact_key("restore", new_name),
        description=f"restore of {new_name}",
    )
    return result


@flow(
    name="create-restore-point",
    flow_run_name=run_name("create-restore-point-{host}/{cluster}-{name}"),
    **PERSISTED,
)
def create_restore_point(cluster: str, name: str) -> RestorePoint:
    """Create the restore point NAME on CLUSTER (pg_create_restore_point) and record it in the
    repository; a restore reaches it (`--restore-to-name NAME`) once its WAL is archived.

    Args:
        cluster: a running cluster pgpitr protects.
        name: the point's name: 1 to 63 letters, digits, '.', '_' or '-'; unique per cluster.
    """
    return restore_points.run(STEPS, cluster, name)
