"""``pgpitr serve``: every deployment served from this process (deployments/serve.py)."""

from __future__ import annotations

from typing import Annotated

import typer


def app(
    limit: Annotated[
        int | None, typer.Option(help="at most this many flow runs at once (default 5)")
    ] = None,
) -> None:
    """Serve every pgpitr deployment here: schedules from the backup policies, runs started from
    the UI, `prefect deployment run` or `pgpitr cluster … --wait`.  Starts a Prefect server on
    127.0.0.1:4200 (pgpitr's local one, kept running) when none is configured."""
    from deployments.serve import main

    main(limit=limit)
