"""``pgpitr repository …``: maintenance of the backup repository itself."""

from __future__ import annotations

from typing import Annotated

import typer

from cli import console, flowio, runner
from pgpitr.postgres.cluster import validate_name

app = typer.Typer(no_args_is_help=True, help="Maintain the backup repository.")


@app.command()
def reindex(
    cluster: Annotated[str | None, typer.Option(help="the cluster whose index to rebuild")] = None,
    backup_repo: Annotated[
        str | None, typer.Option(help="repository URL: every stanza in it (or --cluster's)")
    ] = None,
    wait: Annotated[
        bool | None,
        typer.Option(
            "--wait/--no-wait",
            help="run through the served deployment (pgpitr serve)",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Rebuild the catalog index from a listing of the WAL (of every cluster of this host by
    default)."""
    if cluster is not None:
        validate_name(cluster)
    url = flowio.url_parameter(flowio.repository_url(backup_repo))
    result = runner.run("reindex", wait, cluster=cluster, backup_repo=url)
    if result is runner.NO_RESULT:
        return
    for r in result:
        console.info(
            f"reindexed {r['stanza']} in {r['repository']}: {r['segments']} segment(s) and "
            f"{r['files']} other file(s) on {r['timelines']} timeline(s)"
        )
