"""``pgpitr serve``: an alias of ``pgpitr agent run`` (one concept: the agent of this host)."""

from __future__ import annotations

from cli.agent import Limit, run


def app(limit: Limit = None) -> None:
    """The same as `pgpitr agent run`: serve this host's deployments in the foreground."""
    run(limit=limit)
