"""``pgpitr config``: data-protection settings, kept in the cluster (ConfigMap pgpitr-config)."""

from __future__ import annotations

from cli import console
from cli.addon import Context, DryRun, Kubeconfig, Namespace, Sets, connect, run_flow
from pgpitr.kubernetes import dataprotection
from pgpitr.kubernetes import settings as keys


def app(
    set_: Sets = None,
    namespace: Namespace = dataprotection.NAMESPACE,
    dry_run: DryRun = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Data-protection settings: show them, or change them with --set.

    Kept in the cluster (ConfigMap pgpitr-config); the backup PVC is created when missing, e.g.
    --set dataProtection.backupPVCName=backup-data,dataProtection.backupPVCStorageClassName=csi-s3
    """
    if not set_:
        stored = dataprotection.read_config(connect(kubeconfig, context), namespace)
        return console.table(("KEY", "VALUE"), sorted(stored.items()))
    run_flow(
        "config",
        set_,
        keys.DATA_PROTECTION_KEYS,
        "config",
        namespace=namespace,
        kubeconfig=kubeconfig,
        context=context,
        dry_run=dry_run,
    )
