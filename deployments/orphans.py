"""Runs nobody executes any more end as Crashed: in the Prefect UI, the API and ``describe``.

A run's process dies with its agent: ``pgpitr agent stop``, a kill -9, a crash of the host.
Prefect's server does not notice by itself; the run stays Running for ever, holds its
cluster's slot in the UI, and hides that the work was not done.  Two ways out, for the two ways
an agent ends:

- **Stopped** (``agent stop``, SIGTERM): the agent knows at once.  Once its serving process
  and the runs it started have ended, it marks every run of this host's deployments still
  Pending, Running or Cancelling as Crashed (``crash_orphaned_runs``): only this host's agent
  executes them (deployments/agent.py), so none of them runs anywhere else.
- **Killed** (kill -9, the machine gone): nothing of it is left to say so.  Every pgpitr flow
  run sends Prefect's heartbeat event every ``HEARTBEAT_SECONDS`` (its engine does, in the
  run's own process: a run whose process outlived its agent is not an orphan), and the
  automation ``pgpitr: crash runs without a heartbeat`` (``ensure_crash_automation``, made when
  serving starts) marks a run Crashed when ``CRASH_AFTER`` passes after it went Pending or
  Running, or after its last heartbeat, with neither a heartbeat nor an end.  An agent's run's
  engine sets the frequency from ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, which
  ``heartbeat_environment`` puts in the agent's process (at Prefect's default of 180 s a run
  alive would be taken for an orphan); a run the CLI runs in its own process beats from a
  thread of ours instead (``Heartbeat``), which ends with the run.

``CRASH_AFTER`` is HEARTBEAT_SECONDS (Prefect's minimum, 30) plus a margin for a late event on a
loaded host, so an orphan is marked Crashed within a minute of its agent's death: at most
CRASH_AFTER after its last heartbeat, and the server looks every 5 s.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prefect.automations import Automation

HEARTBEAT_SECONDS = 30
#: The tag of every pgpitr run, served or run by the CLI: the automation watches these runs only
TAG = "pgpitr"
CRASH_AFTER = timedelta(seconds=45)
AUTOMATION = "pgpitr: crash runs without a heartbeat"
#: the states of a run that is not over
_UNFINISHED = ("PENDING", "RUNNING", "CANCELLING")


def heartbeat_environment() -> None:
    """Have this process's flow runs (and the runs its runner starts) send a heartbeat every
    HEARTBEAT_SECONDS; set before Prefect reads its settings."""
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)


class Heartbeat:
    """The heartbeat of a flow run the CLI runs in its own process, sent from a thread of ours.

    Prefect's engine beats from a thread that sleeps in whole seconds and is joined when the
    run ends: a command waited up to a second (half on average) after its work was done.  This
    thread waits on an event, so it ends the moment the run returns.  The event is Prefect's
    own (``prefect.flow-run.heartbeat``, about the run, related to its flow and tags), so the
    crash automation reads it as it reads the engine's: a run whose command was killed ends
    Crashed as an agent's run does.  ``hook`` is the run's ``on_running`` hook; the CLI's runs
    start no subflow in its process, which would need beats of their own."""

    def __init__(self) -> None:
        import threading

        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def hook(self, flow: Any, flow_run: Any, state: Any) -> None:
        import contextvars
        import threading

        from prefect import __version__
        from prefect.events import emit_event

        if self._thread is not None:  # a retry's Running again: the thread beats already
            return
        resource = {
            "prefect.resource.id": f"prefect.flow-run.{flow_run.id}",
            "prefect.resource.name": flow_run.name or "",
            "prefect.version": __version__,
        }
        related = [
            {
                "prefect.resource.id": f"prefect.flow.{flow_run.flow_id}",
                "prefect.resource.role": "flow",
                "prefect.resource.name": flow.name,
            },
            *(
                {"prefect.resource.id": f"prefect.tag.{tag}", "prefect.resource.role": "tag"}
                for tag in sorted(set(flow_run.tags or ()))
            ),
        ]

        def beat() -> None:
            # never a beat once the run ended: the automation would wait for a next one, and
            # mark the finished run Crashed
            while not self._stopped.is_set():
                emit_event(event="prefect.flow-run.heartbeat", resource=resource, related=related)
                self._stopped.wait(HEARTBEAT_SECONDS)

        # the run's context (its settings: the API it reports to) in the thread too
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(beat,), daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def crash_automation() -> Automation:
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture

    return Automation(
        name=AUTOMATION,
        description="A pgpitr flow run whose process ended without a word (its agent was "
        "killed, its host went down) is marked Crashed.",
        trigger=EventTrigger(
            # Pending and Running too: the server says those itself, where a process killed in
            # its first second may never have sent its first heartbeat
            after={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Pending",
                "prefect.flow-run.Running",
            },
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Running",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={
                "prefect.resource.role": "tag",
                "prefect.resource.id": f"prefect.tag.{TAG}",
            },
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=CRASH_AFTER,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {int(CRASH_AFTER.total_seconds())} s: the process "
                "that ran it ended (its agent was killed, or its host went down)",
            )
        ],
    )


def ensure_crash_automation() -> bool:
    """Create the automation, or replace one of its name that differs (an older pgpitr's);
    True when made."""
    from prefect.automations import Automation

    wanted = crash_automation()
    try:
        found = Automation.read(name=AUTOMATION)
    except ValueError:  # Prefect's "no automation with that name"
        found = None
    if found is not None:
        if _shape(found) == _shape(wanted):
            return False
        found.delete()
    wanted.create()
    return True


def _shape(automation: Automation) -> tuple[object, object]:
    """What an automation does, without the ids the server gives.  The trigger's sets (after,
    expect, for_each) come out as lists in each process's own hash order: sorted here, else
    every agent would find the one made by another different, and make it again."""
    trigger = _sorted_lists(automation.trigger.model_dump(mode="json", exclude={"id"}))
    return trigger, [action.model_dump(mode="json") for action in automation.actions]


def _sorted_lists(value: object) -> object:
    if isinstance(value, dict):
        return {key: _sorted_lists(item) for key, item in value.items()}
    if isinstance(value, list):
        return sorted((_sorted_lists(item) for item in value), key=repr)
    return value


def crash_orphaned_runs(host: str) -> list[str]:
    """Mark Crashed the unfinished runs of HOST's deployments (its agent stopped, so nothing
    runs them); their names."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.states import Crashed

    from tasks.naming import deployment_name

    runs_filter = FlowRunFilter(
        state=FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType(s) for s in _UNFINISHED])
        )
    )
    crashed = []
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            flow_run_filter=runs_filter,
            deployment_filter=DeploymentFilter(
                name=DeploymentFilterName(any_=[deployment_name(host)])
            ),
        )
        for run in runs:
            client.set_flow_run_state(
                run.id,
                Crashed(message=f"the agent of host {host} stopped while this run was unfinished"),
                force=True,
            )
            crashed.append(run.name)
    return crashed
