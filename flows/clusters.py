"""Flows that create, register and remove clusters and manage their accounts
(pgpitr/operations/: create.py, delete.py, register/, unregister.py, accounts.py and
roles.py hold the steps' order)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from pgpitr.operations import accounts, create, delete, register, roles, start, stop, unregister
from pgpitr.repository.url import RepositoryUrl
from tasks import member_hosts
from tasks.naming import run_name
from tasks.results import PERSISTED, SERIALIZER
from tasks.steps import STEPS


@flow(
    name="create-cluster",
    flow_run_name=run_name("create-cluster-{host}/{name}"),
    **PERSISTED,
)
def create_cluster(
    name: str, port: int | None = None, backup_repo: str | None = None, bindir: str | None = None
) -> dict[str, Any]:
    """A new running PostgreSQL cluster with the default backup policy and its schedules, run by
    the binaries in BINDIR (default: the newest PostgreSQL installed on the host)."""
    return create.run(STEPS, name, port, RepositoryUrl.parse_optional(backup_repo), bindir)


@flow(
    name="delete-cluster",
    flow_run_name=run_name("delete-cluster-{host}/{name}"),
    **PERSISTED,
)
def delete_cluster(name: str) -> None:
    """Stop and remove the cluster and its schedules; its backups stay in the repository."""
    delete.run(STEPS, name)


@flow(
    name="start-cluster",
    flow_run_name=run_name("start-cluster-{host}/{name}"),
    **PERSISTED,
)
def start_cluster(name: str, force: bool = False) -> None:
    """Start the cluster (a registered server only with ``force``); the agent starts it again
    after a reboot from now on."""
    start.run(STEPS, name, force)


@flow(
    name="stop-cluster",
    flow_run_name=run_name("stop-cluster-{host}/{name}"),
    **PERSISTED,
)
def stop_cluster(name: str, force: bool = False) -> None:
    """Stop the cluster (fast shutdown; a registered server only with ``force``); the agent
    leaves it stopped until it is started again."""
    stop.run(STEPS, name, force)


@flow(
    name="register-cluster",
    flow_run_name=run_name("register-cluster-{host}/{name}"),
    **PERSISTED,
)
def register_cluster(
    name: str,
    pgdata: str = "",
    bindir: str | None = None,
    socket_dir: str | None = None,
    port: int | None = None,
    os_user: str | None = None,
    backup_repo: str | None = None,
    restart: bool = False,
    patroni: str | None = None,
) -> dict[str, Any]:
    """Protect a server that already runs (PGDATA), or a Patroni cluster (PATRONI: a member's
    REST API): archive_command and archive_timeout set with ALTER SYSTEM or in Patroni's
    dynamic configuration (the old values remembered); a restart only when ``restart``
    (archive_mode off)."""
    request = register.RegisterRequest.parse(
        name, pgdata, bindir, socket_dir, port, os_user, backup_repo, restart, patroni
    )
    return register.run(STEPS, request)


@flow(
    name="unregister-cluster",
    flow_run_name=run_name("unregister-cluster-{host}/{name}"),
    **PERSISTED,
)
def unregister_cluster(name: str) -> dict[str, Any]:
    """Stop protecting a registered server: its settings put back, its backups kept, the
    server left running."""
    return unregister.run(STEPS, name)


@flow(
    name="keep-for-members",
    flow_run_name=run_name("keep-for-members-{host}/{cluster}"),
    **PERSISTED,
)
def keep_for_members(
    cluster: str, spec: dict[str, Any], secrets_block: str | None = None
) -> list[dict[str, Any]]:
    """Keep another host's HA cluster here when members of it run here (asked by its
    registration): the placements of those members, also left as a table artifact."""
    return member_hosts.keep_here(cluster, spec, secrets_block)


@flow(
    name="drop-for-members",
    flow_run_name=run_name("drop-for-members-{host}/{cluster}"),
    **PERSISTED,
)
def drop_for_members(cluster: str, home_host: str) -> bool:
    """Forget this host's copy of HOME_HOST's HA cluster (asked by its unregistration)."""
    return member_hosts.drop_here(cluster, home_host)


@flow(
    name="create-account",
    flow_run_name=run_name("create-account-{host}/{cluster}-{username}"),
    persist_result=False,  # nothing to keep; a failure is still written, as JSON
    result_serializer=SERIALIZER,
)
def create_account(cluster: str, username: str) -> None:
    """Create a login role.  Its password is read from the flow's environment
    (PGPITR_ACCOUNT_PASSWORD), never passed as a parameter nor logged nor kept as a result."""
    accounts.run(STEPS, cluster, username)


@flow(
    name="create-account-for-members",
    flow_run_name=run_name("create-account-for-members-{host}/{cluster}-{username}"),
    persist_result=False,  # nothing to keep; a failure is still written, as JSON
    result_serializer=SERIALIZER,
)
def create_account_for_members(
    cluster: str, username: str, secrets_block: str | None = None
) -> None:
    """Create a login role in another host's HA cluster whose primary runs here (started by
    that host's create-account run).  Its password comes in the Secret block SECRETS_BLOCK,
    which that run deletes: never as a parameter, a log line or a result."""
    member_hosts.create_account_here(cluster, username, secrets_block)


@flow(
    name="grant-role",
    flow_run_name=run_name("grant-role-{host}/{cluster}-{username}"),
    **PERSISTED,
)
def grant_role(cluster: str, username: str, role: str) -> None:
    """Grant READONLY, READWRITE or SUPERUSER to an account."""
    roles.run(STEPS, cluster, username, role)
