"""The process work pool of prefect.yaml has a work queue per host: a run the CLI starts on the
shared deployment FLOW/pgpitr (PGPITR_DEPLOYMENT=pgpitr) goes to the queue of the cluster's
host, which that host's worker polls (`prefect worker start --pool pgpitr-process --work-queue
HOST`).  No worker runs here: the run stays queued, and where it waits is what is checked."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from deployments import orphans
from tests.conftest import cli

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_prefect_yaml_puts_the_process_pool_deployments_on_the_hosts_queue() -> None:
    spec = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    process = [d for d in spec["deployments"] if d["work_pool"]["name"] == "pgpitr-process"]
    assert process and all(
        d["work_pool"]["work_queue_name"] == "{{ $PGPITR_HOST }}" for d in process
    )
    # a pool's runs send heartbeats as often as the agents' (deployments/orphans.py): at
    # Prefect's default a live run would be taken for an orphan and marked Crashed
    tagged = [d for d in spec["deployments"] if "pgpitr" in d.get("tags", [])]
    frequency = orphans.HEARTBEAT_SECONDS
    for d in tagged:
        env = d["work_pool"].get("job_variables", {}).get("env", {})
        assert env.get("PREFECT_FLOWS_HEARTBEAT_FREQUENCY") == str(frequency), d["name"]


def test_a_run_on_the_shared_deployment_goes_to_the_queue_of_its_host(
    home: Path, prefect_harness: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="pgpitr-process", type="process"))
        except ObjectAlreadyExists:
            pass
        deployment_id = client.create_deployment(
            flow_id=client.create_flow_from_name("create-cluster"),
            name="pgpitr",
            work_pool_name="pgpitr-process",
            work_queue_name="the-deploying-host",  # the default queue: not this host's
            entrypoint="flows/clusters.py:create_cluster",
        )
    env = {"PGPITR_DEPLOYMENT": "pgpitr", "PGPITR_HOST": "queue-host"}
    queued = cli("cluster", "create", "queued-pg", "--no-wait", env=env)
    assert "work queue queue-host" in queued.stderr
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
            )
        )
        mine = [r for r in runs if r.parameters.get("name") == "queued-pg"]
        assert [r.work_queue_name for r in mine] == ["queue-host"]
        # no worker will take it: leave nothing queued, nor a shared deployment, for other tests
        for run in mine:
            client.delete_flow_run(run.id)
        client.delete_deployment(deployment_id)
    assert not (home / "clusters" / "queued-pg").exists()
