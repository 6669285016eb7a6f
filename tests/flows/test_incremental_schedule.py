"""The scheduled incremental (issue 14): a PostgreSQL 17 cluster's `incremental` schedule, on its
host's served `backup` deployment, fires a run that takes an Incremental backup on the newest
full, and that backup restores with the exact rows.  One host and its agent, on the session's
Prefect server; the run is the schedule's own (the server's scheduler makes it from the
schedule, with the schedule's parameters), for a minute just gone rather than waiting for cron.
Here beside the agent tests rather than in tests/test_incremental.py: starting an agent and
waiting for a served run costs a minute or more."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgpitr.targets import RestoreTarget
from tests import engine, pgwheels
from tests.conftest import cli, free_port, reachable_tempdir, stop_everything_under
from tests.flows import api
from tests.flows.test_agent import agent, at, deployment, served
from tests.pg import rows, sql

pytestmark = pytest.mark.timeout(600)

HOST = "agent-inc"


@pytest.fixture(scope="module")
def host(api_url: str) -> Iterator[dict[str, str]]:
    """The environment of one host whose agent serves its deployments."""
    path = reachable_tempdir(f"pgpitr-{HOST}-")
    env = {
        "PGPITR_HOST": HOST,
        "PGPITR_HOME": str(path),
        "TZ": "UTC",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    try:
        started = agent(env, "start")
        assert started.returncode == 0, started.stderr
        api.wait_for(lambda: served(HOST), 180, f"the agent of {HOST} serving")
        yield env
    finally:
        agent(env, "stop")
        with contextlib.suppress(OSError, ValueError, KeyError):  # if stop did not
            os.killpg(
                json.loads((path / "agent" / "agent.json").read_text())["pid"], signal.SIGKILL
            )
        stop_everything_under(path)
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize("major", [17, 18])
def test_the_incremental_schedule_fires_an_incremental_backup_on_the_newest_full(host, major):
    bindir = str(pgwheels.require(major))
    name, copy, full = f"sched-pg{major}", f"sched-copy{major}", f"sched-full{major}"
    cli("cluster", "create", name, "--port", str(free_port()), "--bindir", bindir, env=host)
    policy = f"{name}-postgresql-backup-policy"
    cli("cluster", "edit-backup-policy", policy, "--set", "schedule.logfile.enable=true", env=host)
    with at(host):
        sql(name, "CREATE TABLE msg (id int); INSERT INTO msg VALUES (1)")
    cli("cluster", "backup", name, "--backup-name", full, env=host)
    with at(host):
        sql(name, "INSERT INTO msg VALUES (2)")
    # hourly at the minute just gone, so that its one run here is the one made below; the full
    # schedule off, so that the deployment's only active schedule is the incremental one
    minute = datetime.now(UTC).minute
    settings = [
        "schedule.datafile.enable=false",
        "schedule.incremental.enable=true",
        f"schedule.incremental.cronExpression={minute} * * * *",
    ]
    cli(
        "cluster",
        "edit-backup-policy",
        policy,
        *(a for k in settings for a in ("--set", k)),
        env=host,
    )

    backup_id = deployment(f"backup/pgpitr-{HOST}").id
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        window = {"start_time": (datetime.now(UTC) - timedelta(minutes=10)).isoformat()}
        client.request("POST", f"/deployments/{backup_id}/schedule", json={**window, "max_runs": 1})

    def fired() -> list:
        return [
            r
            for r in api.flow_runs()
            if r.deployment_id == backup_id
            and r.auto_scheduled
            and r.state.is_final()
            and r.parameters.get("cluster") == name
        ]

    (run,) = api.wait_for(fired, 300, f"the scheduled incremental backup of {name}")
    assert run.state.is_completed(), run.state
    assert run.parameters["backup_type"] == "incremental" and run.name == f"backup-{HOST}/{name}"

    listed = json.loads(cli("cluster", "list-backup", name, "-o", "json", env=host).stdout)
    (inc,) = [b for b in listed if b["name"] != full]
    assert (inc["type"], inc["parent"], inc["status"]) == ("Incremental", full, "Completed")
    with at(host):
        sql(name, "INSERT INTO msg VALUES (3)")  # after the incremental: never restored
        restored = engine.restore(
            copy, name, RestoreTarget(immediate=True), backup_name=inc["name"]
        )
        assert restored.backup == inc["name"]
        assert rows(copy) == [1, 2]
    assert Path(host["PGPITR_HOME"], "clusters", copy).exists()  # on this host
    # the next version's run starts with this cluster's schedule off: one active schedule again
    off = "schedule.incremental.enable=false"
    cli("cluster", "edit-backup-policy", policy, "--set", off, env=host)
