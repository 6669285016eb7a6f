"""`pgpitr agent install-service` writes systemd units that systemd accepts: the agent's, and the
local Prefect server's when no Prefect API is configured."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.conftest import PGPITR


def install(tmp_path, **env: str) -> dict[str, str]:
    child = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    child.update(
        PGPITR_HOME=str(tmp_path / "home"),
        PREFECT_HOME=str(tmp_path / "prefect-home"),
        PGPITR_HOST="db1",
        PGPITR_PREFECT_PORT="4311",
        **env,
    )
    units = tmp_path / "units"
    done = subprocess.run(
        [*PGPITR, "agent", "install-service", "--dir", str(units)],
        capture_output=True,
        text=True,
        env=child,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "systemctl" in done.stderr and "enable --now" in done.stderr
    return {p.name: p.read_text() for p in units.iterdir()}


def verify(tmp_path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed here")
    units = sorted(str(p) for p in (tmp_path / "units").iterdir())
    checked = subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stderr


def test_units_for_the_agent_and_the_local_server(tmp_path):
    units = install(tmp_path)
    assert sorted(units) == ["pgpitr-agent.service", "pgpitr-prefect-server.service"]
    agent = units["pgpitr-agent.service"]
    assert "-I -m pgpitr agent run" in agent  # isolated: the installed package only
    assert "KillMode=process" in agent  # the clusters it started outlive it
    assert f"Environment=PGPITR_HOME={tmp_path / 'home'}" in agent
    assert "Environment=PGPITR_HOST=db1" in agent
    assert "Environment=PREFECT_API_URL=http://127.0.0.1:4311/api" in agent
    assert "Wants=network-online.target pgpitr-prefect-server.service" in agent
    server = units["pgpitr-prefect-server.service"]
    assert "-I -m pgpitr server run" in server and "PGPITR_PREFECT_PORT=4311" in server
    assert f"PGPITR_HOME={tmp_path / 'home'}" in server
    assert "AUTH_STRING" not in server + agent  # units are world-readable: no secret in them
    verify(tmp_path)


def test_with_a_remote_prefect_api_only_the_agent(tmp_path):
    units = install(
        tmp_path,
        PREFECT_API_URL="https://prefect.example/api",
        PGPITR_METRICS_PORT="9999",
        PGPITR_METRICS_ADDRESS="0.0.0.0",
    )
    assert sorted(units) == ["pgpitr-agent.service"]
    agent = units["pgpitr-agent.service"]
    assert "Environment=PREFECT_API_URL=https://prefect.example/api" in agent
    assert "Environment=PGPITR_METRICS_PORT=9999" in agent
    assert "Environment=PGPITR_METRICS_ADDRESS=0.0.0.0" in agent
    assert "Environment=PGPITR_METRICS_REFRESH=60" in agent
    verify(tmp_path)


@pytest.mark.root  # system units, written by root
def test_system_units_run_as_the_service_account(tmp_path):
    from pgpitr.privilege import make_service_account

    account = make_service_account()
    units = install(tmp_path)
    for text in units.values():
        assert f"User={account.name}\n" in text and "Group=" in text
    verify(tmp_path)
