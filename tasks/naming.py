"""Names the tasks, the deployments and the CLI share, without importing Prefect.

A cluster is known by its host and its name together (two hosts may each have a ``my-pg``):

- deployments: one per flow and host, ``FLOW/pgpitr-HOST``, served by that host's agent, so a
  run for a cluster lands on its host (PGPITR_DEPLOYMENT names one shared deployment instead,
  ``pgpitr-kubernetes`` on a work pool);
- schedule slugs ``HOST/NAME``, flow-run names ``backup-HOST/NAME``, artifact keys
  ``backups-HOST-NAME``, concurrency slots ``pgpitr-backup-HOST.NAME`` and event resources
  ``pgpitr.cluster.HOST.NAME`` (a cluster name has no dot, so the last part is the cluster).
"""

from __future__ import annotations

import os
from collections.abc import Callable

from pgpitr.state import this_host

__all__ = ["deployment_name", "run_name", "schedule_slug", "qualified", "this_host"]

DEFAULT_DEPLOYMENT = "pgpitr"
DEPLOYMENT_ENV = "PGPITR_DEPLOYMENT"


def deployment_name(host: str | None = None) -> str:
    """The deployments of HOST (default: this one) that the CLI and the schedules use:
    ``pgpitr-HOST``, or the one named by PGPITR_DEPLOYMENT (``pgpitr-kubernetes``)."""
    return os.environ.get(DEPLOYMENT_ENV) or f"{DEFAULT_DEPLOYMENT}-{host or this_host()}"


def schedule_slug(cluster: str, host: str | None = None) -> str:
    return f"{host or this_host()}/{cluster}"


def qualified(cluster: str, host: str | None = None) -> str:
    """HOST.NAME: where a '/' is not allowed (concurrency limits, event resource ids)."""
    return f"{host or this_host()}.{cluster}"


def run_name(template: str) -> Callable[[], str]:
    """A flow's ``flow_run_name``: TEMPLATE formatted with its parameters and ``host``, the
    host the run executes on (the cluster's: its agent, or the CLI on that host)."""

    def name() -> str:
        from prefect.context import FlowRunContext

        context = FlowRunContext.get()
        parameters = dict(context.parameters or {}) if context else {}
        return template.format(host=this_host(), **parameters)

    name.__name__ = f"run_name({template!r})"
    return name
