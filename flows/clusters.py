"""Flows that create and remove clusters and manage their accounts."""

from __future__ import annotations

from typing import Any

from prefect import flow

from tasks import clusters as t
from tasks.schedules import remove_schedules, sync_schedules


@flow(name="create-cluster", flow_run_name="create-cluster-{name}", persist_result=True)
def create_cluster(
    name: str, port: int | None = None, backup_repo: str | None = None
) -> dict[str, Any]:
    """A new running PostgreSQL cluster with the default backup policy and its schedules."""
    created = t.create_cluster(name, port, backup_repo)
    sync_schedules(name)
    return created


@flow(name="delete-cluster", flow_run_name="delete-cluster-{name}", persist_result=True)
def delete_cluster(name: str) -> None:
    """Stop and remove the cluster and its schedules; its backups stay in the repository."""
    t.delete_cluster(name)
    remove_schedules(name)


@flow(name="create-account", flow_run_name="create-account-{cluster}-{username}")
def create_account(cluster: str, username: str) -> None:
    """Create a login role.  Its password is read from the flow's environment
    (PGPITR_ACCOUNT_PASSWORD), never passed as a parameter nor logged nor kept as a result."""
    t.create_account(cluster, username)


@flow(name="grant-role", flow_run_name="grant-role-{cluster}-{username}", persist_result=True)
def grant_role(cluster: str, username: str, role: str) -> None:
    """Grant READONLY, READWRITE or SUPERUSER to an account."""
    t.grant_role(cluster, username, role)
