"""How the CLI runs a flow, and reads the schedules the deployments really have.

A command that changes something runs its flow:

- here, in this process, against the Prefect API: PREFECT_API_URL, the active Prefect profile's,
  or pgpitr's local server on 127.0.0.1:4200 (PGPITR_PREFECT_PORT), started by the first command
  that needs it and kept for the next ones (deployments/localserver.py);
- or, with ``--wait``/``--no-wait``, through ``run_deployment`` on the served deployment
  ``FLOW/pgpitr-HOST`` (PGPITR_DEPLOYMENT names another), so that the run happens where the
  schedules run; ``--no-wait`` returns as soon as the run is queued, ``--wait`` waits for it
  within bounds (pgpitr/waits.py).

Prefect's own console logging is silenced (the runs' logs still go to the API); an engine error
raised inside the flow reaches the user as the original PitrError, with its message and exit code.

Reading the schedules (``list-backup-policy``, ``describe``) never imports Prefect nor starts a
flow: HTTP requests to the API (the deployment, its runs: deployments/health.py), and the saved
policy when no API answers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from cli import console
from deployments import orphans
from deployments.api import LOCAL_SERVER, answers, api_url, ensure_api_url, ui_url
from flows import registry
from pgpitr import waits
from pgpitr.errors import PitrError
from pgpitr.postgres.cluster import Cluster
from tasks.naming import deployment_name, schedule_slug, this_host

__all__ = ["LOCAL_SERVER", "NO_RESULT", "answers", "api_url", "run", "schedule_fields"]

#: What ``run`` returns when the flow's result is not here (queued with --no-wait, or kept in
#: another machine's result storage); the command then has nothing more to print.
NO_RESULT: Any = type("NoResult", (), {"__repr__": lambda self: "NO_RESULT"})()


# -- running a flow ----------------------------------------------------------------------------


def run(
    flow_name: str,
    wait: bool | None,
    /,
    *,
    progress: str | None = None,
    environment: Mapping[str, str] | None = None,
    **parameters: Any,
) -> Any:
    """Run the flow FLOW_NAME (flows/registry.py) with ``parameters``; return its result.

    ``wait`` None runs it here; True/False go through the deployment, of the host named by
    the ``host`` parameter (taken out of the flow's parameters) or this one's.  ``environment``
    is set for an in-process run only (how a secret reaches a flow without being a parameter)."""
    host = parameters.pop("host", None)
    prepare()
    if wait is None:
        return _run_here(flow_name, parameters, progress, environment)
    if environment:
        raise PitrError(
            "this command passes a secret to its flow through the environment, which a "
            "deployment's run does not share",
            hint="run it without --wait/--no-wait",
        )
    return _run_deployment(flow_name, parameters, wait, host)


def prepare() -> None:
    """Point Prefect at the API and quiet its console; call before importing a flow module."""
    # Set before Prefect is imported: its logging reads these once.  The runs' logs still go to
    # the API; only Prefect's console chatter (and tracebacks of engine errors) is silenced.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_INTERNAL_LOGGING_LEVEL", "CRITICAL")  # its internals
    # Its background workers report their exit-time drain on loggers of their own names.
    for name in ("EventsWorker", "APILogWorker"):
        logging.getLogger(name).setLevel(logging.ERROR)
    url, started = ensure_api_url()
    os.environ["PREFECT_API_URL"] = url
    if "prefect.logging.configuration" in sys.modules:
        # this process imported Prefect already (a caller's own, the suite's warm start), which
        # read its settings and its logging then: have it read them again
        from prefect.context import refresh_global_settings_context
        from prefect.logging.configuration import setup_logging

        refresh_global_settings_context()
        setup_logging()
    if started:
        console.info(
            f"note: started the local Prefect server {url.removesuffix('/api')} "
            "(it keeps running for the next commands; `pgpitr server stop` stops it)"
        )


def _run_here(
    flow_name: str,
    parameters: dict[str, Any],
    label: str | None,
    environment: Mapping[str, str] | None,
) -> Any:
    from prefect import tags

    flow = registry.load(flow_name)
    heartbeat = orphans.Heartbeat()
    # tagged as the agents' runs are, so that the crash automation watches this one too; it
    # beats from our thread (orphans.Heartbeat), the engine's own thread off
    with (
        _environment(environment or {}),
        _progress_bar(label),
        tags(orphans.TAG, f"host:{this_host()}"),
        _engine_heartbeat_off(),
    ):
        try:
            return flow.with_options(on_running=[*flow.on_running_hooks, heartbeat.hook])(
                **parameters
            )
        except PitrError:
            raise
        except Exception as exc:  # not the engine's: one line, and where the run's log is
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise PitrError(
                f"the {flow.name} flow failed: {type(exc).__name__}: {first}",
                hint=f"see the flow run's log in the Prefect UI ({ui_url('runs')})",
            ) from exc
        finally:
            heartbeat.stop()


@contextlib.contextmanager
def _engine_heartbeat_off() -> Iterator[None]:
    """No heartbeat thread of the engine's for this run (orphans.Heartbeat beats instead): the
    current settings changed in place and put back.  A settings context of its own
    (``temporary_settings``) would give the run log and event workers of their own, which
    nothing drains before the process exits, by when the API may be gone: in the suite's
    in-process runs, a minute of retries at exit."""
    from prefect.settings import get_current_settings

    flows = get_current_settings().flows
    before = flows.heartbeat_frequency
    flows.heartbeat_frequency = None
    try:
        yield
    finally:
        flows.heartbeat_frequency = before


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def _progress_bar(label: str | None) -> Iterator[None]:
    if label is None:
        yield
        return
    from cli import progress
    from tasks._common import add_listener

    with progress.bytes_bar(label) as update:
        remove = add_listener(update)
        try:
            yield
        finally:
            remove()


def _run_deployment(
    flow_name: str, parameters: dict[str, Any], wait: bool, host: str | None = None
) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    if registry.entry(flow_name).kubernetes:
        registry.require_kubernetes()
    target = f"{flow_name}/{deployment_name(host)}"
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(target)
        except ObjectNotFound:
            raise PitrError(
                f"no deployment {target} in the Prefect API at {api_url()}",
                hint=f"start the agent of host {host or this_host()} (`pgpitr agent start` "
                "there), or run the command without --wait/--no-wait to run the flow here",
            ) from None
    # a work pool's deployment is shared by the hosts (PGPITR_DEPLOYMENT, prefect.yaml): the run
    # goes to the queue of the cluster's host, which that host's worker polls
    queue = (host or this_host()) if deployment.work_pool_name else None
    status = getattr(deployment, "status", None)
    if queue is None and getattr(status, "value", status) == "NOT_READY":
        start = f" (--wait: up to {waits.shown(waits.RUN_START.seconds())})" if wait else ""
        console.info(f"note: no agent serves {target} right now; the run waits for one{start}")
    # read before the run is queued: a bad setting fails before anything is started
    bounds = (waits.RUN_START.seconds(), waits.RUN_END.seconds()) if wait else None
    flow_run = run_deployment(
        target, parameters=parameters, timeout=0, poll_interval=1, work_queue_name=queue
    )
    link = ui_url(f"runs/flow-run/{flow_run.id}")
    if bounds is None:
        where = f"{target}, work queue {queue}" if queue else target
        console.info(f"flow run {flow_run.name} queued on {where}: {link}")
        return NO_RESULT
    state = _await_run(flow_run, target, host, link, *bounds)
    return _result(state, flow_run.name, link)


def _await_run(flow_run: Any, target: str, host: str | None, link: str, start: float, end: float):
    """The run's final state, polled once a second; bounded twice.  A run no agent has started
    after ``start`` seconds is cancelled (a queued delete-backup or restore that fires whenever
    an agent comes back, long after its command gave up, would surprise everyone); a started
    run still going after ``end`` seconds is left to finish, and the error says where to
    watch it."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    began = time.monotonic()
    started = False
    with get_client(sync_client=True) as client:
        while True:
            state = client.read_flow_run(flow_run.id).state
            if state is not None and state.is_final():
                return state
            waited = time.monotonic() - began
            # once an agent took it, it stays started: a retry waits Scheduled (AwaitingRetry)
            started = started or (
                state is not None and not (state.is_scheduled() and state.name != "AwaitingRetry")
            )
            if not started and waited >= start:
                client.set_flow_run_state(flow_run.id, Cancelled(message="--wait gave up"))
                raise PitrError(
                    f"flow run {flow_run.name} on {target} was not started by any agent within "
                    f"{waits.shown(start)} ({state.name if state else 'no state'}): it is "
                    "cancelled, so it will not start later",
                    hint=f"start the agent of host {host or this_host()} (`pgpitr agent start` "
                    f"there) and run the command again; {waits.RUN_START.env} sets this wait",
                )
            if waited >= end:
                raise PitrError(
                    f"flow run {flow_run.name} on {target} is still {state.name if state else '?'} "
                    f"after {waits.shown(end)}: the command stops waiting, the run goes on",
                    hint=f"watch it at {link}; {waits.RUN_END.env} sets this wait",
                )
            time.sleep(1)  # the API's next answer is the condition polled, not this delay


def _result(state: Any, run_name: str, link: str) -> Any:
    """The run's result; for a failed run, the exception it raised, as it was raised: an engine
    error keeps its type, message, hint and exit code.  Both are read from result storage as
    pgpitr's JSON (tasks/results.py), never unpickled: a record of another serializer is not
    loaded."""
    from tasks.results import RefusedType, read_stored

    if state is None:
        raise PitrError(f"flow run {run_name} has no state", hint=link)
    if state.is_completed():
        if state.data is None:  # a flow that keeps no result
            console.info(f"flow run {run_name} completed: {link}")
            return NO_RESULT
        try:
            return read_stored(state.data)
        except RefusedType as exc:  # never loaded: the operation itself completed
            console.info(f"flow run {run_name} completed; its result is not read: {exc.message}")
            return NO_RESULT
        except Exception:  # a result kept elsewhere (another machine's storage): say where
            console.info(f"flow run {run_name} completed: {link}")
            return NO_RESULT
    try:
        error = read_stored(state.data)
    except Exception:  # not persisted, not pgpitr's, or not readable here: the state's message
        error = None
    if isinstance(error, PitrError) and not getattr(error, "raised_as", None):
        raise error
    # not the engine's (kept as a PitrError naming its type), or not read: one line and the link
    text = error.message if isinstance(error, PitrError) else None
    message = (text or getattr(state, "message", None) or "no message").strip()
    first = (message.splitlines() or [""])[0][:300]
    raise PitrError(f"flow run {run_name} {state.name}: {first}", hint=link)


# -- what the deployments really have ----------------------------------------------------------


_explained: set[str] = set()


def _note(text: str) -> None:
    if text not in _explained:
        _explained.add(text)
        console.info(text)


def schedule_fields(cluster: str, policy: Any) -> dict[str, Any]:
    """The backup schedule of ``cluster`` as its host's deployment has it, in describe's fields,
    with its health (is an agent serving it, next/last/late runs); the saved policy's when the
    deployment cannot be read.  Warnings go to stderr.  HTTP to the API only: no flow."""
    from deployments.health import deployment_health

    host = Cluster.get(cluster).state.host
    health = deployment_health("backup", host)
    deployment, why = health.deployment, health.why
    schedule = None
    if deployment is not None:
        slug = schedule_slug(cluster, host)
        schedule = next((s for s in deployment["schedules"] if s.get("slug") == slug), None)
        if schedule is None:
            why = f"{health.target} has no schedule for {slug}"
    fields = host_fields(cluster, host)
    if schedule is None or "cron" not in schedule.get("schedule", {}):
        _note(f"note: backup schedule from the saved policy: {why}")
        fields.update(
            auto_backup=policy.datafile_enabled,
            backup_schedule=policy.cron,
            schedule_timezone=policy.timezone,
            schedule_source=f"saved policy ({why})",
        )
    else:
        fields.update(
            auto_backup=bool(schedule["active"]) and not deployment.get("paused", False),
            backup_schedule=schedule["schedule"]["cron"],
            schedule_timezone=schedule["schedule"].get("timezone") or "UTC",
            schedule_source=f"deployment {health.target}",
        )
        saved = (policy.datafile_enabled, policy.cron, policy.timezone)
        deployed = (fields["auto_backup"], fields["backup_schedule"], fields["schedule_timezone"])
        if saved != deployed:
            _note(
                f"warning: the saved policy of {cluster} ({_shown(saved)}) and {health.target} "
                f"({_shown(deployed)}) disagree: restart the agent of host {host} "
                "(`pgpitr agent stop; pgpitr agent start`), which rebuilds the schedules from "
                "the policies, or set the policy again with `edit-backup-policy`"
            )
    fields["schedule_warning"] = _warning(cluster, host, fields, health)
    if fields["schedule_warning"]:
        _note(f"warning: {fields['schedule_warning']}")
    return fields


def host_fields(cluster: str, host: str) -> dict[str, Any]:
    """Whether an agent serves HOST (the cluster's), and the cluster's runs there: next, last
    and Late (a cluster of another host's too: what a fleet's hosts see of each other)."""
    from deployments.health import deployment_health, runs_health

    health = deployment_health("backup", host)
    runs = runs_health(health, cluster)
    served = "unknown" if health.deployment is None else "none"
    return {
        "host": host,
        "agent": "serving" if health.served else served,
        "agent_last_polled": health.last_polled,
        "agent_unknown_why": health.why or None,  # why the API could not tell
        "next_run": runs.next_run,
        "last_run": runs.last_run,
        "last_run_state": runs.last_state,
        "late_runs": runs.late,
    }


def _shown(schedule: tuple[bool, str, str]) -> str:
    enabled, cron, timezone = schedule
    return f"{'enabled' if enabled else 'disabled'}, {cron} {timezone}"


def _warning(cluster: str, host: str, fields: dict[str, Any], health: Any) -> str | None:
    if not fields["auto_backup"]:
        return None
    if fields["agent"] == "unknown" and health.why.startswith("no Prefect API"):
        # no server, so no scheduler and no agent: nothing fires (the saved policy is shown)
        return (
            f"scheduled backups of {cluster} will not run: {health.why} — start pgpitr's "
            "local Prefect server and this host's agent with `pgpitr agent start`"
        )
    if fields["agent"] == "unknown" and health.why.startswith("the Prefect API"):
        return (
            f"scheduled backups of {cluster} will not run while {health.why} — check that "
            "server, or PREFECT_API_URL (`prefect config view`)"
        )
    if fields["agent"] != "serving":
        polled = f", last polled {health.last_polled}" if health.last_polled else ""
        late = f"; {fields['late_runs']} run(s) Late" if fields["late_runs"] else ""
        return (
            f"scheduled backups of {cluster} will not run: no agent serves host {host} "
            f"({health.target} {health.status or 'not deployed'}{polled}{late}) — start one "
            "with `pgpitr agent start`"
        )
    if fields["late_runs"]:
        return (
            f"{fields['late_runs']} scheduled run(s) of {cluster} are Late although an agent "
            f"serves host {host}: see {ui_url('runs')} and the agent's log (`pgpitr agent status`)"
        )
    return None


def health_lines(info: dict[str, Any]) -> list[str]:
    """describe's lines on the schedule's health."""
    agent = {
        "serving": f"served by the agent of host {info['host']}",
        "none": f"NOT served: no agent of host {info['host']} polls",
        "unknown": "not known (no deployment to ask)",
    }[info["agent"]]
    last = f"{info['last_run']} {info['last_run_state']}" if info["last_run"] else "none"
    return [
        f"Schedule: {agent}; next run {info['next_run'] or 'none'}; last run {last}; "
        f"late runs {info['late_runs']}"
    ]
