"""Orchestration end to end: the CLI runs flows, deployments are served, schedules follow the
backup policy, tasks retry what is transient, a failed restore leaves nothing, retention keeps
what the window needs, events reach the API, and no secret is ever recorded.

The tests share one served set of deployments and module-scoped fixtures that build what they
check: the source cluster `src` (on S3), the walkthrough on it, a cluster `sched` whose backups
are scheduled every minute.  Every test asks for the fixtures it needs, so that each one passes
alone and the file passes in any order (pytest-randomly shuffles it).  A test that changes shared
state (the schedule of `sched`) works on a cluster no other test reads it from.
"""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from pgpitr import cluster_repository, policy_store, repository, timeparse
from pgpitr.catalog import backups
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import ChecksumMismatch, RecoveryTargetError
from pgpitr.manifest import clear_damage
from pgpitr.operations import create, log_backup, verify
from pgpitr.postgres.cluster import Cluster
from pgpitr.wal import archive
from tests import engine
from tests.conftest import S3_SECRET, cli
from tests.flows import api
from tests.flows.conftest import HOST, REPO_ROOT, wait_served
from tests.flows.repos import RefusesFirstUpload, ShortBaseBackup
from tests.pg import archive_now, rows, rows_either_side_of_a_second, sql

pytestmark = pytest.mark.timeout(240)


def deployment(flow_name: str):
    """FLOW's deployment on the module's host."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(f"{flow_name}/pgpitr-{HOST}")


def backup_schedule(cluster: str):
    (found,) = [s for s in deployment("backup").schedules if s.slug == f"{HOST}/{cluster}"]
    return found


@pytest.fixture(scope="module")
def ready(served: subprocess.Popen[bytes], flows_home) -> None:
    """Every deployment applied and served."""
    wait_served(served, flows_home)


@dataclass(frozen=True)
class Walkthrough:
    password: str  # of account myuser, printed once by create-account
    restored: subprocess.CompletedProcess[str]  # `cluster restore restored` to between rows 1, 2


@pytest.fixture(scope="module")
def walkthrough(source: str, ready: None) -> Walkthrough:
    """kbcli's walkthrough on `src` through the CLI: an account with a role, table msg with row 1
    committed a second before a noted time and row 2 a second after, archived, and a restore to
    the noted time into `restored`."""
    created = cli("cluster", "create-account", "src", "--username", "myuser")
    password = re.search(r"password: (\S+)", created.stdout).group(1)
    cli("cluster", "grant-role", "src", "--username", "myuser", "--role", "READWRITE")
    noted = rows_either_side_of_a_second("src")
    restored = cli(
        "cluster",
        "restore",
        "restored",
        "--restore-to-time",
        timeparse.format_kbcli(noted, "Asia/Shanghai"),
        "--source-cluster",
        "src",
    )
    return Walkthrough(password=password, restored=restored)


def test_walkthrough_runs_as_flows_with_tasks_and_artifacts(walkthrough: Walkthrough):
    restored = walkthrough.restored
    assert "Traceback" not in restored.stderr and "Flow run" not in restored.stderr
    assert rows("restored") == [1]

    expected = [
        f"create-cluster-{HOST}/src",
        f"edit-backup-policy-{HOST}/src",
        f"backup-{HOST}/src",
        f"create-account-{HOST}/src-myuser",
        f"grant-role-{HOST}/src-myuser",
        f"restore-{HOST}/restored-from-src",
    ]
    runs = {r.name: r for r in api.flow_runs(*expected) if r.state.is_completed()}
    assert sorted(runs) == sorted(expected)
    for run in runs.values():
        assert api.task_runs(run.id), f"{run.name} has no task run"
    # the log-backup switch is a step (task) of the policy edit, run once, completed
    switched = api.task_run(runs[f"edit-backup-policy-{HOST}/src"].id, "set-log-backup")
    assert switched.state.is_completed() and switched.run_count == 1
    assert api.task_run(
        runs[f"restore-{HOST}/restored-from-src"].id, "materialise"
    ).state.is_completed()
    for key in ("backups", "backup-progress"):
        assert api.artifacts(f"{key}-{HOST}-src"), f"no artifact {key}-{HOST}-src"
    assert api.artifacts(f"restore-progress-{HOST}-restored")
    shown = api.artifacts(f"backup-progress-{HOST}-src", flow_run=runs[f"backup-{HOST}/src"].id)
    assert shown and shown[0].data == 100.0  # the last update, after the reporter's
    (table,) = api.artifacts(f"backups-{HOST}-src", flow_run=runs[f"backup-{HOST}/src"].id)
    assert "backup-default-src-" in json.dumps(table.data)
    resource = f"pgpitr.cluster.{HOST}.src"
    completed = api.events("pgpitr.backup.completed", resource=resource)
    assert any(e["resource"]["prefect.resource.id"] == resource for e in completed)
    assert all(e["resource"]["pgpitr.host"] == HOST for e in completed)


def test_restore_triggered_through_the_api_runs_on_the_served_deployment(walkthrough: Walkthrough):
    run = subprocess.run(
        [sys.executable, "-m", "prefect", "deployment", "run", f"restore/pgpitr-{HOST}"]
        + ["--param", "new_name=api-restored", "--param", "source_cluster=src"]
        + ["--watch", "--watch-timeout", "150"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=200,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert rows("api-restored") == [1, 2]
    (flow_run,) = api.flow_runs(f"restore-{HOST}/api-restored-from-src")
    assert flow_run.deployment_id == deployment("restore").id
    # through the deployment from the CLI, an engine error keeps its message and exit code
    refused = cli(
        "cluster",
        "restore",
        "too-early",
        "--source-cluster",
        "src",
        "--restore-to-time",
        "2001-01-01T00:00:00Z",
        "--wait",
        check=False,
    )
    assert refused.returncode == 9, refused.stderr
    assert refused.stderr.startswith("error: Jan 01,2001 00:00:00 UTC+0000 is outside")
    assert "Traceback" not in refused.stderr


EVERY_MINUTE = "schedule.datafile.cronExpression=* * * * *,schedule.datafile.timezone=Asia/Shanghai"


@pytest.fixture(scope="module")
def every_minute(flows_home, s3_repo: str, ready: None) -> datetime:
    """Cluster `sched`, its backups scheduled every minute (its own cluster: the schedule tests
    change its policy, and a scheduled backup of `src` would make the other tests' backups of
    `src` Busy); the time just before the schedule changed."""
    cli("cluster", "create", "sched", "--backup-repo", s3_repo)
    changed = datetime.now(UTC)
    cli("cluster", "edit-backup-policy", "sched-postgresql-backup-policy", "--set", EVERY_MINUTE)
    return changed


def test_edit_backup_policy_sets_the_deployment_schedule(every_minute: datetime):
    # enabled again explicitly: the test of the scheduled backup may have disabled it already
    cli(
        "cluster",
        "edit-backup-policy",
        "sched-postgresql-backup-policy",
        "--set",
        f"{EVERY_MINUTE},schedule.datafile.enable=true",
    )
    schedule = backup_schedule("sched")
    assert schedule.schedule.cron == "* * * * *"
    assert schedule.schedule.timezone == "Asia/Shanghai"
    assert schedule.active
    assert schedule.parameters == {"cluster": "sched", "apply_retention_after": True}
    listed = json.loads(cli("cluster", "list-backup-policy", "-o", "json").stdout)
    (row,) = [r for r in listed if r["cluster"] == "sched"]
    assert row["backup_schedule"] == "* * * * *" and row["auto_backup"] is True
    assert row["schedule_source"] == f"deployment backup/pgpitr-{HOST}"


def test_a_policy_edit_that_changes_no_schedule_writes_none(every_minute: datetime):
    before = backup_schedule("sched")
    policy = "sched-postgresql-backup-policy"
    cli("cluster", "edit-backup-policy", policy, "--set", "retention.ttl=9d")
    after = backup_schedule("sched")
    assert (after.id, after.updated) == (before.id, before.updated)


class CountingClient:
    """A real Prefect client that counts the calls made through it, by name."""

    def __init__(self, client) -> None:
        self._client = client
        self.calls: list[str] = []
        #: the JSON bodies of the requests made with ``request``
        self.bodies: list[object] = []

    def __getattr__(self, name: str):
        method = getattr(self._client, name)

        def counted(*args, **kwargs):
            self.calls.append(args[1] if name == "request" else name)
            if name == "request":
                self.bodies.append(kwargs.get("json"))
            return method(*args, **kwargs)

        return counted


def test_a_clusters_schedules_cost_one_read_and_one_scheduling_per_deployment(ready: None):
    from prefect.client.orchestration import get_client

    from pgpitr.policy import BackupPolicy
    from tasks import schedules

    policy = BackupPolicy("counted", create_time=datetime.now(UTC).isoformat())
    deployments = {s.deployment for s in schedules.for_policy(policy, HOST)}
    assert len(deployments) == 2  # full and incremental share the backup deployment
    with get_client(sync_client=True) as client:
        counting = CountingClient(client)
        try:
            before = datetime.now(UTC)
            said = schedules.sync(policy, client=counting, host=HOST)
            assert len(said) == 3 and not any("unchanged" in line for line in said), said
            calls = counting.calls
            assert calls.count("read_deployment_by_name") == 2, calls
            assert calls.count("create_deployment_schedules") == 3, calls
            # runs made ahead once for each of the 2 deployments written to, from a moment
            # before the writes: the server deleted the other clusters' scheduled runs, and
            # one due between the write and this call is made again, not lost
            assert sum(c.endswith("/schedule") for c in calls) == 2, calls
            for body in counting.bodies:
                made_from = datetime.fromisoformat(body["start_time"])
                assert before <= made_from <= before + timedelta(seconds=5), body
            (drill,) = [s for s in deployment("drill").schedules if s.slug == f"{HOST}/counted"]
            assert (drill.schedule.cron, drill.active) == ("0 3 * * *", True)  # daily
            assert drill.parameters == {"cluster": "counted", "at": "random"}

            counting.calls.clear()
            again = schedules.sync(policy, client=counting, host=HOST)
            assert all(line.endswith("unchanged") for line in again), again
            assert counting.calls == ["read_deployment_by_name"] * 2
        finally:
            counting.bodies.clear()
            before = datetime.now(UTC)
            removed = schedules.remove("counted", client=counting, host=HOST)
    assert len(removed) == 3, removed
    assert len(counting.bodies) == 2
    assert all(before <= datetime.fromisoformat(b["start_time"]) for b in counting.bodies)


def test_a_refused_upload_is_retried_and_the_backup_completes(source, monkeypatch):
    from flows.backup import backup

    real = cluster_repository.repository
    monkeypatch.setattr(cluster_repository, "repository", lambda c: RefusesFirstUpload(real(c)))
    RefusesFirstUpload.failures.clear()
    state = backup(cluster="src", backup_name="retried-backup", return_state=True)
    assert state.is_completed(), state.message
    assert RefusesFirstUpload.failures == ["src/backups/retried-backup/base.tar.zst"]
    stream = api.task_run(state.state_details.flow_run_id, "stream-base-backup")
    assert stream.run_count == 2 and stream.state.is_completed()
    named = [b for b in backups.list_backups(real(Cluster.get("src")), "src")]
    assert [b.status for b in named if b.name == "retried-backup"] == ["Completed"]


def test_a_bad_target_fails_at_once_without_retries(source):
    from flows.restore import restore

    with pytest.raises(RecoveryTargetError, match="outside the recoverable window"):
        restore(new_name="never", source_cluster="src", target={"time": "2001-01-01T00:00:00Z"})
    (run,) = api.flow_runs(f"restore-{HOST}/never-from-src")
    assert api.task_run(run.id, "choose-backup").run_count == 1
    assert "never" not in [c.name for c in Cluster.all()]


def test_a_failed_restore_rolls_back_and_leaves_nothing(source, flows_home, monkeypatch):
    from flows.restore import restore

    src = Cluster.get("src")
    repo = cluster_repository.repository(src)
    real = repository.open_repository
    # the restore reads its source's repository (pgpitr/catalog/source.py)
    monkeypatch.setattr(
        "pgpitr.catalog.source.open_repository", lambda *a, **k: ShortBaseBackup(real(*a, **k))
    )
    try:
        with pytest.raises(ChecksumMismatch):
            restore(new_name="broken", source_cluster="src")
        assert not (flows_home / "clusters" / "broken").exists()
        assert "broken" not in [c.name for c in Cluster.all()]
        (run,) = api.flow_runs(f"restore-{HOST}/broken-from-src")
        assert api.task_run(run.id, "create-cluster-directory").state.is_completed()
        materialise = api.task_run(run.id, "materialise")
        assert materialise.state.is_failed() and materialise.run_count == 1
        # what the read found is recorded; a verify that reads the object whole clears it
        monkeypatch.undo()
        window = catalog_window.recoverable_window(repo, "src", src.bindir)
        (damaged,) = [n for n, why in window.unusable.items() if "found damaged" in why]
        assert "its damage record removed" in verify.verify_backup("src", damaged)
        assert catalog_window.recoverable_window(repo, "src", src.bindir).unusable == {}
    finally:  # the module's other tests restore from src
        for b in backups.list_backups(repo, "src"):
            clear_damage(repo, "src", b.name)


def _set_policy(cluster: Cluster, **changes: object) -> None:
    policy = policy_store.load_policy(cluster)
    if "logfile_enabled" in changes:
        log_backup.set_log_backup(cluster, bool(changes["logfile_enabled"]))
        policy = policy_store.load_policy(cluster)
    policy_store.save_policy(cluster, dataclasses.replace(policy, **changes))


def test_retention_expires_by_ttl_keeps_the_window_and_prunes_wal(flows_home, api_url):
    from flows.retention import apply_retention

    ret = create.create("ret")
    _set_policy(ret, logfile_enabled=True, ttl="2s")
    first = engine.backup(ret).name
    _set_policy(ret, logfile_enabled=False, ttl="7d")
    unarchived = engine.backup(ret).name  # WAL inside, none archived: starts no window
    time.sleep(2.2)

    kept = apply_retention("ret")
    assert kept["removed"] == [] and list(kept["kept"]) == [first]

    _set_policy(ret, logfile_enabled=True)
    third = engine.backup(ret).name
    pruned = apply_retention("ret")
    assert pruned["removed"] == [first] and pruned["wal_files"] > 0
    repo = cluster_repository.repository(ret)
    remaining = backups.list_backups(repo, "ret")
    assert [b.name for b in remaining] == [unarchived, third]
    floor = min(b.start_lsn_int for b in remaining)
    size = ret.state.wal_segment_size
    for info in repo.list("ret/wal/"):
        name = archive.split_object_key(info.key)[0]
        if not name.endswith(".history"):
            assert archive.Segment.parse(name[:24], size).number >= floor // size, name
    assert any(first in a.data for a in api.artifacts(f"retention-{HOST}-ret"))


def test_archiving_that_falls_behind_raises_an_event(flows_home, api_url):
    from flows.window import refresh_recoverable_window

    behind = create.create("behind")
    log_backup.set_log_backup(behind, True)
    archive_now("behind")  # the repository's WAL directories exist
    wal_root = flows_home / "repo" / "behind" / "wal"
    directories = [wal_root, *(p for p in wal_root.rglob("*") if p.is_dir())]
    for d in directories:
        d.chmod(0o555)  # the archiver (the server's OS user) can no longer write
    try:
        sql("behind", "CREATE TABLE IF NOT EXISTS t (i int); INSERT INTO t VALUES (1)")
        sql("behind", "SELECT pg_switch_wal()")
        api.wait_for(
            lambda: sql("behind", "SELECT failed_count FROM pg_stat_archiver")[0][0] > 0,
            60,
            "a failed archive attempt",
            interval=0.3,
        )
        result = refresh_recoverable_window("behind")
    finally:
        for d in directories:
            d.chmod(0o750)
    assert result["archiver"]["behind"] and "fails" in result["archiver"]["reason"]
    resource = f"pgpitr.cluster.{HOST}.behind"
    (event, *_) = api.events("pgpitr.wal.archiving-behind", resource=resource)
    assert event["resource"]["prefect.resource.id"] == resource
    assert api.artifacts(f"recoverable-window-{HOST}-behind")


def test_without_an_api_the_schedule_comes_from_the_saved_policy(source):
    listed = cli(
        "cluster",
        "list-backup-policy",
        "-o",
        "json",
        env={"PREFECT_API_URL": "http://127.0.0.1:9/api"},
    )
    (row,) = [r for r in json.loads(listed.stdout) if r["cluster"] == "src"]
    assert row["schedule_source"].startswith("saved policy")
    assert (
        "warning: scheduled backups of src will not run while the Prefect API at "
        "http://127.0.0.1:9/api does not answer" in listed.stderr
    ), listed.stderr


@pytest.mark.timeout(360)
def test_the_scheduled_backup_fires_and_disabling_pauses_the_schedule(every_minute: datetime):
    since = every_minute
    backup_deployment = deployment("backup").id

    def fired():
        return [
            r
            for r in api.flow_runs()
            if r.deployment_id == backup_deployment
            and r.parameters.get("cluster") == "sched"
            and r.auto_scheduled
            and r.state.is_completed()
        ]

    api.fire_minutely_schedules(backup_deployment)
    # the run of the minute just gone or of the next one, then the backup, on a loaded machine
    api.wait_for(fired, 240, "a scheduled backup of sched")
    repo = cluster_repository.repository(Cluster.get("sched"))
    assert any(b.completed and b.start_time >= since for b in backups.list_backups(repo, "sched"))
    assert api.flow_runs(f"apply-retention-{HOST}/sched"), "retention runs after a scheduled backup"

    from flows.policy import edit_backup_policy

    edit_backup_policy(cluster="sched", settings=["schedule.datafile.enable=false"])
    assert backup_schedule("sched").active is False
    described = cli("cluster", "describe", "sched").stdout
    assert re.search(r"^Disabled\s+\* \* \* \* \*", described, re.M), described


def test_no_secret_in_any_flow_parameter_or_log(walkthrough: Walkthrough, every_minute: datetime):
    secrets = [S3_SECRET, walkthrough.password]
    runs = api.flow_runs()
    assert len(runs) >= 10
    recorded = json.dumps([r.parameters for r in runs]) + "\n".join(api.logs())
    for secret in secrets:
        assert secret not in recorded
    assert any(r.name == f"create-account-{HOST}/src-myuser" for r in runs)
