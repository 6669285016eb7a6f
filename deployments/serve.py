"""Serve every pgpitr deployment from one process on this machine: ``pgpitr serve`` or
``python -m deployments.serve``.

Each flow is one deployment named ``pgpitr`` (or $PGPITR_DEPLOYMENT), for every cluster; the
clusters' schedules are rebuilt from their saved backup policies each time serving starts, so the
policies stay the one source of truth.  Runs execute in child processes of this one.  With no
Prefect API configured and none answering on 127.0.0.1:4200, this starts a Prefect server there
(UI included) and stops it on exit.  Stopping this process does not pause the schedules: the
deployments keep what the policies say, and their runs wait until serving resumes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

from deployments.api import answers, api_url
from flows import registry
from pgpitr import clusters
from pgpitr.errors import PitrError
from pgpitr.postgres.cluster import Cluster
from tasks.naming import deployment_name

LOCAL_PORT = 4200


def all_flows() -> list[Any]:
    return [registry.load(e.name) for e in registry.served()]


def build(deployment: str | None = None) -> list[Any]:
    """The deployments to serve, with every cluster's schedules from its saved policy."""
    from prefect.deployments.runner import EntrypointType

    from tasks import schedules

    name = deployment or deployment_name()
    wanted = [s for c in Cluster.all() for s in schedules.for_policy(clusters.load_policy(c))]
    return [
        flow.to_deployment(
            name=name,
            schedules=[schedules.as_prefect(s) for s in wanted if s.flow == flow.name],
            description=(flow.description or "").strip() or None,
            tags=["pgpitr"],
            # by module path: the same entrypoint from a checkout and from the installed package
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for flow in all_flows()
    ]


def start_local_server(port: int = LOCAL_PORT, timeout: float = 120) -> subprocess.Popen[bytes]:
    """A Prefect server on 127.0.0.1:PORT for as long as this process serves."""
    url = f"http://127.0.0.1:{port}/api"
    log = open(os.devnull, "wb")  # the child owns it for its lifetime
    server = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + timeout
    while not answers(url, timeout=1):
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            raise PitrError(
                f"the Prefect server on port {port} did not start",
                hint=f"run `prefect server start --port {port}` to see why",
            )
        time.sleep(0.5)
    os.environ["PREFECT_API_URL"] = url
    return server


def main(limit: int | None = None) -> None:
    """Serve until interrupted."""
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", "2")  # a queued run starts within 2 s
    server = None
    url = api_url()
    if url is None:
        server = start_local_server()
        url = os.environ["PREFECT_API_URL"]
    else:
        os.environ["PREFECT_API_URL"] = url
    print(f"pgpitr serve: Prefect API {url}, UI {url.removesuffix('/api')}", flush=True)
    from prefect import serve

    try:
        serve(*build(), pause_on_shutdown=False, limit=limit)
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()
