"""Granting a role to a database account (identifiers always through psycopg's ``sql``)."""

from __future__ import annotations

import logging

from psycopg import sql

from pgpitr.errors import InvalidInput, NotFound
from pgpitr.operations.accounts import check_username
from pgpitr.operations.primary_host import primary_host
from pgpitr.postgres.cluster import Cluster
from pgpitr.steps import Steps

ROLES = ("READONLY", "READWRITE", "SUPERUSER")
log = logging.getLogger(__name__)


def run(steps: Steps, cluster: str, username: str, role: str) -> None:
    """Grant ROLE to USERNAME in CLUSTER; when its primary runs on another host, that host's
    agent does."""
    check_grant(username, role)
    host = primary_host(steps, cluster)
    if not host:
        steps(grant, cluster, username, role)
        return
    parameters = {"cluster": cluster, "username": username, "role": role}
    steps.run_on_host(host, "grant-role", parameters, needs="granting a role")
    log.info("granted %s to %s in %s by host %s", role.upper(), username, cluster, host)


def grant(cluster: str, username: str, role: str) -> None:
    grant_role(Cluster.get(cluster), username, role)
    log.info("granted %s to %s in %s", role.upper(), username, cluster)


def check_grant(username: str, role: str) -> None:
    check_username(username)
    if role.upper() not in ROLES:
        raise InvalidInput(f"unknown role {role!r}: use one of {', '.join(ROLES)}")


def grant_role(cluster: Cluster, username: str, role: str) -> None:
    """READONLY: read every table; READWRITE: read and write every table; SUPERUSER."""
    check_grant(username, role)
    role = role.upper()
    cluster.require_running()
    user = sql.Identifier(username)
    statements = {
        "READONLY": [sql.SQL("GRANT pg_read_all_data TO {}").format(user)],
        "READWRITE": [
            sql.SQL("GRANT pg_read_all_data TO {}").format(user),
            sql.SQL("GRANT pg_write_all_data TO {}").format(user),
        ],
        "SUPERUSER": [sql.SQL("ALTER ROLE {} SUPERUSER").format(user)],
    }[role]
    with cluster.connect() as db:
        exists = db.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (username,)).fetchone()
        if not exists:
            raise NotFound(f"account {username!r} does not exist in {cluster.name!r}")
        with db.transaction():
            for statement in statements:
                db.execute(statement)
            if role == "READWRITE":
                db.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(user))
