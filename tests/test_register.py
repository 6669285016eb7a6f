"""Registered clusters: servers pgpitr did not create, protected through the real command line.

Two kinds of real servers: a Debian cluster made by ``pg_createcluster`` (configuration in
/etc/postgresql/15/NAME, data in /var/lib/postgresql/15/NAME, run as postgres: a root test), and
a server started by hand with initdb and pg_ctl with a socket directory of its own: by the
account the test runs as, or, in the root tests, by another OS user (``pgpitr-ext``), which
pgpitr then protects running as that user.  What the tests read of a server (settings,
postgresql.auto.conf, the postmaster's pid) they read with psql as the server's OS user or from
its files, not through pgpitr.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pgpitr import timeparse
from pgpitr.catalog import backups
from pgpitr.errors import ClusterStateError, NotFound
from pgpitr.repository import open_repository
from pgpitr.state import default_repository_url
from pgpitr.wal import archive
from tests import pgwheels
from tests.conftest import PG_BINDIR, cli, free_port, reachable_tempdir, stop_everything_under
from tests.pg import (
    rows,
    rows_either_side_of_a_second,
    serverless_cluster,
)

EXT_USER = "pgpitr-ext"


@dataclass
class Server:
    """A server pgpitr did not create, as its owner knows it."""

    pgdata: str  # what `register --pgdata` is given
    datadir: Path
    os_user: str
    role: str
    socket_dir: str
    port: int

    def psql(self, query: str) -> str:
        argv = [str(PG_BINDIR / "psql"), "-X", "-At", "-h", self.socket_dir]
        argv += ["-p", str(self.port), "-U", self.role, "-d", "postgres", "-c", query]
        done = subprocess.run(
            argv, **_as(pwd.getpwnam(self.os_user)), cwd="/", capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    def pid(self) -> int:
        return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])

    def snapshot(self) -> tuple[str, str]:
        """The settings pgpitr may change, as the server has them and as ALTER SYSTEM wrote."""
        settings = self.psql(
            "SELECT name, setting FROM pg_settings WHERE name IN "
            "('archive_command', 'archive_mode', 'archive_timeout') ORDER BY name"
        )
        return settings, (self.datadir / "postgresql.auto.conf").read_text()


def _ext_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(EXT_USER)
    except KeyError:
        # the version matrix runs this test on three versions at once: another may add it first
        made = subprocess.run(
            ["useradd", "--system", "--user-group", "--home-dir", "/nonexistent"]
            + ["--shell", "/usr/sbin/nologin", EXT_USER],
            capture_output=True,
            text=True,
        )
        try:
            return pwd.getpwnam(EXT_USER)
        except KeyError:
            raise AssertionError(f"useradd {EXT_USER} failed: {made.stderr}") from None


def _as(entry: pwd.struct_passwd) -> dict:
    """subprocess's arguments to run as ENTRY (nothing to change when it is this process's)."""
    if entry.pw_uid == os.geteuid():
        return {}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _owner() -> pwd.struct_passwd:
    """Who runs the hand-made servers: another account when the test starts as root, else the
    account the test runs as (pgpitr's own, in `make test`)."""
    return _ext_user() if os.geteuid() == 0 else pwd.getpwuid(os.geteuid())


@pytest.fixture
def debian() -> Iterator[Server]:
    """A Debian cluster, ``pg_createcluster 15 extNNN --start`` with archive_mode on."""
    if not shutil.which("pg_createcluster"):
        pytest.skip("postgresql-common (pg_createcluster) is not installed")
    name, port = f"ext{uuid.uuid4().hex[:8]}", free_port()
    subprocess.run(
        ["pg_createcluster", "15", name, "-p", str(port), "-o", "archive_mode=on", "--start"],
        check=True,
        capture_output=True,
    )
    try:
        yield Server(
            pgdata=f"/etc/postgresql/15/{name}",
            datadir=Path(f"/var/lib/postgresql/15/{name}"),
            os_user="postgres",
            role="postgres",
            socket_dir="/var/run/postgresql",
            port=port,
        )
    finally:
        subprocess.run(["pg_dropcluster", "15", name, "--stop"], capture_output=True)


@pytest.fixture
def handmade() -> Iterator[Callable[..., Server]]:
    """Servers made with initdb and pg_ctl by ``_owner()``, each with its own socket directory;
    ``make(start=False)`` leaves one stopped.  Every one is stopped and removed after."""
    entry = _owner()
    made: list[tuple[Path, Path]] = []

    def run_as(*argv: str | Path) -> None:
        subprocess.run(
            [str(a) for a in argv], **_as(entry), cwd="/", check=True, capture_output=True
        )

    def make(start: bool = True, bindir: Path = PG_BINDIR, **settings: str) -> Server:
        base = reachable_tempdir("pgpitr-ext-")
        made.append((base, bindir))
        datadir, socket_dir = base / "data", base / "sock"
        socket_dir.mkdir()
        if entry.pw_uid != os.geteuid():
            for path in (base, socket_dir):
                shutil.chown(path, entry.pw_uid, entry.pw_gid)
        run_as(bindir / "initdb", "-D", datadir, "--auth-local", "peer", "-E", "UTF8")
        port = free_port()
        lines = {
            "port": str(port),
            "unix_socket_directories": f"'{socket_dir}'",
            "listen_addresses": "''",
            "archive_mode": "on",
            **settings,
        }
        with open(datadir / "postgresql.conf", "a") as f:
            f.writelines(f"{k} = {v}\n" for k, v in lines.items())
        if start:
            run_as(bindir / "pg_ctl", "start", "-D", datadir, "-l", base / "server.log", "-w")
        return Server(str(datadir), datadir, entry.pw_name, entry.pw_name, str(socket_dir), port)

    yield make
    for base, bindir in made:
        if (base / "data" / "postmaster.pid").exists():
            run_as(bindir / "pg_ctl", "stop", "-D", base / "data", "-m", "immediate")
        shutil.rmtree(base, ignore_errors=True)


def _refused(result: subprocess.CompletedProcess[str], code: int, message: str) -> None:
    """Refused with one line of error (and at most one of hint), no traceback."""
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and len(lines) <= 3, result.stderr  # Prefect's note may precede


def _log_backup_on(name: str, user: str | None = None) -> None:
    policy = f"{name}-postgresql-backup-policy"
    cli("cluster", "edit-backup-policy", policy, "--set", "schedule.logfile.enable=true", user=user)


def _protect_write_restore(
    server: Server,
    name: str,
    home: Path,
    *extra: str,
    user: str | None = None,
    bindir: Path | None = None,
) -> None:
    """register, log backup on, backup, two rows a second apart, restore to between them;
    the commands as USER (root's test of a server another account runs); BINDIR: the server's
    binaries, when not the suite's own."""
    binaries = ["--bindir", str(bindir)] if bindir else []
    cli("cluster", "register", name, "--pgdata", server.pgdata, *binaries, *extra, user=user)
    _log_backup_on(name, user)
    assert f"wal-push --cluster {name}" in server.psql("SHOW archive_command")
    assert "wal-push" in (server.datadir / "postgresql.auto.conf").read_text()
    cli("cluster", "backup", name, user=user)

    noted = rows_either_side_of_a_second(name)

    copy = f"{name}-copy"
    when = timeparse.format_kbcli(noted)
    restore = ["restore", copy, "--restore-to-time", when, "--source-cluster", name]
    cli("cluster", *restore, *binaries, user=user)
    assert rows(copy) == [1]
    assert rows(name) == [1, 2]
    copied = json.loads((home / "clusters" / copy / "cluster.json").read_text())
    assert not copied.get("registered") and copied["bindir"] == str(bindir or PG_BINDIR)
    assert (
        copied.get("superuser", "postgres") == server.role
    )  # the source's roles came with its data


@pytest.mark.root  # pg_createcluster writes /etc/postgresql
def test_a_debian_cluster_is_protected_restored_and_let_go_as_it_was(
    home: Path, debian: Server
) -> None:
    before, pid = debian.snapshot(), debian.pid()
    _protect_write_restore(debian, "ext-pg", home)

    state = json.loads((home / "clusters" / "ext-pg" / "cluster.json").read_text())
    assert state["registered"] and state["pgdata"] == str(debian.datadir)
    assert state["config_dir"] == debian.pgdata
    assert state["debian_cluster"] == "15/" + debian.datadir.name
    assert (state["port"], state["server_socket_dir"]) == (debian.port, "/var/run/postgresql")
    assert (state["os_user"], state["superuser"], state["pg_version"]) == ("postgres",) * 2 + (15,)
    assert state["system_identifier"] == archive.system_identifier_of(debian.datadir)
    assert set(state["previous_settings"]) == {"archive_command", "archive_timeout"}
    kept = {p.name for p in (home / "clusters" / "ext-pg").iterdir()}
    assert {"cluster.json", "policy.json", "spool"} <= kept and not {"data", "run"} & kept
    described = json.loads(cli("cluster", "describe", "ext-pg", "-o", "json").stdout)
    assert described["datadir"] == str(debian.datadir) and described["status"] == "Running"

    cli("cluster", "create-account", "ext-pg", "--username", "app")
    cli("cluster", "grant-role", "ext-pg", "--username", "app", "--role", "READWRITE")
    granted = "SELECT pg_has_role('app', 'pg_write_all_data', 'member')"
    assert debian.psql(granted) == "t"

    deleted = cli("cluster", "delete", "ext-pg", check=False)
    _refused(deleted, 8, "pgpitr does not delete it")
    assert "pgpitr cluster unregister ext-pg" in deleted.stderr
    _refused(cli("cluster", "stop", "ext-pg", check=False), 8, "pass --force")

    cli("cluster", "unregister", "ext-pg")
    assert debian.snapshot() == before
    assert debian.pid() == pid  # never restarted
    assert not (home / "clusters" / "ext-pg").exists()
    repo = open_repository(default_repository_url(home))
    assert [b.name for b in backups.list_backups(repo, "ext-pg")]  # the backups stay


@pytest.fixture
def ext_home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A PGPITR_HOME of the other account's, for pgpitr run as that account."""
    entry = _ext_user()  # made here too: this test may run before any other that makes it
    path = reachable_tempdir("pgpitr-ext-home-")
    shutil.chown(path, entry.pw_uid, entry.pw_gid)
    monkeypatch.setenv("PGPITR_HOME", str(path))
    yield path
    stop_everything_under(path)
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.root  # another account runs the server
def test_a_server_another_account_runs_is_refused_by_pgpitrs_service_account(
    home: Path, handmade: Callable[..., Server]
) -> None:
    server = handmade()
    refused = cli("cluster", "register", "other-pg", "--pgdata", server.pgdata, check=False)
    _refused(refused, 8, f"runs as {EXT_USER}")
    assert f"sudo -u {EXT_USER}" in refused.stderr
    assert not (home / "clusters" / "other-pg").exists()


@pytest.mark.root  # another account runs the server, and pgpitr as that account protects it
# on each major: the version matrix runs no root test of its own (a pytest session as root per
# version cost more than the test)
@pytest.mark.parametrize("major", [None, 17, 18], ids=["suite", "17", "18"])
def test_a_server_run_by_hand_under_another_user_is_protected_and_let_go(
    ext_home: Path, handmade: Callable[..., Server], s3_url: str, major: int | None
) -> None:
    home = ext_home
    bindir = pgwheels.require(major) if major else None
    server = handmade(archive_timeout="'5min'", bindir=bindir or PG_BINDIR)
    server.psql("ALTER SYSTEM SET archive_timeout = '2min'")  # a value of its owner's
    server.psql("SELECT pg_reload_conf()")
    before, pid = server.snapshot(), server.pid()
    repository = ["--backup-repo", s3_url]
    _protect_write_restore(server, "hand-pg", home, *repository, user=EXT_USER, bindir=bindir)

    state = json.loads((home / "clusters" / "hand-pg" / "cluster.json").read_text())
    assert (state["os_user"], state["superuser"]) == (EXT_USER, EXT_USER)
    assert state["server_socket_dir"] == server.socket_dir and not state["debian_cluster"]
    assert state["previous_settings"]["archive_timeout"] == {"value": "2min", "in_auto_conf": True}
    assert server.psql("SHOW archive_timeout") == "1min"
    assert (home / "clusters" / "hand-pg" / "aws-credentials").stat().st_uid == pwd.getpwnam(
        EXT_USER
    ).pw_uid

    cli("cluster", "unregister", "hand-pg", user=EXT_USER)
    assert server.snapshot() == before
    assert server.psql("SHOW archive_timeout") == "2min"
    assert server.pid() == pid
    assert server.psql("SELECT count(*) FROM msg") == "2"  # its data untouched


def test_incrementals_asked_for_turn_on_wal_summaries_until_unregistered(
    home: Path, handmade: Callable[..., Server]
) -> None:
    bindir = pgwheels.require(17)
    server = handmade(bindir=bindir)
    cli("cluster", "register", "sum-pg", "--pgdata", server.pgdata, "--bindir", str(bindir))
    _log_backup_on("sum-pg")
    cli("cluster", "backup", "sum-pg")
    assert server.psql("SHOW summarize_wal") == "off"
    policy = "sum-pg-postgresql-backup-policy"
    cli("cluster", "edit-backup-policy", policy, "--set", "schedule.incremental.enable=true")
    assert server.psql("SHOW summarize_wal") == "on"
    cli("cluster", "backup", "sum-pg")  # summaries cover what follows this full
    server.psql("CREATE TABLE msg AS SELECT 1 AS id")
    cli("cluster", "backup", "sum-pg", "--type", "incremental")
    listed = json.loads(cli("cluster", "list-backup", "sum-pg", "-o", "json").stdout)
    assert [b["type"] for b in listed if b["status"] == "Completed"] == [
        "Full",
        "Full",
        "Incremental",
    ]
    cli("cluster", "unregister", "sum-pg")
    assert server.psql("SHOW summarize_wal") == "off"
    assert "summarize_wal" not in (server.datadir / "postgresql.auto.conf").read_text()


def test_archive_mode_off_is_refused_unless_a_restart_is_asked_for(
    home: Path, handmade: Callable[..., Server]
) -> None:
    server = handmade(archive_mode="off")
    before, pid = server.snapshot(), server.pid()
    refused = cli("cluster", "register", "off-pg", "--pgdata", server.pgdata, check=False)
    _refused(
        refused,
        8,
        "archive_mode is off on off-pg; turning it on needs a restart: pass --restart, or set "
        "it and restart yourself",
    )
    assert server.snapshot() == before and server.pid() == pid
    assert not (home / "clusters" / "off-pg").exists()

    said = cli("cluster", "register", "off-pg", "--pgdata", server.pgdata, "--restart")
    assert "restarted to turn archive_mode on" in said.stderr
    assert server.pid() != pid
    assert server.psql("SHOW archive_mode") == "on"
    unregistered = cli("cluster", "unregister", "off-pg")
    assert "archive_mode returns to its old value at the server's next restart" in (
        unregistered.stderr
    )
    settings, auto_conf = server.snapshot()
    assert auto_conf == before[1]  # every ALTER SYSTEM of pgpitr undone
    assert "archive_mode|on" in settings  # until the owner restarts it


# -- bad input: one line of error and hint, nothing changed on the server --------------------


def test_a_path_with_no_cluster_is_refused(home: Path) -> None:
    empty = reachable_tempdir("pgpitr-empty-")
    try:
        refused = cli("cluster", "register", "none-pg", "--pgdata", str(empty), check=False)
        _refused(refused, 3, f"no PostgreSQL cluster in {empty}")
        missing = cli("cluster", "register", "none-pg", "--pgdata", "/nonexistent/x", check=False)
        _refused(missing, 3, "/nonexistent/x does not exist")
    finally:
        shutil.rmtree(empty)
    assert not (home / "clusters" / "none-pg").exists()


def test_a_stopped_server_is_refused(home: Path, handmade: Callable[..., Server]) -> None:
    server = handmade(start=False)
    refused = cli("cluster", "register", "stopped", "--pgdata", server.pgdata, check=False)
    _refused(refused, 8, f"the server of {server.datadir} is not running")
    assert "start it first" in refused.stderr
    assert not (server.datadir / "postmaster.pid").exists()
    assert not (home / "clusters" / "stopped").exists()


def test_a_server_pgpitr_already_protects_is_refused(home: Path) -> None:
    cli("cluster", "create", "mine")
    datadir = home / "clusters" / "mine" / "data"
    conf_before = (datadir / "postgresql.auto.conf").read_text()
    refused = cli("cluster", "register", "again", "--pgdata", str(datadir), check=False)
    _refused(refused, 4, "is already protected by pgpitr as cluster 'mine'")
    assert (datadir / "postgresql.auto.conf").read_text() == conf_before
    assert not (home / "clusters" / "again").exists()


def test_wal_level_minimal_is_refused(home: Path, handmade: Callable[..., Server]) -> None:
    server = handmade(wal_level="minimal", max_wal_senders="0", archive_mode="off")
    before = server.snapshot()
    refused = cli("cluster", "register", "minimal", "--pgdata", server.pgdata, check=False)
    _refused(refused, 8, "wal_level is minimal on minimal")
    assert server.snapshot() == before
    assert not (home / "clusters" / "minimal").exists()


def test_a_bindir_of_another_major_is_refused(home: Path) -> None:
    bindir = pgwheels.require(17)  # the wrong major for a data directory of 15
    fake = reachable_tempdir("pgpitr-pg15-")
    try:
        (fake / "PG_VERSION").write_text("15\n")
        refused = cli(
            "cluster", "register", "wrong", "--pgdata", str(fake), "--bindir", str(bindir),
            check=False,
        )  # fmt: skip
        _refused(refused, 2, f"{bindir} holds PostgreSQL 17, not 15")
    finally:
        shutil.rmtree(fake)
    assert not (home / "clusters" / "wrong").exists()


def test_a_name_in_use_is_refused(home: Path, handmade: Callable[..., Server]) -> None:
    serverless_cluster(home, "taken", default_repository_url(home), 42)
    server = handmade()
    before = server.snapshot()
    refused = cli("cluster", "register", "taken", "--pgdata", server.pgdata, check=False)
    _refused(refused, 4, "cluster 'taken' already exists")
    assert server.snapshot() == before


def test_a_repository_holding_another_systems_archive_under_the_name_is_refused(
    home: Path, handmade: Callable[..., Server]
) -> None:
    repo = open_repository(default_repository_url(home))
    archive.check_archive_info(repo, "old-pg", "12345", create={"cluster": "old-pg"})
    server = handmade()
    before = server.snapshot()
    refused = cli("cluster", "register", "old-pg", "--pgdata", server.pgdata, check=False)
    _refused(refused, 6, "holds the archive of another cluster under 'old-pg'")
    assert server.snapshot() == before
    assert not (home / "clusters" / "old-pg").exists()


def test_unregister_of_a_created_cluster_is_refused(home: Path) -> None:
    serverless_cluster(home, "made", default_repository_url(home), 42)
    refused = cli("cluster", "unregister", "made", check=False)
    _refused(refused, 2, "cluster 'made' was created by pgpitr")
    assert "pgpitr cluster delete made" in refused.stderr
    assert (home / "clusters" / "made" / "cluster.json").exists()


# -- without a server ------------------------------------------------------------------------


def test_pgdata_names_the_data_directory_or_the_debian_configuration_directory(
    tmp_path: Path,
) -> None:
    from pgpitr.operations.register.server import locate

    data, etc = tmp_path / "data", tmp_path / "etc"
    data.mkdir()
    etc.mkdir()
    (data / "PG_VERSION").write_text("15\n")
    (etc / "postgresql.conf").write_text(f"port = 5432\ndata_directory = '{data}'\t# moved\n")
    assert locate(etc) == (data, etc)
    (data / "postmaster.opts").write_text(
        f'/usr/lib/postgresql/15/bin/postgres "-D" "{data}" '
        f'"-c" "config_file={etc}/postgresql.conf"\n'
    )
    assert locate(data) == (data, etc)
    (etc / "postgresql.conf").write_text(f"data_directory = '{tmp_path / 'gone'}'\n")
    with pytest.raises(NotFound, match="holds no cluster"):
        locate(etc)


def test_the_old_values_are_read_from_postgresql_auto_conf_as_written(tmp_path: Path) -> None:
    from pgpitr.operations.register.server import read_auto_conf

    (tmp_path / "postgresql.auto.conf").write_text(
        "# Do not edit this file manually!\n"
        "archive_timeout = '2min'\n"
        "archive_command = 'cp %p /arch/%f || echo ''it''s gone'''\n"
    )
    assert read_auto_conf(tmp_path) == {
        "archive_timeout": "2min",
        "archive_command": "cp %p /arch/%f || echo 'it's gone'",
    }
    assert read_auto_conf(tmp_path / "none") == {}


def test_a_restore_with_no_binaries_of_the_backups_major_is_refused() -> None:
    from pgpitr.operations.restore import planning
    from pgpitr.postgres import binaries

    missing = next((m for m in binaries.SUPPORTED if m not in binaries.installed()), None)
    if missing is None:
        pytest.skip("every supported major is installed here")
    with pytest.raises(ClusterStateError) as refused:
        planning._binaries_for(missing, None, None)
    assert refused.value.message == (
        f"the backup is PostgreSQL {missing}; install postgresql-{missing} or pass --bindir"
    )


def test_a_registered_state_names_the_servers_own_directories(tmp_path: Path) -> None:
    from pgpitr.state import ClusterState

    state = ClusterState(
        name="ext-pg", platform="local", port=5499, repository="file:///r", bindir="/b",
        os_user="postgres", registered=True, pgdata="/var/lib/postgresql/15/ext",
        server_socket_dir="/var/run/postgresql", home=str(tmp_path),
    )  # fmt: skip
    assert state.datadir == Path("/var/lib/postgresql/15/ext")
    assert state.socket_dir == Path("/var/run/postgresql")
    assert state.spool == tmp_path / "clusters" / "ext-pg" / "spool"  # pgpitr's own, here
    assert state.log_file == tmp_path / "clusters" / "ext-pg" / "log" / "postgresql.log"
    state.save()
    assert ClusterState.load("ext-pg", tmp_path) == state


def test_a_register_requests_flow_parameters_are_json_with_the_repository_as_text() -> None:
    """The request holds a RepositoryUrl; the flow takes text (its form in the Prefect UI): a
    URL object among the parameters made the served flow refuse the run."""
    from pgpitr.operations.register import RegisterRequest
    from pgpitr.repository import RepositoryUrl

    url = RepositoryUrl.parse("s3://bucket/backups?endpoint=http://127.0.0.1:9000&region=us-east-1")
    request = RegisterRequest("hand-pg", "/srv/data", backup_repo=url, restart=True)
    parameters = json.loads(json.dumps(request.as_parameters()))
    assert parameters["backup_repo"] == str(url)
    assert RepositoryUrl.parse(parameters["backup_repo"]) == url
    assert (parameters["name"], parameters["restart"]) == ("hand-pg", True)
    assert RegisterRequest("p", "/d").as_parameters()["backup_repo"] is None
