"""Runs their agent left unfinished end as Crashed (deployments/orphans.py): at once when the
agent is stopped, and through the heartbeat automation, within a minute, when it is killed with
kill -9 and nothing of it is left to say so.  Real parts: the suite's Prefect server (its
automations service evaluates the proactive trigger), an agent of a host of its own started with
``pgpitr agent start``, a real backup run from its deployment, which waits for its cluster's
backup slot while the test holds it, so that it is surely still running when its agent goes."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments import orphans
from tasks._slots import slot_name
from tests.conftest import cli, free_port, reachable_tempdir, stop_everything_under
from tests.flows import api
from tests.flows.test_agent import agent, served

pytestmark = pytest.mark.timeout(600)

HOST = "orphans"
RUN = f"backup-{HOST}/slow"


@pytest.fixture(scope="module")
def host_with_data(api_url: str) -> Iterator[dict[str, str]]:
    """A host with a cluster."""
    path = reachable_tempdir("pgpitr-orphans-")
    env = {
        "PGPITR_HOST": HOST,
        "PGPITR_HOME": str(path),
        "TZ": "UTC",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    }
    try:
        cli("cluster", "create", "slow", "--port", str(free_port()), env=env)
        yield env
    finally:
        stop_everything_under(path)
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def slot_held() -> Iterator[None]:
    """The cluster's backup slot, held by the test: its backup run waits, running, meanwhile.
    The limit is made afresh: a run the other test's agent left may hold its slot until its
    lease expires (ci56: this test then waited 600 s to acquire it)."""
    from prefect.client.orchestration import get_client
    from prefect.concurrency.sync import concurrency
    from prefect.exceptions import ObjectNotFound

    name = slot_name("backup", "slow", HOST)
    with get_client(sync_client=True) as client:
        with contextlib.suppress(ObjectNotFound):
            client.delete_global_concurrency_limit_by_name(name)
        client.upsert_global_concurrency_limit_by_name(name, 1)
    with concurrency(name, occupy=1, strict=True):
        yield


@pytest.fixture
def host(host_with_data: dict[str, str]) -> Iterator[dict[str, str]]:
    """The host's agent serving (stopped, or killed, after the test)."""
    env = host_with_data
    try:
        started = agent(env, "start")
        assert started.returncode == 0, started.stderr
        api.wait_for(lambda: served(HOST), 180, f"the agent of {HOST} serving")
        yield env
    finally:
        agent(env, "stop")
        _kill_agent(env)


def _kill_agent(env: dict[str, str]) -> None:
    """SIGKILL to the agent's process group (the agent, its serving process, their runs)."""
    with contextlib.suppress(OSError, ValueError, KeyError):
        pid = json.loads((Path(env["PGPITR_HOME"]) / "agent" / "agent.json").read_text())["pid"]
        os.killpg(pid, signal.SIGKILL)


def _backup_running(env: dict[str, str]):
    cli("cluster", "backup", "slow", "--no-wait", env=env)
    return api.wait_for(
        lambda: [r for r in api.flow_runs(RUN) if r.state.is_running()],
        120,
        "the backup running on the agent",
        interval=0.2,
    )[0]


def _state_of(run_id) -> object:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state


def test_a_stopped_agents_unfinished_run_ends_crashed_at_once(host: dict[str, str]) -> None:
    with slot_held():
        run = _backup_running(host)
        assert agent(host, "stop").returncode == 0
    state = _state_of(run.id)
    assert state.is_crashed(), state
    # the run's own engine says so when it had the time to, on its SIGTERM; else the agent
    assert any(
        why in (state.message or "")
        for why in (f"the agent of host {HOST} stopped", "aborted by a termination signal")
    ), state.message
    info = json.loads(cli("cluster", "describe", "slow", "-o", "json", env=host).stdout)
    assert info["last_run_state"] == "Crashed", info
    # the agent made the automation of the next test; as it is, it is not made again
    assert orphans.ensure_crash_automation() is False


def test_a_killed_agents_run_ends_crashed_within_a_minute(host: dict[str, str]) -> None:
    with slot_held():
        run = _backup_running(host)
        _kill_agent(host)
        killed = time.monotonic()
        try:
            api.wait_for(
                lambda: _state_of(run.id).is_crashed(), 120, "the orphan marked Crashed", interval=1
            )
        except AssertionError:
            raise AssertionError(f"the run is {_state_of(run.id)!r}; {api.explain(run)}") from None
    print(f"a killed agent's run marked Crashed {time.monotonic() - killed:.0f} s after the kill")
    assert "no heartbeat" in (_state_of(run.id).message or "")


def test_a_run_the_cli_runs_in_its_own_process_sends_its_heartbeat(
    home: Path, prefect_harness: str
) -> None:
    """The CLI's runs beat from a thread of the CLI's (orphans.Heartbeat), not the engine's: the
    event the crash automation expects, about the run and related to the pgpitr tag."""
    cli("cluster", "create", "beat-pg", "--port", str(free_port()))
    [run] = [
        r
        for r in api.flow_runs()
        if r.name.startswith("create-cluster-")
        and r.name.endswith("/beat-pg")
        and r.parameters.get("name") == "beat-pg"
    ]
    assert run.state.is_completed()
    [beat, *_] = api.events("prefect.flow-run.heartbeat", f"prefect.flow-run.{run.id}")
    tags = {
        r["prefect.resource.id"] for r in beat["related"] if r["prefect.resource.role"] == "tag"
    }
    assert "prefect.tag.pgpitr" in tags
