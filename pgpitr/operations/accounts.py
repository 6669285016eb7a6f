"""Creating a database account (a login role).  Identifiers always go through psycopg's ``sql``
module.

``run`` is the operation.  An account's password reaches the step through the environment
(``PASSWORD_ENV``), never as a parameter of a flow or a task, so that it is neither shown in the UI
nor kept as a result.
"""

from __future__ import annotations

import logging
import os
import secrets
import string

import psycopg
from psycopg import errors as pg_errors
from psycopg import sql

from pgpitr.errors import AlreadyExists, InvalidInput
from pgpitr.operations.primary_host import primary_host
from pgpitr.postgres.cluster import Cluster
from pgpitr.steps import Steps

_ALPHABET = string.ascii_letters + string.digits
#: Where the create-account step finds the password (set by the CLI for the run it starts).
PASSWORD_ENV = "PGPITR_ACCOUNT_PASSWORD"
log = logging.getLogger(__name__)


def run(steps: Steps, cluster: str, username: str) -> None:
    """Create USERNAME in CLUSTER; when its primary runs on another host, that host's agent
    does (its password passed to that run in a Secret block, never as a parameter)."""
    check_username(username)
    host = primary_host(steps, cluster)
    if not host:
        steps(create_account_from_environment, cluster, username)
        return
    steps.run_on_host(
        host,
        "create-account-for-members",
        {"cluster": cluster, "username": username},
        needs="creating an account",
        secrets={PASSWORD_ENV: password_from_environment(username)},
    )
    log.info("account %s created in %s by host %s, where its primary runs", username, cluster, host)


def password_from_environment(username: str) -> str:
    password = os.environ.get(PASSWORD_ENV)
    if not password:
        raise InvalidInput(
            f"no password for {username!r}: the step expects it in ${PASSWORD_ENV}",
            hint="run `pgpitr cluster create-account`, which generates one",
        )
    return password


def create_account_from_environment(cluster: str, username: str) -> None:
    create_account(Cluster.get(cluster), username, password_from_environment(username))
    log.info("account %s created in %s", username, cluster)


def generate_password(length: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def check_username(username: str) -> None:
    if not username or len(username.encode()) > 63 or "\x00" in username:
        raise InvalidInput(f"invalid user name {username!r}: 1 to 63 bytes, no NUL character")
    if username.lower().startswith("pg_") or username == "postgres":
        raise InvalidInput(f"user name {username!r} is reserved")


def create_account(cluster: Cluster, username: str, password: str | None = None) -> str:
    """Create a login role; return its password (generated when not given).

    The server receives only the password's SCRAM-SHA-256 verifier, computed here by libpq
    (``scram_verifier``): a statement's text reaches the server log (log_statement,
    log_min_duration_statement), pg_stat_statements and pg_stat_activity, and the plain password
    must reach none of them.  The verifier is kept out of the first two as well."""
    check_username(username)
    password = password or generate_password()
    cluster.require_running()
    with cluster.connect() as db, db.transaction():
        verifier = scram_verifier(db, username, password)
        db.execute("SET LOCAL log_statement = 'none'")
        db.execute("SET LOCAL log_min_duration_statement = -1")
        db.execute("SET LOCAL log_min_error_statement = 'panic'")
        # a placeholder when the extension is not loaded: harmless
        db.execute("SET LOCAL pg_stat_statements.track_utility = off")
        try:
            # a literal: CREATE ROLE, a utility statement, takes no bound parameter
            db.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(username), sql.Literal(verifier)
                )
            )
        except pg_errors.DuplicateObject:
            raise AlreadyExists(
                f"account {username!r} already exists in {cluster.name!r}"
            ) from None
    return password


def scram_verifier(db: psycopg.Connection, username: str, password: str) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (``SCRAM-SHA-256$…``),
    by libpq's own PQencryptPasswordConn, as psql's ``\\password`` does: no query is sent."""
    encrypted = db.pgconn.encrypt_password(password.encode(), username.encode(), b"scram-sha-256")
    return encrypted.decode()
