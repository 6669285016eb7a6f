"""pgpitr's local Prefect server on PostgreSQL (deployments/serverdb.py): a role and a database
on a cluster pgpitr protects, the server restarted on them, a flow run recorded there; the
database's password nowhere but its 0600 file and the server's environment.  Real parts: the
local server of an isolated home (Prefect's own ``prefect server start``, its migrations run
against PostgreSQL 15), the `pgpitr` command line."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from deployments import serverdb
from pgpitr.postgres.cluster import Cluster
from tests.conftest import PGPITR, free_port
from tests.deployments.test_localserver import (  # noqa: F401
    alone,
    pgpitr,
    server_status,
)
from tests.flows.test_agent import at

pytestmark = pytest.mark.timeout(600)


def test_the_local_server_moves_to_postgresql_and_keeps_its_password_private(alone):  # noqa: F811
    pgpitr(alone, "cluster", "create", "prefect-db", "--port", str(free_port()))
    assert server_status(alone)["database"].endswith("prefect.db")  # SQLite first

    moved = pgpitr(alone, "server", "use-postgresql", "--cluster", "prefect-db")
    status = server_status(alone)
    assert status["answering"] and status["managed"], status
    assert status["database"].startswith("postgresql+asyncpg://prefect:***@127.0.0.1:"), status

    kept = Path(alone["PGPITR_HOME"]) / "prefect" / serverdb.FILE
    assert kept.stat().st_mode & 0o777 == 0o600
    password = serverdb.check_url(kept.read_text())
    password = password.split("prefect:", 1)[1].split("@", 1)[0]
    cmdline = Path(f"/proc/{status['pid']}/cmdline").read_bytes()
    log = Path(status["log"]).read_text()
    for place in (moved.stdout + moved.stderr, json.dumps(status), cmdline.decode(), log):
        assert password not in place

    # a flow run now lands in the cluster's database
    pgpitr(alone, "cluster", "create-account", "prefect-db", "--username", "reader")
    with at(alone), Cluster.get("prefect-db").connect("prefect") as db:
        names = [r[0] for r in db.execute("SELECT name FROM flow_run").fetchall()]
        owner = db.execute(
            "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'prefect'"
        ).fetchone()
    assert any(name.startswith("create-account-") for name in names), names
    assert owner == (serverdb.ROLE,)


def test_a_url_that_is_not_postgresql_is_refused_unechoed(alone):  # noqa: F811
    done = subprocess.run(
        [*PGPITR, "server", "use-postgresql", "--url-file", "-"],
        input="postgresql://prefect:s3cret-pw@127.0.0.1:5432/prefect\n",
        capture_output=True,
        text=True,
        env=alone,
        timeout=120,
    )
    assert done.returncode != 0 and "asyncpg" in done.stderr, done.stderr
    assert "s3cret-pw" not in done.stdout + done.stderr
    assert not (Path(alone["PGPITR_HOME"]) / "prefect" / serverdb.FILE).exists()
