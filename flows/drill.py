"""The ``drill`` flow: restore a random point of a cluster's window into a scratch cluster, check
it, time it, remove it (pgpitr/operations/drill/); a readable report as an artifact, an event,
and a failed run when the drill fails."""

from __future__ import annotations

from datetime import datetime

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from pgpitr import timeparse
from pgpitr.operations import drill as dr
from tasks import events
from tasks._common import cluster_artifact_key
from tasks._slots import cluster_slot
from tasks.naming import run_name
from tasks.results import PERSISTED
from tasks.steps import STEPS


@flow(name="drill", flow_run_name=run_name("drill-{host}/{cluster}"), **PERSISTED)
def drill(cluster: str, at: str = "random") -> dr.DrillResult:
    """Drill CLUSTER: restore AT (a time inside the recoverable window, or random) into a scratch
    cluster, check the heartbeat rows and pg_amcheck, time each phase (the RTO), record the
    result in the repository, remove the scratch cluster.  A failed drill fails the run; an
    unchecked one (no heartbeat before the target to check against) completes, reported as
    Unchecked: the archive restored, but nothing proved the restore stopped in the right place."""
    request = dr.DrillRequest.parse(cluster, at)
    try:
        # one drill per cluster at a time; a second one is refused rather than queued
        with cluster_slot("drill", cluster, wait=False):
            result = dr.run(STEPS, request)
    except Exception as exc:
        events.drill_crashed(cluster, exc)
        raise
    create_markdown_artifact(
        report(result),
        key=cluster_artifact_key("drill", cluster),
        description=f"drill of {cluster}: {result.result}",
    )
    events.drill_finished(result)
    if not result.passed:
        raise dr.DrillFailed(
            result.summary(),
            hint=f"see the drill report (Prefect UI, Artifacts: drill-…-{cluster}) and "
            f"`pgpitr cluster list-drill {cluster}`",
        )
    return result


def report(result: dr.DrillResult) -> str:
    """The drill as a person reads it: verdict, target, RTO and its prediction, each check."""

    def seconds(value: float | None) -> str:
        return f"{value:.1f} s" if value is not None else "—"

    target = timeparse.format_kbcli(datetime.fromisoformat(result.target))
    lines = [
        f"# Drill of {result.cluster}: **{result.result}**",
        "",
        f"- drill {result.id}, started {result.started}, finished {result.finished}",
        f"- target {target}, backup {result.backup or '—'}, scratch cluster {result.scratch} "
        f"({'removed' if result.scratch_removed else '**NOT removed**'})",
    ]
    if result.error:
        lines.append(f"- **why it failed**: {result.error}")
    elif result.result == "Unchecked":
        lines.append(
            "- **unchecked**: no heartbeat row at or before the target, so nothing proves the "
            "restore stopped at it; it is not counted as a passed drill (nor by the RTO model)"
        )
    predicted = result.predicted_rto_seconds
    lines += [
        "",
        "| RTO measured | predicted | error |",
        "|---|---|---|",
        f"| {seconds(result.rto_seconds)} | "
        f"{seconds(predicted) if predicted is not None else 'no drill before this one'} | "
        + (
            f"{result.prediction_error_percent:+.0f} % |"
            if result.prediction_error_percent is not None
            else "— |"
        ),
        "",
        "| phase | seconds |",
        "|---|---|",
    ]
    lines += [f"| {phase} | {value:.2f} |" for phase, value in result.phases.items()]
    for name, check in (("heartbeat", result.heartbeat), ("pg_amcheck", result.amcheck)):
        if check:
            lines.append(f"\n**{name}**: {check['status']}: {check['detail']}")
    if result.materialised_bytes is not None:
        lines.append(
            f"\nvolumes: {result.materialised_bytes} bytes of data materialised, "
            f"{result.replayed_bytes} bytes of WAL replayed"
        )
    return "\n".join(lines) + "\n"
