"""Backups, deletion, policies, accounts and lifecycle on real clusters, through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from pgpitr import cluster_repository, manifest
from pgpitr.catalog import backups, window
from pgpitr.errors import AlreadyExists
from pgpitr.operations import create, delete, log_backup
from pgpitr.operations.backup import lock as backup_lock
from pgpitr.operations.backup import names as backup_names
from pgpitr.postgres.cluster import Cluster
from tests import engine
from tests.conftest import PGPITR, cli, free_port, shared_home
from tests.pg import archive_now, commit_now, sql


@pytest.fixture
def archived(home: Path) -> Cluster:
    cli("cluster", "create", "ops")
    cli(
        "cluster",
        "edit-backup-policy",
        "ops-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=true",
    )
    return Cluster.get("ops")


def _backups(name: str) -> list[dict]:
    return json.loads(cli("cluster", "list-backup", name, "-o", "json").stdout)


def test_a_second_backup_while_one_runs_is_refused(archived: Cluster) -> None:
    with backup_lock.backup_lock(archived):
        result = cli("cluster", "backup", "ops", check=False)
    assert result.returncode == 5
    assert "a backup of cluster 'ops' is already running" in result.stderr
    assert _backups("ops") == []
    cli("cluster", "backup", "ops")  # the lock is released with its holder
    assert [b["status"] for b in _backups("ops")] == ["Completed"]


def test_a_killed_backup_is_failed_and_never_used(home: Path) -> None:
    # its own cluster name: the killed backup's Prefect slot is held until its lease expires
    cli("cluster", "create", "killed")
    cli(
        "cluster",
        "edit-backup-policy",
        "killed-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=true",
    )
    archived = Cluster.get("killed")
    subprocess.run(
        [
            str(archived.bindir / "pgbench"),
            "-i",
            "-s",
            "15",
            "-q",
            "-h",
            str(archived.state.socket_dir),
            "-p",
            str(archived.state.port),
            "-U",
            "postgres",
            "postgres",
        ],
        check=True,
        capture_output=True,
    )
    repo = cluster_repository.repository(archived)
    process = subprocess.Popen(
        [*PGPITR, "cluster", "backup", "killed", "--backup-name", "doomed"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def streaming() -> bool:
        """The server sends the data files: the backup is under way, far from its end."""
        progress = sql("killed", "SELECT backup_streamed FROM pg_stat_progress_basebackup")
        return bool(progress) and progress[0][0] > 0

    deadline = time.monotonic() + 30
    while not (repo.exists(manifest.manifest_key("killed", "doomed")) and streaming()):
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    (doomed,) = _backups("killed")
    assert doomed["status"] == "Failed" and doomed["completion_time"] is None
    assert not repo.exists(manifest.data_key("killed", "doomed"))
    assert window.recoverable_window(repo, "killed", archived.bindir).ranges == []
    refused = cli("cluster", "restore", "from-doomed", "--source-cluster", "killed", check=False)
    assert refused.returncode == 3 and "no completed backup" in refused.stderr
    refused = cli(
        "cluster",
        "restore",
        "from-doomed",
        "--source-cluster",
        "killed",
        "--backup",
        "doomed",
        check=False,
    )
    assert refused.returncode == 9 and "Failed, not Completed" in refused.stderr


def test_delete_backup_keeps_what_the_window_needs_unless_forced(archived: Cluster) -> None:
    cli("cluster", "backup", "ops", "--backup-name", "first")
    sql("ops", "CREATE TABLE msg (id int)")
    commit_now("ops", "INSERT INTO msg VALUES (1)")
    archive_now("ops")
    cli("cluster", "backup", "ops", "--backup-name", "second")
    commit_now("ops", "INSERT INTO msg VALUES (2)")
    archive_now("ops")
    repo = cluster_repository.repository(archived)
    wal_before = len(list(repo.list("ops/wal/")))

    refused = cli("cluster", "delete-backup", "ops", "--name", "first", check=False)
    assert refused.returncode == 1 and "starts from backup 'first'" in refused.stderr
    assert "--force" in refused.stderr
    missing = cli("cluster", "delete-backup", "ops", "--name", "nope", check=False)
    assert missing.returncode == 3

    cli("cluster", "delete-backup", "ops", "--name", "second")  # not the window's start
    assert [b["name"] for b in _backups("ops")] == ["first"]
    cli("cluster", "delete-backup", "ops", "--name", "first", "--force")
    assert _backups("ops") == []
    assert len(list(repo.list("ops/wal/"))) < wal_before


def test_delete_all_backups_needs_force_and_reports_the_count(archived: Cluster) -> None:
    cli("cluster", "backup", "ops", "--backup-name", "one")
    cli("cluster", "backup", "ops", "--backup-name", "two")
    result = cli("cluster", "delete-backup", "ops", check=False)
    assert result.returncode == 2 and "--force" in result.stderr
    result = cli("cluster", "delete-backup", "ops", "--force")
    assert "(2 backup(s))" in result.stderr
    assert _backups("ops") == []


def test_policy_edits_are_validated_before_anything_is_saved(archived: Cluster) -> None:
    before = (archived.state.dir / "policy.json").read_text()
    bad = cli(
        "cluster",
        "edit-backup-policy",
        "ops-postgresql-backup-policy",
        "--set",
        "retention.ttl=3d,schedule.datafile.cronExpression=99 * * * *",
        check=False,
    )
    assert bad.returncode == 2 and "cron" in bad.stderr
    unknown = cli(
        "cluster",
        "edit-backup-policy",
        "ops-postgresql-backup-policy",
        "--set",
        "schedule.bogus=1",
        check=False,
    )
    assert unknown.returncode == 2 and "schedule.logfile.enable" in unknown.stderr
    assert (archived.state.dir / "policy.json").read_text() == before
    cli(
        "cluster",
        "edit-backup-policy",
        "ops-postgresql-backup-policy",
        "--set",
        "retention.ttl=3d",
        "--set",
        "schedule.datafile.cronExpression=0 3 * * *",
    )
    (row,) = json.loads(cli("cluster", "list-backup-policy", "-o", "json").stdout)
    assert (row["name"], row["cluster"]) == ("ops-postgresql-backup-policy", "ops")
    assert (
        json.loads(cli("cluster", "describe", "ops", "-o", "json").stdout)["backup_schedule"]
        == "0 3 * * *"
    )


def test_log_backup_off_stops_archiving_without_piling_up_wal(archived: Cluster) -> None:
    cli(
        "cluster",
        "edit-backup-policy",
        "ops-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=false",
    )
    assert sql("ops", "SHOW archive_command")[0][0] == "/bin/true"
    for _ in range(3):
        switched = sql("ops", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    # the archiver has been through every switched segment: each is .done, or still .ready
    query = "SELECT last_archived_wal FROM pg_stat_archiver"
    deadline = time.monotonic() + 30
    while (sql("ops", query)[0][0] or "")[:24] < switched:
        assert time.monotonic() < deadline, f"the archiver did not reach {switched} in 30 s"
        time.sleep(0.05)
    ready = list((archived.state.datadir / "pg_wal" / "archive_status").glob("*.ready"))
    assert ready == []
    # a backup with log backup off carries its own WAL and is still a full backup
    cli("cluster", "backup", "ops", "--backup-name", "self-contained")
    (b,) = _backups("ops")
    assert b["status"] == "Completed"


@pytest.fixture(scope="module")
def accounts_cluster() -> Iterator[Cluster]:
    with shared_home():
        cli("cluster", "create", "ops")
        yield Cluster.get("ops")


@pytest.mark.parametrize("username", ["my user", 'we"ird', "x'; DROP TABLE msg; --", "ünï"])
def test_accounts_with_hostile_names_work_and_inject_nothing(
    accounts_cluster: Cluster, username: str
) -> None:
    archived = accounts_cluster
    sql("ops", "DROP TABLE IF EXISTS msg")
    sql("ops", "CREATE TABLE msg (id int)")
    sql("ops", "INSERT INTO msg VALUES (1)")
    created = cli("cluster", "create-account", "ops", "--username", username)
    password = created.stdout.split("password:", 1)[1].strip()
    assert len(password) >= 20
    cli("cluster", "grant-role", "ops", "--username", username, "--role", "READONLY")
    dsn = {
        "host": "127.0.0.1",
        "port": archived.state.port,
        "dbname": "postgres",
        "user": username,
        "password": password,
    }
    with psycopg.connect(**dsn) as db:
        assert db.execute("SELECT count(*) FROM msg").fetchone() == (1,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            db.execute("INSERT INTO msg VALUES (2)")
    cli("cluster", "grant-role", "ops", "--username", username, "--role", "READWRITE")
    with psycopg.connect(**dsn) as db:
        db.execute("INSERT INTO msg VALUES (2)")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(**{**dsn, "password": "wrong"})
    assert sql("ops", "SELECT count(*) FROM msg") == [(2,)]
    log = archived.state.log_file.read_text()
    assert password not in log
    again = cli("cluster", "create-account", "ops", "--username", username, check=False)
    assert again.returncode == 4 and password not in again.stderr


def test_lifecycle_refusals(home: Path) -> None:
    bad = cli("cluster", "create", "Bad_Name", check=False)
    assert bad.returncode == 2 and "invalid cluster name" in bad.stderr
    port = free_port()
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
        s.listen()
        taken = cli("cluster", "create", "lc", "--port", str(port), check=False)
    assert taken.returncode == 4 and "in use" in taken.stderr
    assert not (home / "clusters" / "lc").exists()
    cli("cluster", "create", "lc")
    cli("cluster", "stop", "lc")
    assert "Stopped" in cli("cluster", "list").stdout
    cli("cluster", "start", "lc")
    assert "Running" in cli("cluster", "list").stdout
    assert cli("cluster", "create", "lc", check=False).returncode == 4
    cli("cluster", "delete", "lc")
    assert not (home / "clusters" / "lc").exists()
    unknown = cli("cluster", "describe", "lc", check=False)
    assert unknown.returncode == 3 and "does not exist" in unknown.stderr


def test_cluster_processes_run_as_an_unprivileged_user(archived: Cluster) -> None:
    pid = archived.pid()
    assert pid is not None
    uid = os.stat(f"/proc/{pid}").st_uid
    assert uid != 0 and uid == archived.user.uid
    data = archived.state.datadir
    assert os.stat(data).st_uid == archived.user.uid
    assert oct(os.stat(data).st_mode & 0o777) == "0o700"


def test_a_deleted_clusters_leftover_stanza_does_not_block_its_name(home: Path) -> None:
    from pgpitr import cluster_repository
    from pgpitr.catalog import backups
    from pgpitr.operations.restore import data as restore_data

    first = create.create("reuse")
    log_backup.set_log_backup(first, True)
    engine.backup(first)
    old_system_id = first.state.system_identifier
    delete.delete(first)
    repo = cluster_repository.repository(first)
    assert not backups.leftover_stanza(repo, "reuse")  # backups remain: the name stays taken
    with pytest.raises(AlreadyExists, match="already holds backups"):
        create.create("reuse")
    engine.delete_backups("reuse", None, force=True)
    assert backups.leftover_stanza(repo, "reuse")  # archive info and history only
    again = create.create("reuse")
    log_backup.set_log_backup(again, True)
    assert again.state.system_identifier != old_system_id
    assert repo.get_json("reuse/archive.info")["system_identifier"] == again.state.system_identifier
    assert restore_data.remove_interrupted("reuse") is False


def test_an_uncompressed_backup_is_verified_restored_and_deleted(archived: Cluster) -> None:
    from pgpitr import cluster_repository
    from pgpitr.operations import retention, verify

    sql("ops", "CREATE TABLE msg (id int)")
    commit_now("ops", "INSERT INTO msg VALUES (1)")
    policy = "ops-postgresql-backup-policy"
    cli("cluster", "edit-backup-policy", policy, "--set", "schedule.datafile.compression=none")
    cli("cluster", "backup", "ops", "--backup-name", "plain")
    repo = cluster_repository.repository(archived)
    plain = backups.get_backup(repo, "ops", "plain")
    assert plain.compression == "none"
    assert repo.exists("ops/backups/plain/base.tar")
    assert not repo.exists("ops/backups/plain/base.tar.zst")
    assert plain.stored_size >= plain.database_size * 0.9
    verify.verify_backup("ops", "plain")

    target = commit_now("ops", "INSERT INTO msg VALUES (2)")
    time.sleep(0.05)
    commit_now("ops", "INSERT INTO msg VALUES (3)")
    archive_now("ops")
    engine.restore("ops-plain", "ops", target)
    assert sql("ops-plain", "SELECT id FROM msg ORDER BY id") == [(1,), (2,)]

    retention.delete_backups(repo, "ops", ["plain"], force=True)
    assert not repo.exists("ops/backups/plain/base.tar")


def test_a_default_backup_name_taken_this_second_is_not_reused(accounts_cluster: Cluster) -> None:
    """Default names are to the second: a full and its incremental can start in one second."""
    from datetime import UTC, datetime, timedelta

    name, stanza = accounts_cluster.name, accounts_cluster.state.stanza
    repo = cluster_repository.repository(accounts_cluster)
    now = datetime.now(UTC)
    taken = [backup_names.default_name(name, now + timedelta(seconds=s)) for s in (0, 1)]
    for each in taken:
        repo.put_json(manifest.manifest_key(stanza, each), {})
    try:
        fresh = backup_names.fresh_name(name)
        assert fresh not in taken and fresh.startswith(f"backup-default-{name}-")
    finally:
        for each in taken:
            repo.delete(manifest.manifest_key(stanza, each))
