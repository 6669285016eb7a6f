"""Prefect events an automation can act on: a backup finished or failed, WAL archiving lags, a
drill passed, failed or was unchecked, the archive lag exceeds the policy's rpo.max, a cluster
is unprotected.

Every event's resource is the cluster on its host, ``pgpitr.cluster.HOST.NAME`` (labels
``pgpitr.host`` and ``pgpitr.cluster``), so one automation can match all clusters
(``pgpitr.cluster.*``), one host's (``pgpitr.cluster.db1.*``) or one.  Payloads carry names,
sizes and reasons, never a secret.
"""

from __future__ import annotations

from typing import Any

from prefect.events import emit_event

from pgpitr.errors import PitrError
from pgpitr.manifest import BackupManifest
from pgpitr.monitor import ArchiverStatus
from pgpitr.operations.drill import DrillResult
from pgpitr.protection import Protection
from tasks._common import logger
from tasks.naming import qualified, schedule_slug, this_host

BACKUP_COMPLETED = "pgpitr.backup.completed"
BACKUP_FAILED = "pgpitr.backup.failed"
ARCHIVING_BEHIND = "pgpitr.wal.archiving-behind"
DRILL_PASSED = "pgpitr.drill.passed"
DRILL_FAILED = "pgpitr.drill.failed"
#: restored and pg_amcheck content, but no heartbeat before the target to check the restore by
DRILL_UNCHECKED = "pgpitr.drill.unchecked"
RPO_EXCEEDED = "pgpitr.rpo.exceeded"
STREAM_RETAINED = "pgpitr.stream.retained"
CLUSTER_UNPROTECTED = "pgpitr.cluster.unprotected"


def resource(cluster: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"pgpitr.cluster.{qualified(cluster)}",
        "prefect.resource.name": schedule_slug(cluster),
        "pgpitr.cluster": cluster,
        "pgpitr.host": this_host(),
    }


def _emit(event: str, cluster: str, payload: dict[str, Any]) -> None:
    try:
        emit_event(event=event, resource=resource(cluster), payload=payload)
    except Exception as exc:  # an event is a notification: never fail the work for it
        logger().warning("event %s not emitted: %s", event, type(exc).__name__)


def backup_completed(cluster: str, manifest: BackupManifest) -> None:
    keys = ("name", "database_size", "stored_size", "duration_seconds", "stop_time", "expiration")
    shown = manifest.to_dict()
    _emit(BACKUP_COMPLETED, cluster, {key: shown.get(key) for key in keys})


def backup_failed(cluster: str, name: str, exc: BaseException) -> None:
    reason = exc.message if isinstance(exc, PitrError) else type(exc).__name__
    _emit(BACKUP_FAILED, cluster, {"name": name, "reason": reason})


def archiving_behind(status: ArchiverStatus) -> None:
    _emit(ARCHIVING_BEHIND, status.cluster, status.as_payload())


def drill_finished(result: DrillResult) -> None:
    keys = (
        "id",
        "target",
        "backup",
        "rto_seconds",
        "predicted_rto_seconds",
        "prediction_error_percent",
        "error",
        "scratch_removed",
    )
    shown = result.as_dict()
    payload = {key: shown.get(key) for key in keys}
    payload["heartbeat"] = result.heartbeat.get("status")
    payload["amcheck"] = result.amcheck.get("status")
    event = {"Passed": DRILL_PASSED, "Unchecked": DRILL_UNCHECKED}.get(result.result, DRILL_FAILED)
    _emit(event, result.cluster, payload)


def drill_crashed(cluster: str, exc: BaseException) -> None:
    """A drill that could not run to its end (no window, a step failed for good)."""
    reason = exc.message if isinstance(exc, PitrError) else type(exc).__name__
    _emit(DRILL_FAILED, cluster, {"error": reason})


def rpo_exceeded(cluster: str, lag_seconds: float, limit_seconds: float) -> None:
    _emit(
        RPO_EXCEEDED,
        cluster,
        {"archive_lag_seconds": lag_seconds, "rpo_max_seconds": limit_seconds},
    )


def stream_retained(cluster: str, retained: int, limit: int) -> None:
    """The streaming slot holds back more WAL than stream.maxRetained (the receiver is not
    keeping up or not running): the source's disk fills while nobody looks."""
    _emit(
        STREAM_RETAINED,
        cluster,
        {"retained_bytes": retained, "max_retained_bytes": limit, "slot": "pgpitr_walstream"},
    )


def cluster_unprotected(protection: Protection) -> None:
    """A cluster stopped or not archiving (pgpitr/protection.py): since when, and why."""
    fields = protection.as_fields()
    _emit(
        CLUSTER_UNPROTECTED,
        protection.cluster,
        {"since": fields["unprotected_since"], "reason": protection.reason},
    )
