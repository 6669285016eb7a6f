"""The agent's metrics endpoint (deployments/metrics.py): served where the environment says, off
when told, said and not fatal when its port is taken; this host's Late and Running runs counted
by the Prefect API (the session's harness, real runs of a deployment of this host)."""

from __future__ import annotations

import socket
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployments import api
from deployments import metrics as endpoint
from pgpitr import metrics
from tests.conftest import free_port
from tests.test_metrics import scrape


def make_runs(host: str, late: int, running: int) -> None:
    """A backup deployment of HOST with LATE runs Late and RUNNING runs Running."""
    from prefect.client.orchestration import get_client
    from prefect.states import Late, Running

    from flows import registry

    deployment = registry.load("backup").to_deployment(name=f"pgpitr-{host}").apply()
    with get_client(sync_client=True) as client:
        for _ in range(late):
            due = datetime.now(UTC) - timedelta(minutes=5)
            client.create_flow_run_from_deployment(
                deployment, parameters={"cluster": "c"}, state=Late(scheduled_time=due)
            )
        for _ in range(running):
            client.create_flow_run_from_deployment(
                deployment, parameters={"cluster": "c"}, state=Running()
            )


def test_the_endpoint_counts_this_hosts_late_and_running_runs(
    home: Path, prefect_harness: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = f"mhost-{uuid.uuid4().hex[:8]}"  # runs of no other test's host
    make_runs(host, late=2, running=1)
    make_runs(f"{host}-other", late=1, running=1)  # another host's runs are not counted
    api.api_url.cache_clear()  # an earlier test may have found no API
    monkeypatch.setenv(metrics.PORT_ENV, str(free_port()))
    said: list[str] = []
    server = endpoint.start(host, said.append)
    assert server is not None, said
    try:
        assert server.exporter.refreshed.wait(60)
        found = scrape(server.url, host)
    finally:
        server.stop()
    assert said == [f"Prometheus metrics on {server.url}, refreshed every 60 s"]
    assert found["pgpitr_runs_late"] == {None: 2.0}
    assert found["pgpitr_runs_running"] == {None: 1.0}


def test_the_endpoint_is_off_when_told_and_a_taken_port_is_said_not_raised(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    monkeypatch.setenv(metrics.PORT_ENV, "off")
    assert endpoint.start("h", said.append) is None
    assert "is off" in said[-1]

    monkeypatch.setenv(metrics.PORT_ENV, "not-a-port")
    assert endpoint.start("h", said.append) is None
    assert "is not a port" in said[-1]

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv(metrics.PORT_ENV, str(port))
        assert endpoint.start("h", said.append) is None
    assert f"127.0.0.1:{port} cannot be served" in said[-1]
