"""Schedule health, read over HTTP from the Prefect API (no Prefect import, no flow): does an agent
serve a host's deployments, and what happened to a cluster's scheduled runs.

A served deployment is READY while its agent polls for runs and NOT_READY about a minute after
the agent stops (Prefect's foreman); its ``last_polled`` says when.  The cluster's runs on the
backup deployment give the next and the last run and any Late one.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from deployments.api import api_url, auth_headers
from tasks.naming import deployment_name

TIMEOUT = 3.0
#: how often an agent polls for runs (deployments/serve.py), unless PREFECT_RUNNER_POLL_FREQUENCY
POLL_SECONDS = 2.0
#: this many poll intervals without a poll, the agent is gone (30 s at the default 2 s)
STALE_POLLS = 15


def stale_after() -> float:
    """Seconds without a poll after which no agent serves a deployment: STALE_POLLS of the
    agents' poll interval (PREFECT_RUNNER_POLL_FREQUENCY, as the agent has it), at least 10 s."""
    try:
        poll = float(os.environ.get("PREFECT_RUNNER_POLL_FREQUENCY") or POLL_SECONDS)
    except ValueError:
        poll = POLL_SECONDS
    return max(10.0, STALE_POLLS * poll)


@dataclass(frozen=True)
class DeploymentHealth:
    target: str  # FLOW/DEPLOYMENT
    deployment: dict[str, Any] | None = field(default=None, repr=False)
    why: str = ""  # why ``deployment`` is None

    @property
    def status(self) -> str | None:
        return self.deployment.get("status") if self.deployment else None

    @property
    def last_polled(self) -> str | None:
        return self.deployment.get("last_polled") if self.deployment else None

    @property
    def polled_seconds_ago(self) -> float | None:
        if not self.last_polled:
            return None
        polled = datetime.fromisoformat(self.last_polled.replace("Z", "+00:00"))
        return max(0.0, (datetime.now(UTC) - polled).total_seconds())

    @property
    def served(self) -> bool:
        """An agent polls for its runs: READY, and polled within ``stale_after()`` seconds
        (Prefect marks it NOT_READY only a minute or more after its agent stopped)."""
        ago = self.polled_seconds_ago
        return self.status == "READY" and ago is not None and ago < stale_after()


@functools.cache
def deployment_health(flow: str, host: str) -> DeploymentHealth:
    import httpx

    target = f"{flow}/{deployment_name(host)}"
    url = api_url()
    if url is None:
        return DeploymentHealth(target, why="no Prefect API is configured or running")
    try:
        response = httpx.get(
            f"{url}/deployments/name/{target}", headers=auth_headers(), timeout=TIMEOUT
        )
    except httpx.HTTPError:
        return DeploymentHealth(target, why=f"the Prefect API at {url} does not answer")
    if response.status_code == 404:
        return DeploymentHealth(
            target, why=f"{target} is not deployed: no agent of host {host} has served it"
        )
    if response.status_code != 200:
        return DeploymentHealth(target, why=f"the Prefect API answered {response.status_code}")
    return DeploymentHealth(target, response.json())


@dataclass(frozen=True)
class RunsHealth:
    next_run: str | None = None  # expected start time of the next scheduled run
    last_run: str | None = None  # start time of the last run that started
    last_state: str | None = None  # its state (Completed, Failed, Running, …)
    late: int = 0  # runs of the schedule that are Late now

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@functools.cache
def _runs(deployment_id: str) -> tuple[dict[str, Any], ...]:
    """The deployment's latest runs (one request, whatever the number of clusters asking)."""
    import httpx

    url = api_url()
    if url is None:
        return ()
    body = {
        "flow_runs": {"deployment_id": {"any_": [deployment_id]}},
        "sort": "EXPECTED_START_TIME_DESC",
        "limit": 200,
    }
    try:
        response = httpx.post(
            f"{url}/flow_runs/filter", json=body, headers=auth_headers(), timeout=TIMEOUT
        )
        response.raise_for_status()
    except httpx.HTTPError:
        return ()
    return tuple(response.json())


def runs_health(health: DeploymentHealth, cluster: str) -> RunsHealth:
    """The cluster's runs of the deployment: next, last and late ones."""
    if health.deployment is None:
        return RunsHealth()
    runs = _runs(health.deployment["id"])
    mine = [r for r in runs if (r.get("parameters") or {}).get("cluster") == cluster]
    scheduled = [r for r in mine if (r.get("state") or {}).get("type") == "SCHEDULED"]
    late = [r for r in scheduled if (r.get("state") or {}).get("name") == "Late"]
    upcoming = sorted(
        (r for r in scheduled if r not in late), key=lambda r: r["expected_start_time"]
    )
    started = [r for r in mine if r.get("start_time")]
    last = max(started, key=lambda r: r["start_time"], default=None)
    return RunsHealth(
        next_run=upcoming[0]["expected_start_time"] if upcoming else None,
        last_run=last["start_time"] if last else None,
        last_state=(last.get("state") or {}).get("name") if last else None,
        late=len(late),
    )
