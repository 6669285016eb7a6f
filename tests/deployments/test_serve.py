"""Serving removes the served deployments of the naming before host identity (FLOW/pgpitr, no
work pool: no agent serves them any more, their runs go Late forever) and nothing else: not
prefect.yaml's FLOW/pgpitr in the work pool pgpitr-process, not another flow's `pgpitr`, not
the deployments per host."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytestmark = pytest.mark.usefixtures("prefect_harness")


def client() -> Any:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def make_old_deployments() -> dict[str, Any]:
    """What an upgraded server holds: backup/pgpitr served (with a run due five minutes ago),
    restore/pgpitr in the work pool, another flow's served `pgpitr`, backup/pgpitr-HOST."""
    from prefect import flow
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.states import Scheduled

    from flows import registry

    made = {}
    made["backup/pgpitr"] = registry.load("backup").to_deployment(name="pgpitr").apply()
    made["backup/pgpitr-stale-host"] = (
        registry.load("backup").to_deployment(name="pgpitr-stale-host").apply()
    )

    @flow(name="not-pgpitrs")
    def other() -> None:
        """Someone else's flow, whose deployment is also named pgpitr."""

    made["not-pgpitrs/pgpitr"] = other.to_deployment(name="pgpitr").apply()
    with client() as api:
        try:
            api.create_work_pool(WorkPoolCreate(name="pgpitr-process", type="process"))
        except ObjectAlreadyExists:
            pass
        restore = api.create_flow_from_name("restore")
        made["restore/pgpitr"] = api.create_deployment(
            flow_id=restore,
            name="pgpitr",
            work_pool_name="pgpitr-process",
            entrypoint="flows/restore.py:restore",
        )
        api.create_flow_run_from_deployment(
            made["backup/pgpitr"],
            parameters={"cluster": "old-pg"},
            state=Scheduled(scheduled_time=datetime.now(UTC) - timedelta(minutes=5)),
        )
    return made


def existing(made: dict[str, Any]) -> set[str]:
    from prefect.exceptions import ObjectNotFound

    found = set()
    with client() as api:
        for name, deployment_id in made.items():
            try:
                api.read_deployment(deployment_id)
                found.add(name)
            except ObjectNotFound:
                pass
    return found


def test_only_the_served_deployments_of_the_old_naming_are_removed() -> None:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    from deployments.serve import remove_stale

    made = make_old_deployments()
    # an agent with PGPITR_DEPLOYMENT=pgpitr serves that very name: nothing to remove
    assert remove_stale(serving="pgpitr") == []
    assert existing(made) == set(made)

    removed = remove_stale(serving="pgpitr-stale-host")
    assert len(removed) == 1 and removed[0].startswith("removed the deployment backup/pgpitr:")
    assert existing(made) == set(made) - {"backup/pgpitr"}
    with client() as api:  # its scheduled run went with it
        runs = api.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[made["backup/pgpitr"]]))
        )
    assert runs == []
    assert remove_stale(serving="pgpitr-stale-host") == []  # once


def test_a_cluster_being_created_has_no_schedules_yet_and_the_agent_serves_on(home) -> None:
    # `cluster create` writes the cluster's state before its policy (after initdb): an agent
    # starting in between serves every deployment, that cluster with no schedule
    from datetime import UTC, datetime

    from deployments.serve import build
    from pgpitr.postgres.cluster import Cluster
    from pgpitr.repository.url import RepositoryUrl
    from tests.conftest import PG_BINDIR

    Cluster.prepare(
        "being-made",
        port=None,
        repository=RepositoryUrl.parse(f"file://{home}/repo"),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        bindir=PG_BINDIR,
    )
    assert not (home / "clusters" / "being-made" / "policy.json").exists()
    served = build()
    assert {d.name for d in served}
    # none for the cluster; the host's housekeeping has its own two, whatever its clusters
    assert all(not d.schedules for d in served if d.flow_name != "housekeeping")
    (housekeeping,) = [d for d in served if d.flow_name == "housekeeping"]
    assert len(housekeeping.schedules) == 2


def test_the_agent_runs_a_bounded_number_of_runs_at_once(monkeypatch) -> None:
    from deployments import agent
    from pgpitr.errors import InvalidInput

    monkeypatch.delenv(agent.CONCURRENCY_ENV, raising=False)
    assert agent.concurrency() == max(4, 2 * (os.cpu_count() or 1))
    monkeypatch.setenv(agent.CONCURRENCY_ENV, "3")
    assert agent.concurrency() == 3
    for bad in ("0", "many", "-2"):
        monkeypatch.setenv(agent.CONCURRENCY_ENV, bad)
        with pytest.raises(InvalidInput, match=agent.CONCURRENCY_ENV):
            agent.concurrency()
