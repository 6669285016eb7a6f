"""Prefect tasks of the Kubernetes platform: each a step of pgpitr/kubernetes/steps.py, in the
order pgpitr/kubernetes/setup.py writes once.

The changing steps are marked ``@undone_by(undo_change)``: their task keeps the ``Change`` in
its transaction, and a failed run's rollback removes what this run created and restores what it
patched, nothing else.  Only transient failures (no answer, 429, 5xx) are retried; RBAC
refusals and bad input fail at once.  Secret values never pass as task parameters:
``apply_s3_secret`` reads them inside the task, from the environment or from the Prefect Secret
block ``secret_block`` names.
"""

from __future__ import annotations

import functools

from pgpitr.kubernetes import steps as k
from tasks._common import RETRYING, step_task

reach = step_task(k.reach, "reach-cluster", timeout_seconds=60, **RETRYING)
detect_platform = step_task(k.detect_platform, "detect-platform", timeout_seconds=60, **RETRYING)
check_snapshot_crds = step_task(
    k.check_snapshot_crds, "check-snapshot-crds", timeout_seconds=60, **RETRYING
)
default_storage_classes = step_task(
    k.default_storage_classes, "default-storage-classes", timeout_seconds=60, **RETRYING
)
check_only_default = step_task(
    k.check_only_default, "check-only-default", timeout_seconds=60, **RETRYING
)
read_config = step_task(k.read_config, "read-config", timeout_seconds=60, **RETRYING)
check_data_protection = step_task(
    k.check_data_protection, "check-data-protection", timeout_seconds=60, **RETRYING
)
wait_ready = step_task(k.wait_ready, "wait-ready", timeout_seconds=1800, **RETRYING)
apply_manifest = step_task(k.apply_manifest, "apply-manifest", timeout_seconds=120, **RETRYING)
apply_s3_secret = step_task(k.apply_s3_secret, "apply-s3-secret", timeout_seconds=120, **RETRYING)
promote_storage_class = step_task(
    k.promote_storage_class, "promote-storage-class", timeout_seconds=120, **RETRYING
)
demote_storage_class = step_task(
    k.demote_storage_class, "demote-storage-class", timeout_seconds=120, **RETRYING
)
remove_object = step_task(k.remove_object, "remove-object", timeout_seconds=120, **RETRYING)


def _from_block(name: str) -> tuple[str, str]:
    from prefect.blocks.system import Secret

    return k.parse_credentials(Secret.load(name).get(), f"Prefect Secret block {name!r}")


def secret_block(name: str | None) -> k.Credentials | None:
    """The S3 keys from the Prefect Secret block NAME, read when the step runs; None: from the
    environment."""
    return functools.partial(_from_block, name) if name else None
