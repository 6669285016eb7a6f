"""The ``backup`` flow: one backup of a cluster (full or incremental), then (on schedule)
retention."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.retention import apply_retention
from pgpitr import policy as pol
from pgpitr import policy_store
from pgpitr.manifest import BackupManifest
from pgpitr.operations import backup as bk
from pgpitr.operations import verify as vf
from tasks import backup as t
from tasks import events
from tasks._slots import cluster_slot
from tasks.naming import run_name
from tasks.results import PERSISTED
from tasks.steps import STEPS


@flow(name="backup", flow_run_name=run_name("backup-{host}/{cluster}"), **PERSISTED)
def backup(
    cluster: str,
    backup_name: str | None = None,
    verify: bool = False,
    apply_retention_after: bool = False,
    backup_type: bk.BackupType = bk.BackupType.FULL,
    parent: str | None = None,
) -> BackupManifest:
    """Take a backup of CLUSTER now; a second backup of the same cluster waits its turn.
    ``backup_type`` incremental (PostgreSQL 17+) takes only the blocks changed since ``parent``
    (by default the newest usable backup on the server's timeline).

    With log backup on, a WAL switch right after the backup must reach the repository (so the
    window reaches the backup's end at once).  ``verify`` reads the backup back in full;
    ``apply_retention_after`` (set by the schedule) expires old backups afterwards."""
    name = backup_name
    try:
        request = bk.BackupRequest(cluster, backup_name, backup_type, parent, verify)
        with cluster_slot("backup", cluster, wait=True):
            # chosen once per run (every attempt of the stream writes the same backup), once
            # this run has the slot: a run that waited never takes the name of the one before
            request = request.named()
            name = request.name
            manifest = bk.run(STEPS, request)
    except BaseException as exc:
        events.backup_failed(cluster, name or "", exc)
        raise
    events.backup_completed(cluster, manifest)
    t.publish_backup_table(cluster)
    if apply_retention_after:
        apply_retention(cluster)
    return manifest


@flow(
    name="backup-for-members",
    flow_run_name=run_name("backup-for-members-{host}/{cluster}"),
    **PERSISTED,
)
def backup_for_members(
    cluster: str,
    backup_name: str,
    policy: dict[str, Any],
    backup_type: bk.BackupType = bk.BackupType.FULL,
    parent: str | None = None,
    verify: bool = False,
) -> BackupManifest:
    """Back up another host's HA cluster whose primary runs here (started by that host's
    backup run, which holds the cluster's backup slot): its members here, with its POLICY."""
    request = bk.BackupRequest(cluster, backup_name, backup_type, parent, verify)
    with policy_store.lent(cluster, pol.from_dict(policy)):
        return bk.run(STEPS, request)


@flow(
    name="verify-backup",
    flow_run_name=run_name("verify-backup-{host}/{cluster}-{name}"),
    **PERSISTED,
)
def verify_backup(cluster: str, name: str) -> str:
    """Read backup NAME of CLUSTER and its WAL back in full and check every checksum (an
    incremental with its whole lineage); a damaged backup is recorded as such in the
    repository, an intact one's damage record removed.  Returns the report."""
    return vf.run(STEPS, cluster, name)
