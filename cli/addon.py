"""``pgpitr addon``: list, enable, disable the Kubernetes add-ons, and run the whole setup.

Also home of what ``storageclass`` and ``config`` share: the cluster options (--kubeconfig,
--context, --platform), reading the cluster for the read-only commands, and running a setup flow
through the runner from --set values, the secrets kept out of its parameters (they reach the
flow through its environment only).

Importing this module does not import the ``kubernetes`` client library (an optional extra):
`pgpitr --help` works without it, and each command says how to install it when it is missing.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cli import console, runner
from flows import registry
from pgpitr.errors import InvalidInput
from pgpitr.kubernetes import addons
from pgpitr.kubernetes import settings as keys
from pgpitr.kubernetes.snapshot import PLATFORM_DRIVERS

if TYPE_CHECKING:
    from pgpitr.kubernetes.client import Kube

Kubeconfig = Annotated[
    str | None,
    typer.Option("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config)"),
]
Context = Annotated[str | None, typer.Option("--context", help="kubeconfig context to use")]
Sets = Annotated[list[str] | None, typer.Option("--set", help="key=value[,key=value...]")]
DryRun = Annotated[
    bool,
    typer.Option("--dry-run", help="print the manifests, change nothing (needs no cluster)"),
]
Platform = Annotated[
    str | None,
    typer.Option(
        "--platform",
        help=f"{'|'.join(PLATFORM_DRIVERS)}: the CSI driver of the VolumeSnapshotClass "
        "(default: detected from the nodes; eks when no cluster answers)",
    ),
]
Namespace = Annotated[str, typer.Option("--namespace", "-n", help="pgpitr's namespace")]
CredentialsBlock = Annotated[
    str | None,
    typer.Option("--s3-credentials-block", help="Prefect Secret block: JSON accessKey, secretKey"),
]
RemoveCrds = Annotated[
    bool, typer.Option("--remove-crds", help="also delete the CRDs, and so every snapshot object")
]

app = typer.Typer(help="Kubernetes add-ons: snapshot-controller, csi-s3.", no_args_is_help=True)


def connect(kubeconfig: str | None, context: str | None) -> Kube:
    """The cluster, for a command that only reads it (and starts no flow)."""
    registry.require_kubernetes()
    from pgpitr.kubernetes.client import connect as connect_to

    return connect_to(kubeconfig, context)


def _with_platform(given: dict[str, str], platform: str | None) -> dict[str, str]:
    """--platform is --set platform=…; both may be given only when they agree."""
    if platform is None:
        return given
    if given.get("platform", platform) != platform:
        raise InvalidInput(
            f"--platform {platform} and --set platform={given['platform']} disagree",
            hint="give one of them",
        )
    return {**given, "platform": platform}


def run_flow(
    flow_name: str,
    set_values: Sequence[str] | None,
    keyset: tuple[keys.Key, ...],
    what: str,
    *,
    platform: str | None = None,
    **parameters: Any,
) -> None:
    """Check --set, run the flow FLOW_NAME (flows/registry.py) through the runner with the
    secrets in its environment only, and show what it applied (or the dry run's manifests)."""
    registry.require_kubernetes()
    given = keys.parse_set(set_values or [])
    if platform is not None and not any(k.name == "platform" for k in keyset):
        raise InvalidInput(f"--platform does not apply to {what}")
    given = _with_platform(given, platform)
    if parameters.get("dry_run"):  # a required key not given becomes a placeholder
        keys.check(given, keyset, what=what, require=False)
    else:
        elsewhere = bool(parameters.get("s3_credentials_block"))
        keys.validate(given, keyset, what=what, secrets_elsewhere=elsewhere)
    public, secrets = keys.split_secrets(given, keyset)
    if keyset:
        parameters["settings"] = public
    result = runner.run(flow_name, None, environment=secrets, **parameters)
    for note in result.get("notes") or []:
        console.info(f"note: {note}")
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
    platform: Platform = None,
) -> None:
    """Install an add-on: enable csi-s3 --set secret.accessKey=…,storageClass.singleBucket=…"""
    run_flow(
        "addon-enable",
        set_,
        addons.get_addon(name).keys,
        f"add-on {name}",
        platform=platform,
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
    registry.require_kubernetes()
    addons.get_addon(name)
    result = runner.run(
        "addon-disable",
        None,
        name=name,
        remove_crds=remove_crds,
        kubeconfig=kubeconfig,
        context=context,
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
    platform: Platform = None,
) -> None:
    """All steps in order, all or nothing: snapshot-controller, default storage class, csi-s3,
    data protection."""
    run_flow(
        "setup",
        set_,
        keys.SETUP_KEYS,
        "setup",
        platform=platform,
        namespace=namespace,
        kubeconfig=kubeconfig,
        context=context,
        dry_run=dry_run,
        s3_credentials_block=s3_credentials_block,
    )
