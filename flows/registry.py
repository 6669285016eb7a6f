"""The one list of pgpitr's flows.  The CLI runs them by name, ``pgpitr serve`` serves them,
and ``prefect.yaml`` deploys the same ones (a test holds it to this list).

Importing this module imports no flow: each is loaded when it is run or served, so that a
command pays only for the flow it runs (the Kubernetes ones need the optional extra).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any

from pgpitr.errors import PitrError


@dataclass(frozen=True)
class FlowEntry:
    name: str  # the Prefect flow name, also its deployment's first half: NAME/pgpitr
    entrypoint: str  # module:function
    #: served as a deployment; create-account is not: its password travels only through the
    #: environment of a run the CLI starts in its own process
    served: bool = True
    #: needs the optional extra pgpitr[kubernetes]
    kubernetes: bool = False

    @property
    def path(self) -> str:
        """The entrypoint as prefect.yaml writes it: flows/backup.py:backup."""
        module, _, function = self.entrypoint.partition(":")
        return f"{module.replace('.', '/')}.py:{function}"


FLOWS: tuple[FlowEntry, ...] = (
    FlowEntry("backup", "flows.backup:backup"),
    FlowEntry("verify-backup", "flows.backup:verify_backup"),
    FlowEntry("backup-for-members", "flows.backup:backup_for_members"),
    FlowEntry("restore", "flows.restore:restore"),
    FlowEntry("create-restore-point", "flows.restore:create_restore_point"),
    FlowEntry("apply-retention", "flows.retention:apply_retention"),
    FlowEntry("delete-backup", "flows.retention:delete_backup"),
    FlowEntry("refresh-recoverable-window", "flows.window:refresh_recoverable_window"),
    FlowEntry("housekeeping", "flows.housekeeping:housekeeping"),
    FlowEntry("drill", "flows.drill:drill"),
    FlowEntry("reindex", "flows.repository:reindex"),
    FlowEntry("edit-backup-policy", "flows.policy:edit_backup_policy"),
    FlowEntry("set-log-backup", "flows.policy:set_log_backup"),
    FlowEntry("set-log-backup-for-members", "flows.policy:set_log_backup_for_members"),
    FlowEntry("create-cluster", "flows.clusters:create_cluster"),
    FlowEntry("delete-cluster", "flows.clusters:delete_cluster"),
    FlowEntry("start-cluster", "flows.clusters:start_cluster"),
    FlowEntry("stop-cluster", "flows.clusters:stop_cluster"),
    FlowEntry("register-cluster", "flows.clusters:register_cluster"),
    FlowEntry("unregister-cluster", "flows.clusters:unregister_cluster"),
    FlowEntry("keep-for-members", "flows.clusters:keep_for_members"),
    FlowEntry("drop-for-members", "flows.clusters:drop_for_members"),
    FlowEntry("create-account", "flows.clusters:create_account", served=False),
    FlowEntry("create-account-for-members", "flows.clusters:create_account_for_members"),
    FlowEntry("grant-role", "flows.clusters:grant_role"),
    FlowEntry("setup", "flows.setup:setup", kubernetes=True),
    FlowEntry("addon-enable", "flows.setup:enable_addon", kubernetes=True),
    FlowEntry("addon-disable", "flows.setup:disable_addon", kubernetes=True),
    FlowEntry("storageclass-set-default", "flows.setup:set_default_storage_class", kubernetes=True),
    FlowEntry("config", "flows.setup:configure", kubernetes=True),
)
_BY_NAME = {entry.name: entry for entry in FLOWS}


def entry(name: str) -> FlowEntry:
    try:
        return _BY_NAME[name]
    except KeyError:
        raise PitrError(f"no pgpitr flow is named {name!r}") from None


def kubernetes_available() -> bool:
    return importlib.util.find_spec("kubernetes") is not None


def require_kubernetes() -> None:
    if not kubernetes_available():
        raise PitrError(
            "the Kubernetes commands need the optional extra pgpitr[kubernetes]",
            hint="install it: pip install 'pgpitr[kubernetes]' (make install does)",
        )


def load(name: str) -> Any:
    """The flow object of NAME."""
    found = entry(name)
    if found.kubernetes:
        require_kubernetes()
    module, _, function = found.entrypoint.partition(":")
    return getattr(importlib.import_module(module), function)


def served() -> list[FlowEntry]:
    """The flows a deployment serves here (the Kubernetes ones when the extra is installed)."""
    k8s = kubernetes_available()
    return [e for e in FLOWS if e.served and (k8s or not e.kubernetes)]
