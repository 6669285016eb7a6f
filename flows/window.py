"""The ``refresh-recoverable-window`` flow: what a cluster can be restored to, and whether WAL
archiving keeps up (an event tells an automation when it does not)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pgpitr import timeparse
from pgpitr.operations import describe as w
from tasks import events
from tasks._common import cluster_artifact_key
from tasks.naming import run_name
from tasks.results import PERSISTED
from tasks.steps import STEPS


@flow(
    name="refresh-recoverable-window",
    flow_run_name=run_name("refresh-recoverable-window-{host}/{cluster}"),
    **PERSISTED,
)
def refresh_recoverable_window(cluster: str) -> dict[str, Any]:
    """Publish CLUSTER's recoverable window; with log backup on, check the archiver."""
    report = w.run(STEPS, cluster)
    if report.archiver is not None and report.archiver.behind:
        events.archiving_behind(report.archiver)
    if report.rpo_exceeded:
        assert report.archive_lag_seconds is not None and report.rpo_max_seconds is not None
        events.rpo_exceeded(cluster, report.archive_lag_seconds, report.rpo_max_seconds)
    shown = report.as_dict()
    create_markdown_artifact(
        _markdown(cluster, shown, shown["archiver"]),
        key=cluster_artifact_key("recoverable-window", cluster),
        description=f"recoverable window of {cluster}",
    )
    return shown


def _markdown(cluster: str, window: dict[str, Any], archiver: dict[str, Any] | None) -> str:
    def when(text: str) -> str:
        return timeparse.format_kbcli(datetime.fromisoformat(text))

    lines = [f"# Recoverable window of {cluster}", ""]
    if window["window"]:
        lines += [
            "- " + timeparse.format_window(datetime.fromisoformat(a), datetime.fromisoformat(b))
            for a, b in window["window"]
        ]
    else:
        lines.append("- none yet: take a backup with log backup on, then commit something")
    lines += ["", "| backup | from | to |", "|---|---|---|"]
    lines += [
        f"| {r['backup']} | {when(r['start'])} | {when(r['end'])} |" for r in window["ranges"]
    ]
    if archiver is not None:
        state = "**behind**" if archiver["behind"] else "keeps up"
        lines += ["", f"WAL archiving {state}: {archiver['reason']}"]
    if window.get("archive_lag_seconds") is not None:
        over = "**more than**" if window["rpo_exceeded"] else "within"
        lines += [
            "",
            f"Archive lag (RPO) {window['archive_lag_seconds']:.0f} s, {over} rpo.max "
            f"({window['rpo_max_seconds']:.0f} s)",
        ]
    return "\n".join(lines) + "\n"
