"""The local Prefect server's database: SQLite (the embedded default) or PostgreSQL.

Prefect's documentation recommends PostgreSQL for production and calls SQLite unsupported for
more than one server process: it takes one writer at a time, and under a fleet's schedules the
server answers 503 now and then.  ``pgpitr server use-postgresql``:

- ``--cluster NAME``: a cluster of this host that pgpitr protects gets a login role ``prefect``
  (a generated password; the server receives only its SCRAM verifier, as ``create-account``
  does) and a database ``prefect`` that role owns; the server connects over TCP on the
  cluster's loopback address with it, as pgpitr's pg_hba.conf asks of every account;
- ``--url-file FILE`` (``-`` for standard input): a database elsewhere, given as a SQLAlchemy
  URL ``postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DB``.

The URL, password included, is kept in ``PGPITR_HOME/prefect/database-url`` (0600) and reaches
the server in its environment (``PREFECT_API_DATABASE_CONNECTION_URL``), never its command
line, a log or ``server status``, which shows it without the password (``shown``).  The new
database starts empty: the agents make their deployments and schedules again from the backup
policies when they next serve; the runs of the SQLite database stay in ``prefect.db``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pgpitr.errors import AlreadyExists, InvalidInput

ROLE = "prefect"
DATABASE = "prefect"
FILE = "database-url"


def url_file(directory: Path) -> Path:
    return directory / FILE


def connection_url(directory: Path, sqlite_file: Path) -> str:
    """The URL the server is started with: the PostgreSQL one kept, or SQLite's file."""
    try:
        kept = url_file(directory).read_text().strip()
    except FileNotFoundError:
        kept = ""
    return kept or f"sqlite+aiosqlite:///{sqlite_file}"


def shown(url: str) -> str:
    """URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def check_url(url: str) -> str:
    """A PostgreSQL URL Prefect's server can use (asyncpg); InvalidInput, never echoing it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url.strip())
    except ArgumentError:
        raise InvalidInput(
            "the database URL is not a URL",
            hint="give postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE",
        ) from None
    if parsed.drivername != "postgresql+asyncpg" or not parsed.database:
        raise InvalidInput(
            f"the database URL {shown(url.strip())} is not postgresql+asyncpg://…/DATABASE",
            hint="Prefect's server speaks to PostgreSQL through asyncpg",
        )
    return url.strip()


def read_secret_file(path: str) -> str:
    """A secret from the file PATH (0600: refused when others may read it), or ``-``: standard
    input; never from the command line."""
    if path == "-":
        return sys.stdin.read()
    from pgpitr.osutil import read_private

    return read_private(Path(path))


def make_on_cluster(name: str) -> str:
    """The role and the database on cluster NAME; the server's URL to them."""
    from psycopg import sql

    from pgpitr.operations.accounts import create_account
    from pgpitr.postgres.cluster import Cluster

    cluster = Cluster.get(name)
    cluster.require_running()
    try:
        password = create_account(cluster, ROLE)
    except AlreadyExists:
        raise AlreadyExists(
            f"cluster {name!r} already has a role {ROLE!r}",
            hint=f"drop it (and the database {DATABASE!r}) or give the server another database "
            "with --url-file",
        ) from None
    with cluster.connect() as db:
        db.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(
                sql.Identifier(DATABASE), sql.Identifier(ROLE)
            )
        )
    host = "127.0.0.1"  # pgpitr's pg_hba.conf: accounts log in over TCP on the loopback
    return f"postgresql+asyncpg://{ROLE}:{password}@{host}:{cluster.state.port}/{DATABASE}"


def keep(directory: Path, url: str) -> None:
    from pgpitr.osutil import write_atomic

    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(url_file(directory), url.strip() + "\n", mode=0o600)
