"""Kubernetes platform setup as Prefect flows.

``setup`` runs every step in order inside one transaction: snapshot-controller, the default
storage class, csi-s3, data protection.  A failure rolls back what this run created (and restores
what it patched), nothing else.  ``enable_addon``, ``set_default_storage_class`` and ``configure``
run one step the same way; ``disable_addon`` removes what pgpitr installed.  With ``dry_run`` a
flow only reads the cluster and returns the manifests as YAML, secrets redacted.

Secret values are never parameters: the csi-s3 credentials reach the flow through
PGPITR_S3_ACCESS_KEY / PGPITR_S3_SECRET_KEY in its environment or a Prefect Secret block named by
``s3_credentials_block``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.transactions import transaction

from pgpitr.errors import KubernetesError
from pgpitr.kubernetes import csi_s3, dataprotection, snapshot, storageclass
from pgpitr.kubernetes import settings as keys
from pgpitr.kubernetes.addons import get_addon
from pgpitr.kubernetes.client import KubeTarget
from pgpitr.kubernetes.crds import snapshot_crds
from pgpitr.kubernetes.manifests import REDACTED, patch_yaml, to_yaml
from pgpitr.kubernetes.resources import ref_of
from tasks import kubernetes as t
from tasks._common import artifact_key

WORKLOADS = ("Deployment", "DaemonSet")


@dataclass
class Run:
    """One flow run's way of applying: for real (tasks) or on paper (YAML)."""

    target: KubeTarget
    dry_run: bool
    wait_timeout: float
    poll: float
    applied: list[dict[str, str]] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)

    def apply(self, manifest: dict[str, Any]) -> None:
        if self.dry_run:
            self.planned.append(to_yaml([manifest]))
        else:
            self.applied.append(t.apply_manifest(manifest, self.target))

    def wait(self, *manifests: dict[str, Any]) -> None:
        if not self.dry_run and manifests:
            refs = [ref_of(m) for m in manifests]
            t.wait_ready(self.target, refs, self.wait_timeout, self.poll)

    def transaction(self) -> contextlib.AbstractContextManager[Any]:
        return contextlib.nullcontext() if self.dry_run else transaction()

    def finish(self, key: str) -> dict[str, Any]:
        key = artifact_key(key)
        if self.dry_run:
            text = "---\n".join(self.planned)
            create_markdown_artifact(
                f"```yaml\n{text}```", key=f"{key}-dry-run", description="manifests (dry run)"
            )
            return {"dry_run": True, "yaml": text}
        create_table_artifact(
            self.applied or [{"kind": "", "name": "", "namespace": "", "action": "nothing"}],
            key=key,
            description="objects applied to the cluster",
        )
        return {"dry_run": False, "applied": self.applied}


def _checked(
    given: Mapping[str, str] | None,
    keyset: tuple[keys.Key, ...],
    what: str,
    secrets_elsewhere: bool,
) -> dict[str, str]:
    given = dict(given or {})
    keys.refuse_secrets(given, keyset)
    return keys.validate(given, keyset, what=what, secrets_elsewhere=secrets_elsewhere)


# -- steps --------------------------------------------------------------------------------------


def snapshot_controller_step(run: Run, platform: str | None) -> None:
    platform = platform or t.detect_platform(run.target)
    if not run.dry_run:
        t.check_snapshot_crds(run.target)
    crds = snapshot_crds()
    for crd in crds:
        run.apply(crd)
    run.wait(*crds)
    controller = snapshot.controller_manifests()
    for manifest in controller:
        run.apply(manifest)
    run.wait(*(m for m in controller if m["kind"] in WORKLOADS))
    run.apply(snapshot.snapshot_class(platform))


def default_storage_class_step(run: Run, name: str, create: str | None) -> None:
    if create:
        run.apply(storageclass.ebs_class(name, create))
    elif run.dry_run:
        run.planned.append(patch_yaml("StorageClass", name, storageclass.promotion_patch()))
    else:
        run.applied.append(t.promote_storage_class(run.target, name))
    for other in t.default_storage_classes(run.target):
        if other == name:
            continue
        if run.dry_run:
            demotion = {"metadata": {"annotations": {storageclass.DEFAULT_ANNOTATION: "false"}}}
            run.planned.append(patch_yaml("StorageClass", other, demotion))
        else:
            run.applied.append(t.demote_storage_class(run.target, other, name))
    if not run.dry_run:
        defaults = t.default_storage_classes(run.target)
        if defaults != [name]:
            raise KubernetesError(
                f"expected {name} to be the only default storage class, found {defaults or 'none'}"
            )


def csi_s3_step(run: Run, settings: Mapping[str, str], credentials_block: str | None) -> None:
    endpoint, region = settings["secret.endpoint"], settings["secret.region"]
    if run.dry_run:
        run.planned.append(to_yaml([csi_s3.secret(REDACTED, REDACTED, endpoint, region)]))
    else:
        run.applied.append(
            t.apply_s3_secret(run.target, endpoint, region, csi_s3.NAMESPACE, credentials_block)
        )
    drivers = csi_s3.driver_manifests()
    for manifest in drivers:
        run.apply(manifest)
    run.wait(*(m for m in drivers if m["kind"] in WORKLOADS))
    bucket, name = settings["storageClass.singleBucket"], settings["storageClass.name"]
    run.apply(csi_s3.storage_class(bucket, name=name))


def data_protection_step(
    run: Run, effective: Mapping[str, str], namespace: str, config: Mapping[str, str]
) -> None:
    if not run.dry_run:
        t.check_data_protection(run.target, dict(effective))
    run.apply(dataprotection.namespace_manifest(namespace))
    run.apply(dataprotection.config_map(config, namespace))
    pvc = dataprotection.backup_pvc(effective, namespace)
    run.apply(pvc)
    run.wait(pvc)


# -- flows --------------------------------------------------------------------------------------


@flow(name="setup", flow_run_name="setup-{namespace}")
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
    checked = _checked(settings, keys.SETUP_KEYS, "setup", dry_run or bool(s3_credentials_block))
    run = Run(KubeTarget(kubeconfig, context), dry_run, wait_timeout, poll_interval)
    data_protection = {k: v for k, v in checked.items() if k.startswith(dataprotection.PREFIX)}
    with run.transaction():
        snapshot_controller_step(run, checked.get("platform"))
        default_storage_class_step(
            run, checked["defaultStorageClass.name"], checked["defaultStorageClass.create"]
        )
        csi_s3_step(run, checked, s3_credentials_block)
        data_protection_step(run, checked, namespace, data_protection)
    return run.finish("kubernetes-setup")


@flow(name="addon-enable", flow_run_name="addon-enable-{name}")
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
    addon = get_addon(name)
    checked = _checked(
        settings, addon.keys, f"add-on {name}", dry_run or bool(s3_credentials_block)
    )
    run = Run(KubeTarget(kubeconfig, context), dry_run, wait_timeout, poll_interval)
    with run.transaction():
        if name == "snapshot-controller":
            snapshot_controller_step(run, checked.get("platform"))
        else:
            csi_s3_step(run, checked, s3_credentials_block)
    return run.finish(f"addon-enable-{name}")


@flow(name="addon-disable", flow_run_name="addon-disable-{name}")
def disable_addon(
    name: str,
    remove_crds: bool = False,
    kubeconfig: str | None = None,
    context: str | None = None,
) -> dict[str, Any]:
    """Delete what pgpitr installed for the add-on; CRDs (and every snapshot) only when asked."""
    target = KubeTarget(kubeconfig, context)
    order = get_addon(name).removal_order(with_crds=remove_crds)
    removed = [t.remove_object(target, ref) for ref in order]
    create_markdown_artifact(
        "\n".join(f"- {line}" for line in removed),
        key=f"addon-disable-{name}",
        description=f"what disabling {name} removed",
    )
    return {"removed": removed}


@flow(name="storageclass-set-default", flow_run_name="storageclass-set-default-{name}")
def set_default_storage_class(
    name: str,
    create: str | None = None,
    kubeconfig: str | None = None,
    context: str | None = None,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Make ``name`` (created as an EBS class of type ``create`` if given) the only default."""
    run = Run(KubeTarget(kubeconfig, context), dry_run, 0.0, 0.0)
    with run.transaction():
        default_storage_class_step(run, name, create)
    return run.finish(f"storageclass-set-default-{name}")


@flow(name="config", flow_run_name="config-{namespace}")
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
    given = _checked(settings, keys.DATA_PROTECTION_KEYS, "config", False)
    given = {k: v for k, v in given.items() if k in settings}
    run = Run(KubeTarget(kubeconfig, context), dry_run, wait_timeout, poll_interval)
    known = {k.name for k in keys.DATA_PROTECTION_KEYS}
    stored = {k: v for k, v in t.read_config(run.target, namespace).items() if k in known}
    effective = keys.check({**stored, **given}, keys.DATA_PROTECTION_KEYS, what="config")
    with run.transaction():
        data_protection_step(run, effective, namespace, given)
    return run.finish(f"config-{namespace}")
