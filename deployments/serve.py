"""Serve this host's pgpitr deployments from one process: what the agent runs (and supervises,
deployments/agent.py); ``python -m deployments.serve`` alone serves once.

Each flow is one deployment named ``pgpitr-HOST`` (or $PGPITR_DEPLOYMENT) for every cluster of
this host (PGPITR_HOST or the hostname); the clusters' schedules are rebuilt from their saved
backup policies each time serving starts, so the policies stay the one source of truth.  Runs
execute in child processes of this one.  With no Prefect API configured, this uses pgpitr's
local Prefect server (deployments/localserver.py), started if need be and kept running after
this process ends.  Stopping this process does not pause the schedules: the deployments keep
what the policies say, and their runs go Late until serving resumes.

Before serving, the served deployments of the naming before host identity (``FLOW/pgpitr``, one
for every host, no work pool) are removed: no agent serves that name any more, so their
schedules' runs would go Late forever.  The ``FLOW/pgpitr`` deployments of prefect.yaml are in a
work pool (``pgpitr-process``, for workers) and stay.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from deployments import orphans
from deployments.api import ensure_api_url
from deployments.health import POLL_SECONDS
from flows import registry
from pgpitr import policy_store, state
from pgpitr.postgres.cluster import Cluster
from tasks.naming import DEFAULT_DEPLOYMENT, deployment_name, this_host


def all_flows() -> list[Any]:
    return [registry.load(e.name) for e in registry.served()]


def build(deployment: str | None = None) -> list[Any]:
    """The deployments to serve, with every cluster's schedules from its saved policy."""
    from prefect.deployments.runner import EntrypointType

    from tasks import schedules

    host = this_host()
    name = deployment or deployment_name(host)
    mine = [c for c in Cluster.all() if c.state.host == host]
    wanted = [s for c in mine for s in _schedules_of(c, host)] + schedules.for_host(host)
    return [
        flow.to_deployment(
            name=name,
            schedules=[schedules.as_prefect(s) for s in wanted if s.flow == flow.name],
            description=(flow.description or "").strip() or None,
            tags=[orphans.TAG, f"host:{host}"],
            # by module path: the same entrypoint from a checkout and from the installed package
            entrypoint_type=EntrypointType.MODULE_PATH,
        )
        for flow in all_flows()
    ]


def _schedules_of(cluster: Cluster, host: str) -> list[Any]:
    from tasks import schedules

    try:
        policy = policy_store.load_policy(cluster)
    except FileNotFoundError:
        # being created: its state is written before its policy (which has no schedule yet)
        return []
    return schedules.for_policy(policy, host)


def remove_stale(serving: str | None = None) -> list[str]:
    """Remove the served deployments ``FLOW/pgpitr`` of pgpitr's flows (the naming before host
    identity, served by no agent now), unless SERVING is that name (PGPITR_DEPLOYMENT=pgpitr);
    a work pool's ``FLOW/pgpitr`` stays.  One line per deployment removed."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
    )
    from prefect.exceptions import ObjectNotFound

    if (serving or deployment_name()) == DEFAULT_DEPLOYMENT:
        return []
    ours = FlowFilter(name=FlowFilterName(any_=[e.name for e in registry.FLOWS]))
    removed = []
    with get_client(sync_client=True) as client:
        flows = {f.id: f.name for f in client.read_flows(flow_filter=ours)}
        found = client.read_deployments(
            flow_filter=ours,
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[DEFAULT_DEPLOYMENT])
            ),
        )
        for stale in found:
            if stale.work_pool_name or stale.flow_id not in flows:
                continue  # a work pool's: its workers serve it
            try:
                client.delete_deployment(stale.id)
            except ObjectNotFound:  # another host's agent removed it first
                continue
            removed.append(
                f"removed the deployment {flows[stale.flow_id]}/{stale.name}: served under the "
                "name before deployments per host (now FLOW/pgpitr-HOST), no agent serves it; "
                "its scheduled runs, which could only go Late, went with it"
            )
    return removed


def main(limit: int | None = None) -> None:
    """Serve until interrupted, at most ``limit`` runs at once (the agent passes its
    ``concurrency()``)."""
    # a queued run starts within 2 s; deployments/health.py reads the same setting
    os.environ.setdefault("PREFECT_RUNNER_POLL_FREQUENCY", str(int(POLL_SECONDS)))
    # the runner's scratch (runner_storage) in this home, not in a /tmp that other accounts share
    scratch = state.home() / "agent" / "tmp"
    scratch.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ["TMPDIR"] = str(scratch)
    tempfile.tempdir = None  # read TMPDIR again
    orphans.heartbeat_environment()  # the runs it starts inherit it
    url, _ = ensure_api_url()
    os.environ["PREFECT_API_URL"] = url
    print(f"pgpitr serve: Prefect API {url}, UI {url.removesuffix('/api')}", flush=True)
    from prefect import serve

    if orphans.ensure_crash_automation():
        print(f"pgpitr serve: automation {orphans.AUTOMATION!r} created", flush=True)

    deployments = build()
    for line in remove_stale():
        print(f"pgpitr serve: {line}", flush=True)
    if limit:
        print(f"pgpitr serve: at most {limit} runs at once", flush=True)
    serve(*deployments, pause_on_shutdown=False, limit=limit)


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(prog="python -m deployments.serve")
    parser.add_argument("--limit", type=int, default=None)
    main(limit=parser.parse_args().limit)
