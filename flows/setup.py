"""Kubernetes platform setup as Prefect flows.

Each flow runs its operation from pgpitr/kubernetes/setup.py (where the order of its steps is
written, once) with every step as its task (tasks/kubernetes.py), inside a Prefect transaction
that rolls back what this run created or patched, nothing else.  With ``dry_run`` a flow returns
the manifests as YAML, secrets redacted, and reads the cluster only when one answers.

Secret values are never parameters: the csi-s3 credentials reach the flow through
PGPITR_S3_ACCESS_KEY / PGPITR_S3_SECRET_KEY in its environment or a Prefect Secret block named by
``s3_credentials_block``.
"""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact

from pgpitr.kubernetes import dataprotection
from pgpitr.kubernetes import setup as ops
from pgpitr.kubernetes.target import KubeTarget
from tasks import kubernetes as t
from tasks._common import artifact_key
from tasks.results import PERSISTED
from tasks.steps import STEPS


def _report(outcome: ops.Outcome, key: str) -> dict[str, Any]:
    """The run's artifact (what was applied, or the dry run's manifests) and its result."""
    key = artifact_key(key)
    notes = "".join(f"- {note}\n" for note in outcome.notes)
    if outcome.dry_run:
        create_markdown_artifact(
            f"{notes}\n```yaml\n{outcome.yaml()}```",
            key=f"{key}-dry-run",
            description="manifests (dry run)",
        )
    else:
        create_table_artifact(
            outcome.rows() or [{"kind": "", "name": "", "namespace": "", "action": "nothing"}],
            key=key,
            description="objects applied to the cluster",
        )
    return outcome.result()


@flow(name="setup", flow_run_name="setup-{namespace}", **PERSISTED)
def setup(
    settings: dict[str, str] | None = None,
    namespace: str = dataprotection.NAMESPACE,
    kubeconfig: str | None = None,
    context: str | None = None,
    dry_run: bool = False,
    s3_credentials_block: str | None = None,
    wait_timeout: float = 300.0,
    poll_interval: float = 2.0,
) -> dict[str, Any]:
    """The whole Kubernetes platform setup, all or nothing."""
    outcome = ops.setup(
        STEPS,
        KubeTarget(kubeconfig, context, dry_run),
        settings,
        namespace=namespace,
        credentials=t.secret_block(s3_credentials_block),
        wait=ops.Wait(wait_timeout, poll_interval),
    )
    return _report(outcome, "kubernetes-setup")


@flow(name="addon-enable", flow_run_name="addon-enable-{name}", **PERSISTED)
def enable_addon(
    name: str,
    settings: dict[str, str] | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    dry_run: bool = False,
    s3_credentials_block: str | None = None,
    wait_timeout: float = 300.0,
    poll_interval: float = 2.0,
) -> dict[str, Any]:
    outcome = ops.enable_addon(
        STEPS,
        KubeTarget(kubeconfig, context, dry_run),
        name,
        settings,
        credentials=t.secret_block(s3_credentials_block),
        wait=ops.Wait(wait_timeout, poll_interval),
    )
    return _report(outcome, f"addon-enable-{name}")


@flow(name="addon-disable", flow_run_name="addon-disable-{name}", **PERSISTED)
def disable_addon(
    name: str,
    remove_crds: bool = False,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> dict[str, Any]:
    """Delete what pgpitr installed for the add-on; CRDs (and every snapshot) only when asked."""
    removed = ops.disable_addon(STEPS, KubeTarget(kubeconfig, context), name, remove_crds)
    create_markdown_artifact(
        "\n".join(f"- {line}" for line in removed),
        key=artifact_key(f"addon-disable-{name}"),
        description=f"what disabling {name} removed",
    )
    return {"removed": removed}


@flow(name="storageclass-set-default", flow_run_name="storageclass-set-default-{name}", **PERSISTED)
def set_default_storage_class(
    name: str,
    create: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Make ``name`` (created as an EBS class of type ``create`` if given) the only default."""
    outcome = ops.set_default_storage_class(
        STEPS, KubeTarget(kubeconfig, context, dry_run), name, create
    )
    return _report(outcome, f"storageclass-set-default-{name}")


@flow(name="config", flow_run_name="config-{namespace}", **PERSISTED)
def configure(
    settings: dict[str, str],
    namespace: str = dataprotection.NAMESPACE,
    kubeconfig: str | None = None,
    context: str | None = None,
    dry_run: bool = False,
    wait_timeout: float = 300.0,
    poll_interval: float = 2.0,
) -> dict[str, Any]:
    """Persist data-protection settings in the cluster and create the backup PVC if missing."""
    outcome = ops.configure(
        STEPS,
        KubeTarget(kubeconfig, context, dry_run),
        settings,
        namespace=namespace,
        wait=ops.Wait(wait_timeout, poll_interval),
    )
    return _report(outcome, f"config-{namespace}")
