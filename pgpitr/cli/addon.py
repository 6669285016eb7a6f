"""``pgpitr addon``: list, enable, disable the Kubernetes add-ons, and run the whole setup.

Also home of what ``storageclass`` and ``config`` share: the cluster options (--kubeconfig,
--context), and running a setup flow from --set values with the secrets kept out of its
parameters (they reach the flow through its environment only).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from pgpitr.cli import console
from pgpitr.kubernetes import addons
from pgpitr.kubernetes import settings as keys
from pgpitr.kubernetes.client import connect

Kubeconfig = Annotated[
    str | None,
    typer.Option("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"),
]
Context = Annotated[str | None, typer.Option("--context", help="kubeconfig context to use")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="key=value[,key=value...]")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="print the manifests, change nothing")]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="pgpitr's namespace")]
CredentialsBlock = Annotated[
    str | None,
    typer.Option("--s3-credentials-block", help="Prefect Secret block: JSON accessKey, secretKey"),
]
RemoveCrds = Annotated[
    bool, typer.Option("--remove-crds", help="also delete the CRDs, and so every snapshot object")
]

app = typer.Typer(help="Kubernetes add-ons: snapshot-controller, csi-s3.", no_args_is_help=True)


def run_flow(
    flow_fn: Callable[..., dict[str, Any]],
    set_values: Sequence[str] | None,
    keyset: tuple[keys.Key, ...],
    what: str,
    **parameters: Any,
) -> None:
    """Check --set, run the flow here with secrets in its environment, show the result."""
    given = keys.parse_set(set_values or [])
    elsewhere = bool(parameters.get("dry_run") or parameters.get("s3_credentials_block"))
    keys.validate(given, keyset, what=what, secrets_elsewhere=elsewhere)
    public, secrets = keys.split_secrets(given, keyset)
    with keys.secrets_in_environment(secrets):
        result = flow_fn(settings=public, **parameters) if keyset else flow_fn(**parameters)
    if result.get("dry_run"):
        sys.stdout.write(result["yaml"])
        return
    rows = [[r["kind"], r["name"], r["namespace"], r["action"]] for r in result["applied"]]
    console.table(("KIND", "NAME", "NAMESPACE", "ACTION"), rows)


@app.command("list")
def list_addons(kubeconfig: Kubeconfig = None, context: Context = None) -> None:
    """NAME TYPE STATUS EXTRAS AUTO-INSTALL, as the cluster reports them."""
    console.table(addons.COLUMNS, addons.list_rows(connect(kubeconfig, context)))


@app.command()
def enable(
    name: str,
    set_: Sets = None,
    dry_run: DryRun = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    s3_credentials_block: CredentialsBlock = None,
) -> None:
    """Install an add-on: enable csi-s3 --set secret.accessKey=…,storageClass.singleBucket=…"""
    from flows.setup import enable_addon

    run_flow(
        enable_addon,
        set_,
        addons.get_addon(name).keys,
        f"add-on {name}",
        name=name,
        kubeconfig=kubeconfig,
        context=context,
        dry_run=dry_run,
        s3_credentials_block=s3_credentials_block,
    )


@app.command()
def disable(
    name: str,
    remove_crds: RemoveCrds = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Remove what pgpitr installed for an add-on; objects it did not create stay."""
    from flows.setup import disable_addon

    addons.get_addon(name)
    result = disable_addon(
        name=name, remove_crds=remove_crds, kubeconfig=kubeconfig, context=context
    )
    console.info("\n".join(result["removed"]))


@app.command()
def setup(
    set_: Sets = None,
    dry_run: DryRun = False,
    namespace: Namespace = "pgpitr-system",
    kubeconfig: Kubeconfig = None,
    context: Context = None,
    s3_credentials_block: CredentialsBlock = None,
) -> None:
    """All steps in order, all or nothing: snapshot-controller, default storage class, csi-s3,
    data protection."""
    from flows.setup import setup as setup_flow

    run_flow(
        setup_flow,
        set_,
        keys.SETUP_KEYS,
        "setup",
        namespace=namespace,
        kubeconfig=kubeconfig,
        context=context,
        dry_run=dry_run,
        s3_credentials_block=s3_credentials_block,
    )
