"""Names the tasks, the deployments and the CLI share, without importing Prefect."""

from __future__ import annotations

import os

DEFAULT_DEPLOYMENT = "pgpitr"
DEPLOYMENT_ENV = "PGPITR_DEPLOYMENT"


def deployment_name() -> str:
    """The deployments the CLI and the schedules use: ``pgpitr`` (served or on the process
    pool), or the one named by PGPITR_DEPLOYMENT (``pgpitr-kubernetes``)."""
    return os.environ.get(DEPLOYMENT_ENV) or DEFAULT_DEPLOYMENT
