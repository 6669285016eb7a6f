"""The agent's Prometheus endpoint: pgpitr/metrics.py's server, plus this host's runs that are
Late and Running, counted by the Prefect API (two ``/flow_runs/count`` requests per refresh, not
per scrape; over HTTP like deployments/health.py, so no Prefect client in the agent's thread).

``PGPITR_METRICS_PORT`` (``pgpitr agent run --metrics-port``) chooses the port, 10187 by default,
0 or ``off`` for none; ``PGPITR_METRICS_ADDRESS`` the address, 127.0.0.1 by default (a Prometheus
on another machine needs an address it can reach, and then whoever reaches it reads the
clusters' names and windows: no secret, but not nothing).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from deployments.api import api_url, auth_headers
from pgpitr import metrics
from pgpitr.errors import PitrError
from tasks.naming import deployment_name

TIMEOUT = 3.0


def start(host: str, say: Callable[[str], None]) -> metrics.MetricsServer | None:
    """Serve HOST's metrics as the environment says; None when off or when the port cannot be
    had (said, not raised: the agent's serving matters more than its metrics)."""
    try:
        port, address, interval = metrics.settings()
        if port is None:
            say(f"no metrics ({metrics.PORT_ENV} is off)")
            return None
        server = metrics.serve(
            host, port, address, interval, runs=functools.partial(host_runs, host)
        )
    except PitrError as exc:
        say(f"no metrics: {exc.message} ({exc.hint})")
        return None
    except OSError as exc:
        say(f"no metrics: {address}:{port} cannot be served ({exc.strerror or exc})")
        return None
    say(f"Prometheus metrics on {server.url}, refreshed every {interval:.0f} s")
    return server


def host_runs(host: str) -> metrics.HostRuns | None:
    """This host's flow runs (its deployments ``*/pgpitr-HOST``) that are Late and Running;
    None when no Prefect API answers."""
    import httpx

    url = api_url()
    if url is None:
        api_url.cache_clear()  # the server may come later: look again at the next refresh
        return None
    deployments = {"name": {"any_": [deployment_name(host)]}}
    counted = []
    for state in ({"name": {"any_": ["Late"]}}, {"type": {"any_": ["RUNNING"]}}):
        body = {"deployments": deployments, "flow_runs": {"state": state}}
        try:
            response = httpx.post(
                f"{url}/flow_runs/count", json=body, headers=auth_headers(), timeout=TIMEOUT
            )
            response.raise_for_status()
        except httpx.HTTPError:
            return None
        counted.append(int(response.json()))
    return metrics.HostRuns(late=counted[0], running=counted[1])
