"""Host identity: two homes with a cluster `my-pg` each, on different hosts (PGPITR_HOST) and one
Prefect server, have their own deployments, schedules, run names and artifacts, and never touch
each other's."""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import cli, free_port, reachable_tempdir, stop_everything_under
from tests.flows import api

pytestmark = pytest.mark.timeout(300)

HOSTS = ("host-a", "host-b")


def deployment(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def apply_deployments(host: str, home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The deployments HOST's agent serves, applied without serving them."""
    from deployments.serve import build

    with monkeypatch.context() as m:
        m.setenv("PGPITR_HOST", host)
        m.setenv("PGPITR_HOME", str(home))
        for made in build():
            made.apply()


@pytest.fixture
def homes(api_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, dict[str, str]]]:
    """An environment per host: its own PGPITR_HOME and PGPITR_HOST, the session's API."""
    made = {}
    for host in HOSTS:
        path = reachable_tempdir(f"pgpitr-{host}-")
        made[host] = {"PGPITR_HOST": host, "PGPITR_HOME": str(path), "TZ": "UTC"}
        apply_deployments(host, path, monkeypatch)
    yield made
    for env in made.values():
        stop_everything_under(Path(env["PGPITR_HOME"]))
        shutil.rmtree(env["PGPITR_HOME"], ignore_errors=True)


def schedules_of(host: str) -> dict[str, object]:
    return {s.slug: s for s in deployment(f"backup/pgpitr-{host}").schedules}


def test_same_named_clusters_on_two_hosts_stay_independent(homes):
    a, b = homes["host-a"], homes["host-b"]
    for env in (a, b):
        cli("cluster", "create", "my-pg", "--port", str(free_port()), env=env)
    # the full backups' schedule, and the incrementals' (paused until the policy enables it)
    assert sorted(schedules_of("host-a")) == ["host-a/my-pg", "host-a/my-pg/incremental"]
    assert sorted(schedules_of("host-b")) == ["host-b/my-pg", "host-b/my-pg/incremental"]
    assert not schedules_of("host-a")["host-a/my-pg/incremental"].active

    before = schedules_of("host-b")["host-b/my-pg"].schedule.cron
    assert re.fullmatch(r"\d+ 18 \* \* 0", before), before  # weekly, at the cluster's minute
    policy = "my-pg-postgresql-backup-policy"
    cli(
        "cluster",
        "edit-backup-policy",
        policy,
        "--set",
        "schedule.datafile.cronExpression=5 4 * * *",
        env=a,
    )
    assert schedules_of("host-a")["host-a/my-pg"].schedule.cron == "5 4 * * *"
    assert schedules_of("host-b")["host-b/my-pg"].schedule.cron == before  # untouched
    described = {
        host: json.loads(cli("cluster", "describe", "my-pg", "-o", "json", env=env).stdout)
        for host, env in homes.items()
    }
    assert described["host-a"]["backup_schedule"] == "5 4 * * *"
    assert described["host-b"]["backup_schedule"] == before
    assert described["host-b"]["schedule_source"] == "deployment backup/pgpitr-host-b"

    names = {
        r.name
        for r in api.flow_runs("edit-backup-policy-host-a/my-pg", "create-cluster-host-b/my-pg")
    }
    assert names == {"edit-backup-policy-host-a/my-pg", "create-cluster-host-b/my-pg"}

    cli("cluster", "delete", "my-pg", env=a)
    assert not schedules_of("host-a")  # the incrementals' schedule goes too
    assert sorted(schedules_of("host-b")) == ["host-b/my-pg", "host-b/my-pg/incremental"]
    assert os.path.exists(Path(b["PGPITR_HOME"]) / "clusters" / "my-pg" / "cluster.json")
    state = json.loads((Path(b["PGPITR_HOME"]) / "clusters" / "my-pg" / "cluster.json").read_text())
    assert state["host"] == "host-b"
