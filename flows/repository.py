"""The ``reindex`` flow: rebuild the catalog index of stanzas from a listing of their WAL
(pgpitr/catalog/reindex.py holds the steps' order)."""

from __future__ import annotations

from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pgpitr.catalog import reindex as engine
from pgpitr.repository.url import RepositoryUrl
from tasks.naming import run_name
from tasks.results import PERSISTED
from tasks.steps import STEPS


@flow(
    name="reindex",
    flow_run_name=run_name("reindex-{host}"),
    **PERSISTED,
)
def reindex(cluster: str | None = None, backup_repo: str | None = None) -> list[dict[str, Any]]:
    """Rebuild the catalog index of CLUSTER (or of every stanza of BACKUP_REPO, or of every
    cluster of this host) from a listing of its WAL."""
    done = [
        r.as_dict() for r in engine.run(STEPS, cluster, RepositoryUrl.parse_optional(backup_repo))
    ]
    lines = ["| repository | cluster | timelines | segments | other files | requests |"]
    lines.append("|---|---|---|---|---|---|")
    for r in done:
        requests = ", ".join(f"{k} {n}" for k, n in sorted(r["requests"].items()))
        lines.append(
            f"| {r['repository']} | {r['stanza']} | {r['timelines']} | {r['segments']} | "
            f"{r['files']} | {requests} |"
        )
    create_markdown_artifact(
        "# Catalog index rebuilt\n\n" + "\n".join(lines) + "\n",
        key="reindex",
        description="the stanzas whose catalog index was rebuilt",
    )
    return done
