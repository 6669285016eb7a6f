"""The agent survives a restart of pgpitr's local Prefect server and serves again after it; and
`pgpitr serve` is the agent (the same foreground process)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.deployments.test_localserver import (  # noqa: F401
    alone,
    credentials,
    pgpitr,
    server_status,
)
from tests.flows.api import wait_for

pytestmark = pytest.mark.timeout(600)


def polled(env: dict[str, str]) -> str | None:
    """last_polled of the agent's backup deployment, or None."""
    port = env["PGPITR_PREFECT_PORT"]
    url = f"http://127.0.0.1:{port}/api/deployments/name/backup/pgpitr-solo"
    try:
        response = httpx.get(url, auth=tuple(credentials(env).split(":", 1)), timeout=3)
    except (httpx.HTTPError, OSError):
        return None
    return response.json().get("last_polled") if response.status_code == 200 else None


def agent_pid(env: dict[str, str]) -> int:
    return json.loads((Path(env["PGPITR_HOME"]) / "agent" / "agent.json").read_text())["pid"]


def test_the_agent_serves_again_after_the_server_restarts(alone):  # noqa: F811
    try:
        pgpitr(alone, "agent", "start")
        first = wait_for(lambda: polled(alone), 240, "the agent polling the local server")
        agent = agent_pid(alone)
        server = server_status(alone)["pid"]

        pgpitr(alone, "server", "stop")
        restarted = time.time()
        pgpitr(alone, "server", "start")
        assert server_status(alone)["pid"] != server

        def polled_again() -> bool:
            last = polled(alone)
            if not last or last == first:
                return False
            from datetime import datetime

            return datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp() > restarted

        wait_for(polled_again, 240, "the agent polling the restarted server", interval=2)
        assert agent_pid(alone) == agent  # the same agent, never restarted by hand
        status = json.loads(pgpitr(alone, "agent", "status", "-o", "json").stdout)
        assert status["running"] and status["host"] == "solo"
        assert status["deployment"] == "backup/pgpitr-solo"
        assert status["home"] == alone["PGPITR_HOME"]
        # the supervisor and its serving process, both Python with Prefect loaded
        assert status["resident_bytes"] > 64 * 2**20, status
    finally:
        pgpitr(alone, "agent", "stop", check=False)
        with contextlib.suppress(OSError, ValueError, KeyError):
            os.killpg(agent_pid(alone), signal.SIGKILL)
