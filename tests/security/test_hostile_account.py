"""The database's OS user tries to get root's rights through pgpitr, and gets none.

Run as root, as an operator would run pgpitr: every ``pgpitr`` command root starts leaves root
for the service account first.  The hostile side is that account (what the server's OS user, or
a database superuser through ``COPY ... TO PROGRAM``, can do): it rewrites cluster.json's bindir
to programs of its own that note the uid they run with, puts a link to a file of root's where
pgpitr keeps its backup lock and its agent's log, and plants a ``pgpitr`` package in the data
directory that a restore copies.  Then root runs the ordinary operations, and the agent runs
the window refresh as a schedule would.  Nothing ran as root, nothing of root's changed, and
the planted package was never imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgpitr.privilege import Account, make_service_account
from tests.conftest import PG_BINDIR, PGPITR, cli, reachable_tempdir
from tests.flows import api
from tests.pg import archive_now, sql

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]


@pytest.fixture
def account() -> Account:
    return make_service_account()


@pytest.fixture
def sentinels() -> Iterator[list[Path]]:
    """Files of root's that a link planted by the account points at."""
    made = []
    for n in range(2):
        path = Path(f"/etc/pgpitr-test-sentinel-{uuid.uuid4().hex[:8]}-{n}")
        path.write_text("root's own\n")
        path.chmod(0o644)
        made.append(path)
    yield made
    for path in made:
        path.unlink(missing_ok=True)


@pytest.fixture
def marks(account: Account) -> Iterator[Path]:
    """Where the account's planted programs note who ran them (``PROGRAM.UID``)."""
    path = reachable_tempdir("pgpitr-marks-")
    os.chown(path, account.uid, account.gid)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def as_account(account: Account, *argv: str) -> None:
    done = subprocess.run(
        list(argv),
        user=account.uid,
        group=account.gid,
        extra_groups=[],
        cwd="/",
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def plant_bindir(account: Account, marks: Path) -> Path:
    """A bindir of the account's: every PostgreSQL program, wrapped to note its uid first."""
    base = reachable_tempdir("pgpitr-planted-")
    os.chown(base, account.uid, account.gid)
    script = (
        "import os, sys, pathlib\n"
        f"real, bindir, marks = pathlib.Path({str(PG_BINDIR)!r}), pathlib.Path(sys.argv[1]), "
        f"{str(marks)!r}\n"
        "bindir.mkdir()\n"
        "for program in real.iterdir():\n"
        "    wrapper = bindir / program.name\n"
        "    wrapper.write_text('#!/bin/sh\\n'\n"
        "        f'touch {marks}/{program.name}.$(id -u)\\n'\n"
        "        f'exec {program} \"$@\"\\n')\n"
        "    wrapper.chmod(0o755)\n"
    )
    as_account(account, "/usr/bin/python3", "-c", script, str(base / "bin"))
    return base / "bin"


def rewrite_state(account: Account, path: Path, **changes: str) -> None:
    script = (
        "import json, sys\n"
        "path, changes = sys.argv[1], json.loads(sys.argv[2])\n"
        "data = json.load(open(path))\n"
        "data.update(changes)\n"
        "open(path, 'w').write(json.dumps(data))\n"
    )
    as_account(account, "/usr/bin/python3", "-c", script, str(path), json.dumps(changes))


def deployment(name: str) -> object | None:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return client.read_deployment_by_name(name)
        except ObjectNotFound:
            return None


def uid_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[2])  # the effective uid
    raise AssertionError(f"no Uid line for {pid}")


def tree(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        try:
            todo += [
                int(p) for p in Path(f"/proc/{current}/task/{current}/children").read_text().split()
            ]
        except OSError:
            continue
    return found


def test_nothing_the_database_account_plants_runs_or_writes_with_roots_rights(
    home: Path, account: Account, sentinels: list[Path], marks: Path, prefect_harness: str
) -> None:
    before = [(p.read_text(), p.stat().st_uid, p.stat().st_mode) for p in sentinels]
    cli("cluster", "create", "hostile")
    cluster_dir = home / "clusters" / "hostile"
    for path in (cluster_dir / "cluster.json", cluster_dir / "data" / "PG_VERSION"):
        assert path.stat().st_uid == account.uid, f"{path} is not the service account's"
    cli(
        "cluster",
        "edit-backup-policy",
        "hostile-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=true",
    )
    cli("cluster", "backup", "hostile")

    # the hostile account: a database superuser plants a package where a restore copies it
    planted = (
        f'import os, pathlib; pathlib.Path("{marks}/planted-package." + str(os.getuid())).touch()'
    )
    sql(
        "hostile",
        f"COPY (SELECT '{planted}') TO PROGRAM 'mkdir -p pgpitr && cat > pgpitr/__init__.py'",
    )
    assert (cluster_dir / "data" / "pgpitr" / "__init__.py").exists()
    sql("hostile", "CREATE TABLE t AS SELECT 1 AS id")
    archive_now("hostile")
    # ... its own programs for pgpitr to run, and links to root's files in pgpitr's places
    bindir = plant_bindir(account, marks)
    rewrite_state(account, cluster_dir / "cluster.json", bindir=str(bindir))
    as_account(account, "/bin/ln", "-sf", str(sentinels[0]), str(cluster_dir / "backup.lock"))
    as_account(account, "/bin/mkdir", "-p", str(home / "agent"))
    as_account(account, "/bin/ln", "-sf", str(sentinels[1]), str(home / "agent" / "agent.log"))

    # root runs the ordinary operations
    cli("cluster", "describe", "hostile")
    cli("cluster", "list-backup", "hostile")
    locked = cli("cluster", "backup", "hostile", check=False)
    assert "backup.lock is a symbolic link: refused" in locked.stderr, locked.stderr
    as_account(account, "/bin/rm", str(cluster_dir / "backup.lock"))
    cli("cluster", "backup", "hostile")
    name = json.loads(cli("cluster", "list-backup", "hostile", "-o", "json").stdout)[-1]["name"]
    cli("cluster", "verify-backup", "hostile", "--name", name)
    cli("cluster", "restore", "hostile-copy", "--restore-to-time", "latest", "--source-cluster",
        "hostile")  # fmt: skip
    assert sql("hostile-copy", "SELECT id FROM t") == [(1,)]
    cli("cluster", "drill", "hostile")

    # the agent (started by root) refuses the planted log, then serves the window refresh
    refused = cli("agent", "start", check=False)
    assert "agent.log is a symbolic link: refused" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    as_account(account, "/bin/rm", str(home / "agent" / "agent.log"))
    env = {"PGPITR_HOST": f"hostile-{uuid.uuid4().hex[:6]}"}
    cli("agent", "start", env=env)
    try:
        pid = json.loads((home / "agent" / "agent.json").read_text())["pid"]
        from prefect.deployments import run_deployment

        target = f"refresh-recoverable-window/pgpitr-{env['PGPITR_HOST']}"
        api.wait_for(lambda: deployment(target), 180, f"the agent to serve {target}")
        run = run_deployment(target, parameters={"cluster": "hostile"}, timeout=300)
        assert run.state.is_completed(), api.explain(run)
        serving = tree(pid)
        assert len(serving) >= 2 and {uid_of(p) for p in serving} == {account.uid}
    finally:
        subprocess.run([*PGPITR, "agent", "stop"], env={**os.environ, **env}, timeout=120)

    # nothing ran as root; the planted programs did run, as the account; the package never
    noted = sorted(p.name for p in marks.iterdir())
    assert noted, "the planted bindir was never used: the test proved nothing"
    assert all(n.rsplit(".", 1)[1] == str(account.uid) for n in noted), noted
    assert not [n for n in noted if n.startswith("planted-package")], noted
    assert [(p.read_text(), p.stat().st_uid, p.stat().st_mode) for p in sentinels] == before
