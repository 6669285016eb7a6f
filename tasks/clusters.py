"""Tasks that create, change and remove clusters, their policy and their accounts."""

from __future__ import annotations

import os
from typing import Any

from prefect import task

from pgpitr import accounts, clusters, operations
from pgpitr import policy as pol
from pgpitr.errors import InvalidInput
from pgpitr.postgres.cluster import Cluster
from tasks._common import ONCE, RETRYING, logger

#: The account password reaches the flow through its environment, never as a parameter.
PASSWORD_ENV = "PGPITR_ACCOUNT_PASSWORD"


@task(name="create-cluster", **RETRYING)
def create_cluster(name: str, port: int | None, backup_repo: str | None) -> dict[str, Any]:
    """initdb, configure, start; a failed attempt removes what it made before it fails."""
    c = clusters.create(name, port=port, repository_url=backup_repo)
    logger().info(
        "cluster %s created: port %s, repository %s", name, c.state.port, c.state.repository
    )
    return {"name": name, "port": c.state.port, "repository": c.state.repository}


@task(name="delete-cluster", **ONCE)
def delete_cluster(name: str) -> None:
    clusters.delete(Cluster.get(name))
    logger().info("cluster %s stopped and removed; its backups stay in the repository", name)


@task(name="set-log-backup", **RETRYING)
def set_log_backup(cluster: str, enabled: bool) -> str | None:
    """Archive WAL or not; on, wait until a switched segment is in the repository."""
    segment = clusters.set_log_backup(Cluster.get(cluster), enabled)
    if enabled:
        logger().info("log backup on for %s: segment %s archived", cluster, segment)
    else:
        logger().info("log backup off for %s", cluster)
    return segment


@task(name="save-backup-policy", **RETRYING)
def save_policy(cluster: str, policy: dict[str, Any]) -> dict[str, Any]:
    """Save the policy; a new repository or log-backup switch takes effect now."""
    c = Cluster.get(cluster)
    new = pol.from_dict(policy)
    if new.cluster != cluster:
        raise InvalidInput(f"the policy is {new.name}, not the policy of cluster {cluster!r}")
    operations.update_policy(c, new)
    logger().info("backup policy %s saved", new.name)
    return pol.to_dict(clusters.load_policy(c))


@task(name="create-account", **ONCE)
def create_account(cluster: str, username: str) -> None:
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise InvalidInput(
            f"no password for {username!r}: the flow expects it in ${PASSWORD_ENV}",
            hint="run `pgpitr cluster create-account`, which generates one",
        )
    accounts.create_account(Cluster.get(cluster), username, password)
    logger().info("account %s created in %s", username, cluster)


@task(name="grant-role", **RETRYING)
def grant_role(cluster: str, username: str, role: str) -> None:
    accounts.grant_role(Cluster.get(cluster), username, role)
    logger().info("granted %s to %s in %s", role.upper(), username, cluster)
