"""The Kubernetes platform operations, each composed once from ``pgpitr.kubernetes.steps``.

Every operation takes a ``pgpitr.steps.Steps`` and calls each step through it: plain Python runs
them here, a flow passes ``tasks.steps.STEPS`` to run each as its task.  ``setup`` runs
snapshot-controller, the default storage class, csi-s3 and data protection inside one
transaction: a failure undoes what this run created or patched, nothing else.
``enable_addon``, ``set_default_storage_class`` and ``configure`` run their part the same way;
``disable_addon`` removes what pgpitr installed.

A dry run (``KubeTarget(dry_run=True)``) is the same composition: the changing steps return
the YAML they would apply (secrets redacted), the cluster is only read, and only when one is
configured and answers; otherwise the ``Outcome`` says what was assumed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pgpitr.kubernetes import csi_s3, dataprotection, snapshot, storageclass
from pgpitr.kubernetes import settings as keys
from pgpitr.kubernetes.addons import get_addon
from pgpitr.kubernetes.crds import snapshot_crds
from pgpitr.kubernetes.resources import ref_of
from pgpitr.kubernetes.steps import (
    Change,
    Credentials,
    apply_manifest,
    apply_s3_secret,
    check_data_protection,
    check_only_default,
    check_snapshot_crds,
    default_storage_classes,
    demote_storage_class,
    detect_platform,
    env_credentials,
    promote_storage_class,
    reach,
    read_config,
    remove_object,
    wait_ready,
)
from pgpitr.kubernetes.target import KubeTarget
from pgpitr.steps import Steps

WORKLOADS = ("Deployment", "DaemonSet")


@dataclass(frozen=True)
class Wait:
    """How long a step waits for what it applied to become ready, and how often it looks."""

    timeout: float = 300.0
    poll: float = 2.0


DEFAULT_WAIT = Wait()


@dataclass
class Outcome:
    """What an operation applied (or, in a dry run, would apply), and what it assumed."""

    dry_run: bool
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def rows(self) -> list[dict[str, str]]:
        return [c.summary() for c in self.changes]

    def yaml(self) -> str:
        """The dry run's manifests and patches, one YAML stream, secrets redacted."""
        return "---\n".join(c.document for c in self.changes if c.document)

    def result(self) -> dict[str, Any]:
        """The flow's result: no object content but the (redacted) dry-run YAML."""
        if self.dry_run:
            return {"dry_run": True, "yaml": self.yaml(), "notes": list(self.notes)}
        return {"dry_run": False, "applied": self.rows(), "notes": list(self.notes)}


def checked_settings(
    given: Mapping[str, str] | None,
    keyset: tuple[keys.Key, ...],
    what: str,
    secrets_elsewhere: bool,
) -> dict[str, str]:
    """The --set settings of an operation, defaults filled; a secret among them is refused."""
    given = dict(given or {})
    keys.refuse_secrets(given, keyset)
    return keys.validate(given, keyset, what=what, secrets_elsewhere=secrets_elsewhere)


def _settings(
    given: Mapping[str, str] | None,
    keyset: tuple[keys.Key, ...],
    what: str,
    target: KubeTarget,
    credentials: Credentials | None,
) -> tuple[dict[str, str], list[str]]:
    """``checked_settings``; a dry run fills a required key not given with a placeholder, and
    says so (the second value)."""
    if not target.dry_run:
        return checked_settings(given, keyset, what, credentials is not None), []
    given = dict(given or {})
    keys.refuse_secrets(given, keyset)
    checked = keys.check(given, keyset, what=what, require=False)
    missing = [k.name for k in keyset if k.required and not k.secret and k.name not in checked]
    checked.update({name: placeholder(name) for name in missing})
    notes = [f"placeholder for {', '.join(missing)} (not given)"] if missing else []
    return checked, notes


def placeholder(name: str) -> str:
    return f"<{name}>"


def _begin(
    steps: Steps, target: KubeTarget, notes: list[str] | None = None
) -> tuple[KubeTarget, Outcome]:
    target = steps(reach, target)
    outcome = Outcome(target.dry_run, notes=list(notes or []))
    if target.offline:
        outcome.notes.append(f"dry run without a cluster ({target.offline.splitlines()[0]})")
    return target, outcome


def _assumed(target: KubeTarget, outcome: Outcome, what: str) -> None:
    if target.offline:
        outcome.notes.append(f"assumed {what}")


# -- the parts, each in its order ----------------------------------------------------------------


def _apply_all(
    steps: Steps,
    target: KubeTarget,
    outcome: Outcome,
    manifests: list[dict[str, Any]],
    wait: Wait,
    *,
    ready: tuple[str, ...] | None = None,
) -> None:
    """Apply in order, then wait for them (only the kinds in ``ready``, when given)."""
    for manifest in manifests:
        outcome.changes.append(steps(apply_manifest, target, manifest))
    refs = [ref_of(m) for m in manifests if ready is None or m["kind"] in ready]
    if refs:
        steps(wait_ready, target, refs, wait.timeout, wait.poll)


def _snapshot_controller(
    steps: Steps, target: KubeTarget, outcome: Outcome, platform: str | None, wait: Wait
) -> None:
    if not platform:
        platform = steps(detect_platform, target)
        _assumed(target, outcome, f"platform {platform} (choose another with --platform)")
    steps(check_snapshot_crds, target)
    _apply_all(steps, target, outcome, snapshot_crds(), wait)
    _apply_all(steps, target, outcome, snapshot.controller_manifests(), wait, ready=WORKLOADS)
    outcome.changes.append(steps(apply_manifest, target, snapshot.snapshot_class(platform)))


def _default_storage_class(
    steps: Steps, target: KubeTarget, outcome: Outcome, name: str, create: str | None
) -> None:
    if create:
        outcome.changes.append(steps(apply_manifest, target, storageclass.ebs_class(name, create)))
    else:
        outcome.changes.append(steps(promote_storage_class, target, name))
    others = [other for other in steps(default_storage_classes, target) if other != name]
    _assumed(target, outcome, "no other default storage class to demote")
    for other in others:
        outcome.changes.append(steps(demote_storage_class, target, other, name))
    steps(check_only_default, target, name)


def _csi_s3(
    steps: Steps,
    target: KubeTarget,
    outcome: Outcome,
    settings: Mapping[str, str],
    credentials: Credentials | None,
    wait: Wait,
) -> None:
    endpoint, region = settings["secret.endpoint"], settings["secret.region"]
    outcome.changes.append(
        steps(
            apply_s3_secret,
            target,
            endpoint,
            region,
            csi_s3.NAMESPACE,
            credentials or env_credentials,
        )
    )
    _apply_all(steps, target, outcome, csi_s3.driver_manifests(), wait, ready=WORKLOADS)
    bucket, name = settings["storageClass.singleBucket"], settings["storageClass.name"]
    outcome.changes.append(steps(apply_manifest, target, csi_s3.storage_class(bucket, name=name)))


def _data_protection(
    steps: Steps,
    target: KubeTarget,
    outcome: Outcome,
    effective: Mapping[str, str],
    namespace: str,
    stored: Mapping[str, str],
    wait: Wait,
) -> None:
    """``effective``: every setting the PVC needs; ``stored``: the keys to write into the
    ConfigMap (a merge patch: keys not given stay as they are)."""
    steps(check_data_protection, target, dict(effective))
    outcome.changes.append(
        steps(apply_manifest, target, dataprotection.namespace_manifest(namespace))
    )
    outcome.changes.append(
        steps(apply_manifest, target, dataprotection.config_map(stored, namespace))
    )
    _apply_all(steps, target, outcome, [dataprotection.backup_pvc(effective, namespace)], wait)


# -- the operations ------------------------------------------------------------------------------


def setup(
    steps: Steps,
    target: KubeTarget,
    settings: Mapping[str, str] | None = None,
    *,
    namespace: str = dataprotection.NAMESPACE,
    credentials: Credentials | None = None,
    wait: Wait = DEFAULT_WAIT,
) -> Outcome:
    """The whole platform, all or nothing.  ``credentials`` None: the S3 keys come from the
    environment (PGPITR_S3_ACCESS_KEY / PGPITR_S3_SECRET_KEY)."""
    checked, notes = _settings(settings, keys.SETUP_KEYS, "setup", target, credentials)
    data_protection = {k: v for k, v in checked.items() if k.startswith(dataprotection.PREFIX)}
    target, outcome = _begin(steps, target, notes)
    with steps.transaction():
        _snapshot_controller(steps, target, outcome, checked.get("platform"), wait)
        _default_storage_class(
            steps,
            target,
            outcome,
            checked["defaultStorageClass.name"],
            checked["defaultStorageClass.create"],
        )
        _csi_s3(steps, target, outcome, checked, credentials, wait)
        _data_protection(steps, target, outcome, checked, namespace, data_protection, wait)
    return outcome


def enable_addon(
    steps: Steps,
    target: KubeTarget,
    name: str,
    settings: Mapping[str, str] | None = None,
    *,
    credentials: Credentials | None = None,
    wait: Wait = DEFAULT_WAIT,
) -> Outcome:
    addon = get_addon(name)
    checked, notes = _settings(settings, addon.keys, f"add-on {name}", target, credentials)
    target, outcome = _begin(steps, target, notes)
    with steps.transaction():
        if name == "snapshot-controller":
            _snapshot_controller(steps, target, outcome, checked.get("platform"), wait)
        else:
            _csi_s3(steps, target, outcome, checked, credentials, wait)
    return outcome


def disable_addon(steps: Steps, target: KubeTarget, name: str, remove_crds: bool) -> list[str]:
    """Delete what pgpitr installed for the add-on, dependants first; CRDs (and so every
    snapshot object) only with ``remove_crds``.  What it says about each object."""
    order = get_addon(name).removal_order(with_crds=remove_crds)
    return [steps(remove_object, target, ref) for ref in order]


def set_default_storage_class(
    steps: Steps, target: KubeTarget, name: str, create: str | None = None
) -> Outcome:
    """Make ``name`` (created as an EBS class of type ``create`` if given) the only default."""
    if create:
        storageclass.ebs_class(name, create)  # a bad volume type stops the run before any step
    target, outcome = _begin(steps, target)
    with steps.transaction():
        _default_storage_class(steps, target, outcome, name, create)
    return outcome


def configure(
    steps: Steps,
    target: KubeTarget,
    settings: Mapping[str, str],
    *,
    namespace: str = dataprotection.NAMESPACE,
    wait: Wait = DEFAULT_WAIT,
) -> Outcome:
    """Keep the data-protection settings given in the cluster; create the backup PVC if missing."""
    given = checked_settings(settings, keys.DATA_PROTECTION_KEYS, "config", False)
    given = {k: v for k, v in given.items() if k in settings}
    target, outcome = _begin(steps, target)
    known = {k.name for k in keys.DATA_PROTECTION_KEYS}
    stored = {k: v for k, v in steps(read_config, target, namespace).items() if k in known}
    _assumed(target, outcome, f"no settings stored in namespace {namespace} yet")
    effective = keys.check({**stored, **given}, keys.DATA_PROTECTION_KEYS, what="config")
    with steps.transaction():
        _data_protection(steps, target, outcome, effective, namespace, given, wait)
    return outcome
