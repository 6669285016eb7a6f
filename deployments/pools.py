"""The two work pools prefect.yaml deploys to, created when missing (`python -m deployments.pools`).

``prefect deploy`` (3.8) refuses a deployment whose work pool does not exist, and checks that
right after it loads the deployment's entrypoint, before any build step could run.  prefect.yaml
therefore deploys this module's flow first, and loading this module creates the pools: so
``prefect deploy --all`` works against a fresh ``prefect server start``.  Nothing else imports
this module; creating a pool that exists is a no-op.
"""

from __future__ import annotations

from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect.workers.utilities import get_default_base_job_template_for_infrastructure_type

#: pool name -> worker type
POOLS = {"pgpitr-process": "process", "pgpitr-kubernetes": "kubernetes"}


def ensure_pools() -> list[str]:
    """Create the pools that are missing, with their type's default job template."""
    created = []
    with get_client(sync_client=True) as client:
        for name, kind in POOLS.items():
            try:
                client.read_work_pool(name)
                continue
            except ObjectNotFound:
                pass
            template = run_coro_as_sync(get_default_base_job_template_for_infrastructure_type(kind))
            client.create_work_pool(
                WorkPoolCreate(name=name, type=kind, base_job_template=template or {})
            )
            created.append(f"{name} ({kind})")
    return created


@flow(name="ensure-work-pools")
def ensure_work_pools() -> list[str]:
    """Create pgpitr's work pools (pgpitr-process, pgpitr-kubernetes) when missing."""
    return ensure_pools()


ensure_pools()  # on load, for `prefect deploy`: see the module's docstring

if __name__ == "__main__":
    print("work pools ready:", ", ".join(POOLS))
