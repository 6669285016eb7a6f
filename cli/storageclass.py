"""``pgpitr storageclass``: list the storage classes, make one the only default."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import console
from cli.addon import Context, DryRun, Kubeconfig, connect, run_flow
from pgpitr.kubernetes import storageclass

Create = Annotated[
    str | None,
    typer.Option("--create", help="create the class first, as an EBS class of this volume type"),
]

app = typer.Typer(help="Kubernetes storage classes.", no_args_is_help=True)


@app.command("list")
def list_classes(kubeconfig: Kubeconfig = None, context: Context = None) -> None:
    """NAME PROVISIONER RECLAIMPOLICY VOLUMEBINDINGMODE ALLOWVOLUMEEXPANSION DEFAULT."""
    classes = storageclass.list_classes(connect(kubeconfig, context))
    console.table(storageclass.COLUMNS, storageclass.rows(classes))


@app.command("set-default")
def set_default(
    name: str,
    create: Create = None,
    dry_run: DryRun = False,
    kubeconfig: Kubeconfig = None,
    context: Context = None,
) -> None:
    """Make NAME the only default: set-default ebs-sc --create gp3 (xfs, WaitForFirstConsumer)."""
    run_flow(
        "storageclass-set-default",
        None,
        (),
        "storageclass set-default",
        name=name,
        create=create,
        kubeconfig=kubeconfig,
        context=context,
        dry_run=dry_run,
    )
