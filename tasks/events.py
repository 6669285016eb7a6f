"""Prefect events an automation can act on: a backup finished or failed, WAL archiving lags.

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
from tasks._common import logger
from tasks.naming import qualified, schedule_slug, this_host

BACKUP_COMPLETED = "pgpitr.backup.completed"
BACKUP_FAILED = "pgpitr.backup.failed"
ARCHIVING_BEHIND = "pgpitr.wal.archiving-behind"


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
