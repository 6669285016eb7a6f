"""Serve this host's pgpitr deployments from one process: what the agent runs (and supervises,
deployments/agent.py); ``python -m deployments.serve`` alone serves once.

Each flow is one deployment named ``pgpitr-HOST`` (or $PGPITR_DEPLOYMENT) for every cluster of
this host (PGPITR_HOST or the hostname); the clusters' schedules are rebuilt from their saved
backup policies each time serving starts, so the policies stay the one source of truth.  Runs
execute in child processes of this one.  With no Prefect API configured, this uses pgpitr's
local Prefect server (deployments/localserver.py), started if need be and kept running after
this process ends.  Stopping this process does not pause the schedules: the deployments keep
what the policies say, and their runs go Late until serving resumes.
"""

from __future__ import annotations

import os
from typing import Any

from deployments.api import ensure_api_url
from flows import registry
from pgpitr import clusters
from pgpitr.postgres.cluster import Cluster
from tasks.naming import deployment_name, this_host


def all_flows() -> list[Any]:
    return [registry.load(e.name) for e in registry.served()]


def build(deployment: str | None = None) -> list[Any]:
    """The deployments to serve, with every cluster's schedules from its saved policy."""
    from prefect.deployments.runner import EntrypointType

    from tasks import schedules

    host = this_host()
    name = deployment or deployment_name(host)
    mine = [c for c in Cluster.all() if c.state.host == host]
    wanted = [s for c in mine for s in schedules.for_policy(clusters.load_policy(c), host)]
    return [
        flow.to_deployment(
            name=name,
            schedules=[schedules.as_prefect(s) for s in wanted if s.flow == flow.name],
            description=(flow.description or "").strip() or None,
            tags=["pgpitr", f"host:{host}"],
            # by module path: the same entrypoint from a checkout and from the installed package
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for flow in all_flows()
    ]


def main(limit: int | None = None) -> None:
    """Serve until interrupted."""
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")  # a queued run starts within 2 s
    url, _ = ensure_api_url()
    os.environ["PREFECT_API_URL"] = url
    print(f"pgpitr serve: Prefect API {url}, UI {url.removesuffix('/api')}", flush=True)
    from prefect import serve

    serve(*build(), pause_on_shutdown=False, limit=limit)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m deployments.serve")
    parser.add_argument("--limit", type=int, default=None)
    main(limit=parser.parse_args().limit)
