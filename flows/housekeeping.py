"""The ``housekeeping`` flow: one run for all the clusters of a host, on its schedule
(tasks/schedules.py ``for_host``): each cluster's recoverable window refreshed, and with
``retention`` its retention applied, each as that cluster's own subflow run."""

from __future__ import annotations

from typing import Any

from prefect import flow

from flows.retention import apply_retention
from flows.window import refresh_recoverable_window
from pgpitr.errors import PitrError
from pgpitr.policy_store import agent_clusters
from tasks._common import logger
from tasks.naming import run_name
from tasks.results import PERSISTED


@flow(name="housekeeping", flow_run_name=run_name("housekeeping-{host}"), **PERSISTED)
def housekeeping(retention: bool = False) -> dict[str, Any]:
    """Refresh the recoverable window of every cluster of this host (and check its archiver);
    with ``retention``, then apply each one's retention.  One cluster's failure does not stop
    the others: the run fails at the end, naming each."""
    done: dict[str, Any] = {}
    failed: dict[str, str] = {}
    for cluster in agent_clusters():
        name = cluster.name
        steps = [("refresh-recoverable-window", refresh_recoverable_window)]
        if retention:
            steps.append(("apply-retention", apply_retention))
        for step, subflow in steps:
            state = subflow(name, return_state=True)
            if state.is_completed():
                done.setdefault(name, []).append(step)
            else:
                failed[name] = f"{step}: {state.message or state.name}"
                break
    logger().info("housekept %d cluster(s); %d failed", len(done) + len(failed), len(failed))
    if failed:
        raise PitrError(
            "housekeeping failed for "
            + "; ".join(f"{name} ({why})" for name, why in sorted(failed.items())),
            hint="see each cluster's failed run in the Prefect UI",
        )
    return {"clusters": done}
