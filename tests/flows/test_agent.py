"""The agent of a host: a `* * * * *` backup schedule fires on its host's agent and never on
another's; `describe` says when no agent serves the schedules; a restore of host A's cluster
onto host B runs on B's agent and has the exact rows; an agent that starts serving removes the
served deployments of the naming before host identity.  Two hosts are simulated by two homes
with their own PGPITR_HOST and agent, on the session's Prefect server.  The agents poll every
second (PREFECT_RUNNER_POLL_FREQUENCY, which describe reads too), so that a stopped agent shows
after 15 s rather than 30."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgpitr.postgres.cluster import Cluster
from tests.conftest import PGPITR, cli, free_port, reachable_tempdir, stop_everything_under
from tests.deployments.test_serve import existing, make_old_deployments
from tests.flows import api
from tests.flows.conftest import REPO_ROOT
from tests.pg import archive_now, rows, sql
from tests.test_metrics import scrape

pytestmark = pytest.mark.timeout(600)

HOSTS = ("agent-a", "agent-b")


def deployment(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def agent(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*PGPITR, "agent", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        cwd=REPO_ROOT,
        timeout=120,
    )


def served(host: str) -> bool:
    from prefect.exceptions import ObjectNotFound

    try:
        found = deployment(f"backup/pgpitr-{host}")
    except ObjectNotFound:
        return False
    return getattr(found.status, "value", found.status) == "READY"


@pytest.fixture(scope="module")
def old_deployments(api_url: str) -> dict:
    return make_old_deployments()


@pytest.fixture(scope="module")
def hosts(api_url: str, old_deployments: dict) -> Iterator[dict[str, dict[str, str]]]:
    """An environment per host, each with its agent running; before they start, the server has
    the deployments of an older pgpitr (``old_deployments``)."""
    made = {}
    try:
        for host in HOSTS:
            path = reachable_tempdir(f"pgpitr-{host}-")
            made[host] = {
                "PGPITR_HOST": host,
                "PGPITR_HOME": str(path),
                "TZ": "UTC",
                "PREFECT_RUNNER_POLL_FREQUENCY": "1",
                "PGPITR_METRICS_PORT": str(free_port()),
                "PGPITR_METRICS_REFRESH": "1",
            }
            started = agent(made[host], "start")
            assert started.returncode == 0, started.stderr
        for host in HOSTS:
            api.wait_for(lambda host=host: served(host), 180, f"the agent of {host} serving")
        yield made
    finally:
        for env in made.values():
            home = Path(env["PGPITR_HOME"])
            agent(env, "stop")
            with contextlib.suppress(OSError, ValueError, KeyError):  # if stop did not
                os.killpg(
                    json.loads((home / "agent" / "agent.json").read_text())["pid"], signal.SIGKILL
                )
            stop_everything_under(home)
            shutil.rmtree(home, ignore_errors=True)


def describe(env: dict[str, str]) -> tuple[dict, str]:
    done = cli("cluster", "describe", "my-pg", "-o", "json", env=env)
    return json.loads(done.stdout), done.stderr


@contextlib.contextmanager
def at(env: dict[str, str]) -> Iterator[None]:
    """This process acting in ENV's home (tests/pg.py reaches clusters through it)."""
    saved = os.environ.get("PGPITR_HOME")
    os.environ["PGPITR_HOME"] = env["PGPITR_HOME"]
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("PGPITR_HOME", None)
        else:
            os.environ["PGPITR_HOME"] = saved


def test_an_agent_serves_the_metrics_of_its_hosts_clusters(hosts):
    b = hosts["agent-b"]  # agent-a may have been stopped by the schedule's test
    cli("cluster", "create", "metrics-pg", "--port", str(free_port()), env=b)
    url = f"http://127.0.0.1:{b['PGPITR_METRICS_PORT']}/metrics"

    def running() -> dict:  # each sample labelled host=agent-b (scrape checks it)
        return scrape(url, "agent-b").get("pgpitr_cluster_running", {})

    api.wait_for(lambda: running().get("metrics-pg") == 1.0, 60, "metrics-pg in b's metrics")


def test_a_restore_onto_another_host_runs_on_its_agent_with_the_exact_rows(hosts):
    a, b = hosts["agent-a"], hosts["agent-b"]
    cli("cluster", "create", "src-a", "--port", str(free_port()), env=a)
    policy = "src-a-postgresql-backup-policy"
    cli("cluster", "edit-backup-policy", policy, "--set", "schedule.logfile.enable=true", env=a)
    with at(a):
        sql("src-a", "CREATE TABLE msg (id int); INSERT INTO msg VALUES (1), (2)")
    cli("cluster", "backup", "src-a", env=a)
    with at(a):
        sql("src-a", "INSERT INTO msg VALUES (3)")
        archive_now("src-a")

    restored = cli(
        "cluster", "restore", "copy-b", "--source-cluster", "src-a", "--host", "agent-b", env=a
    )
    assert "Traceback" not in restored.stderr
    assert not (Path(a["PGPITR_HOME"]) / "clusters" / "copy-b").exists()  # made on host b
    with at(b):
        assert rows("copy-b") == [1, 2, 3]
        assert Cluster.get("copy-b").state.host == "agent-b"
    (run,) = api.flow_runs("restore-agent-b/copy-b-from-src-a")
    assert run.deployment_id == deployment("restore/pgpitr-agent-b").id


def policies(env: dict[str, str]) -> str:
    """list-backup-policy's table, wide enough for every column."""
    return cli("cluster", "list-backup-policy", env={**env, "COLUMNS": "300"}).stdout


EVERY_MINUTE = "schedule.datafile.cronExpression=* * * * *"
YEARLY = "schedule.datafile.cronExpression=0 0 1 1 *"


def test_a_schedule_fires_on_its_hosts_agent_only_and_a_stopped_agent_shows(hosts):
    a, b = hosts["agent-a"], hosts["agent-b"]
    for env in (a, b):
        cli("cluster", "create", "my-pg", "--port", str(free_port()), env=env)
    policy = "my-pg-postgresql-backup-policy"
    cli("cluster", "edit-backup-policy", policy, "--set", EVERY_MINUTE, env=a)
    ids = {host: deployment(f"backup/pgpitr-{host}").id for host in HOSTS}
    api.fire_minutely_schedules(*ids.values())

    def fired() -> list:
        return [
            r
            for r in api.flow_runs()
            if r.deployment_id == ids["agent-a"] and r.auto_scheduled and r.state.is_completed()
        ]

    (run, *_) = api.wait_for(fired, 240, "a backup of the */1 schedule on agent-a")
    # no more of them (a yearly cron), so that describe reads a last run that has ended
    cli("cluster", "edit-backup-policy", policy, "--set", YEARLY, env=a)

    def none_running() -> bool:
        return not [
            r
            for r in api.flow_runs()
            if r.deployment_id == ids["agent-a"] and (r.state.is_running() or r.state.is_pending())
        ]

    api.wait_for(none_running, 120, "agent-a's backups to end")
    # the run names itself with the host it executes on: agent-a's
    assert run.name == "backup-agent-a/my-pg" and run.parameters["cluster"] == "my-pg"
    repo_b = Path(b["PGPITR_HOME"]) / "repo" / "my-pg" / "backups"
    assert not repo_b.exists() or not any(repo_b.iterdir()), "no backup on host b"
    assert not [r for r in api.flow_runs() if r.deployment_id == ids["agent-b"] and r.start_time]

    info, err = describe(a)
    assert info["agent"] == "serving" and info["last_run_state"] == "Completed", info
    assert "will not run" not in err
    (row,) = [line for line in policies(a).splitlines() if line.startswith("my-pg-")]
    assert "0 0 1 1 * UTC" in row and " serving " in row and "Completed" in row, row

    assert agent(a, "stop").returncode == 0
    warning = "scheduled backups of my-pg will not run: no agent serves host agent-a"

    def warned() -> bool:
        info, err = describe(a)
        return info["agent"] == "none" and warning in err

    api.wait_for(warned, 90, "describe warning that no agent serves agent-a", interval=3)
    (row,) = [line for line in policies(a).splitlines() if line.startswith("my-pg-")]
    assert " none " in row, row
    info, err = describe(b)
    assert info["agent"] == "serving" and "will not run" not in err


def test_serving_removed_the_served_deployments_of_the_old_naming(hosts, old_deployments):
    assert existing(old_deployments) == set(old_deployments) - {"backup/pgpitr"}
    logs = [
        (Path(env["PGPITR_HOME"]) / "agent" / "agent.log").read_text() for env in hosts.values()
    ]
    said = [line for log in logs for line in log.splitlines() if "removed the deployment" in line]
    assert len(said) == 1 and "backup/pgpitr:" in said[0], said  # by one of the two agents
