"""Reading back from the Prefect API what the flows recorded: runs, task runs, logs, artifacts,
events."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterName,
    LogFilter,
    LogFilterFlowRunId,
)


def flow_runs(*names: str) -> list[Any]:
    """Every flow run (or those with these names), however many the session has made."""
    found: list[Any] = []
    flt = FlowRunFilter(name=FlowRunFilterName(any_=list(names))) if names else None
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_flow_runs(flow_run_filter=flt, limit=200, offset=len(found))
            found += page
            if len(page) < 200:
                return found


def task_runs(flow_run_id: Any) -> list[Any]:
    with get_client(sync_client=True) as client:
        return client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])), limit=200
        )


def task_run(flow_run_id: Any, task_name: str) -> Any:
    (found,) = [t for t in task_runs(flow_run_id) if t.name.startswith(f"{task_name}-")]
    return found


def logs(flow_run_id: Any = None) -> list[str]:
    """Every log message (of one flow run, or of all), oldest first."""
    messages: list[str] = []
    flt = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])) if flow_run_id else None
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_logs(log_filter=flt, limit=200, offset=len(messages))
            messages += [log.message for log in page]
            if len(page) < 200:
                return messages


def explain(run: Any, lines: int = 40) -> str:
    """A run that did not end as expected: its state and the last lines of its log."""
    tail = "\n".join(logs(run.id)[-lines:])
    return f"{run.name}: {run.state.type.value} {run.state.message or ''}\n{tail}"


def artifacts(key: str, flow_run: Any = None) -> list[Any]:
    """The artifacts of ``key``, newest first (their ids are random, so by creation), those of
    flow run id ``flow_run`` only if given: another module of the session may use the key."""
    from prefect.client.schemas.sorting import ArtifactSort

    flt = ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
    if flow_run is not None:
        flt.flow_run_id = ArtifactFilterFlowRunId(any_=[flow_run])
    with get_client(sync_client=True) as client:
        return client.read_artifacts(artifact_filter=flt, sort=ArtifactSort.CREATED_DESC, limit=50)


def events(prefix: str, resource: str | None = None, timeout: float = 15) -> list[dict[str, Any]]:
    """Events whose name starts with ``prefix``, about ``resource`` if given (other tests of the
    session raise the same events); they arrive asynchronously: wait for one."""
    deadline = time.monotonic() + timeout
    flt: dict[str, Any] = {"event": {"prefix": [prefix]}}
    if resource is not None:
        flt["resource"] = {"id": [resource]}
    with get_client(sync_client=True) as client:
        while True:
            response = client.request("POST", "/events/filter", json={"filter": flt, "limit": 50})
            found = response.json()["events"]
            if found or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 1.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def stored_result(flow_run: Any) -> tuple[str, bytes, Any]:
    """What FLOW_RUN's final state keeps in result storage (the harness's local storage: the
    agent and the CLI share PREFECT_HOME): the serializer its state names, the stored file's
    bytes (a flow's result file holds the serializer's output alone), those bytes as JSON."""
    import json
    from pathlib import Path

    from prefect.results import ResultRecordMetadata
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH

    metadata = flow_run.state.data
    assert isinstance(metadata, ResultRecordMetadata), metadata
    assert metadata.storage_block_id is None, "not the harness's local result storage"
    path = Path(metadata.storage_key)
    if not path.is_absolute():
        path = Path(PREFECT_LOCAL_STORAGE_PATH.value()) / path
    blob = path.read_bytes()
    return metadata.serializer.type, blob, json.loads(blob)


def fire_minutely_schedules(*deployment_ids: Any) -> None:
    """Have the server place, on each deployment, the run its `* * * * *` schedules owe for the
    minute just gone (Prefect's own scheduling call, a backfill of one minute boundary), rather
    than wait up to a minute of wall clock for the next one.

    Only early in a minute: the run the schedule makes at the next boundary is then 30 s or more
    away, time for the backfilled one to end before it (two backups of a cluster at once, one is
    refused); later in a minute, that next run is near and none is made here.  Never at a minute
    where one of the deployments' other schedules (other clusters' policies: a daily drill at
    03:MM, a weekly backup at 18:MM) fires: they must not fire here."""
    from croniter import croniter

    now = datetime.now(UTC)
    if now.second >= 30:
        return
    minute = now.replace(second=0, microsecond=0)
    with get_client(sync_client=True) as client:
        others = [
            schedule.schedule
            for deployment_id in deployment_ids
            for schedule in client.read_deployment(deployment_id).schedules
            if getattr(schedule.schedule, "cron", "* * * * *") != "* * * * *"
        ]

        def fires(at: datetime) -> bool:
            return any(
                croniter.match(s.cron, at.astimezone(ZoneInfo(s.timezone or "UTC"))) for s in others
            )

        for _ in range(60):  # bounded: another every-minute schedule fires at every minute
            if not fires(minute):
                break
            minute -= timedelta(minutes=1)
        window = {"start_time": minute.isoformat(), "end_time": minute.isoformat()}
        for deployment_id in deployment_ids:
            client.request("POST", f"/deployments/{deployment_id}/schedule", json=window)
