"""The ``Steps`` a flow hands to an engine operation: each step runs as its task, a transaction
as a Prefect transaction whose rollback runs the steps' undo, and the schedule hooks as the
schedule tasks.

A step's task is found in the tasks modules ``STEP_TASK_MODULES`` names (the tasks
``tasks._common.step_task`` made there), not in whatever modules happen to be imported: a flow
cannot lose a step's task because nothing imported its module, and tests/flows/test_step_tasks.py
checks that every step the engine's operations pass to ``steps(...)`` has its task here.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Any

from prefect.tasks import Task
from prefect.transactions import transaction

from pgpitr.errors import PitrError
from pgpitr.steps import Steps
from tasks import schedules

#: The tasks modules that wrap engine steps, by the engine package their steps come from: a
#: step's task is looked up in the modules of its package only, so that a backup does not import
#: the Kubernetes client (the optional extra) to find its tasks.
STEP_TASK_MODULES: dict[str, tuple[str, ...]] = {
    "pgpitr.kubernetes": ("tasks.kubernetes",),
    "pgpitr": (
        "tasks.backup",
        "tasks.clusters",
        "tasks.drill",
        "tasks.repository",
        "tasks.restore",
        "tasks.retention",
        "tasks.window",
    ),
}


def step_tasks(module: ModuleType) -> dict[Callable[..., Any], Task]:
    """The engine steps MODULE wraps as tasks, each with its task."""
    return {
        value.step: value
        for value in vars(module).values()
        if isinstance(value, Task) and getattr(value, "step", None) is not None
    }


def _package_of(step: Callable[..., Any]) -> str:
    module = step.__module__
    return max(
        (p for p in STEP_TASK_MODULES if module == p or module.startswith(p + ".")),
        key=len,
        default="",
    )


@functools.cache
def task_of(step: Callable[..., Any]) -> Task:
    """The task that runs STEP."""
    for name in STEP_TASK_MODULES.get(_package_of(step), ()):
        task = step_tasks(importlib.import_module(name)).get(step)
        if task is not None:
            return task
    raise PitrError(
        f"the engine step {step.__module__}.{step.__qualname__} has no Prefect task",
        hint="wrap it with tasks._common.step_task in a module of tasks.steps.STEP_TASK_MODULES",
    )


class TaskSteps(Steps):
    """Runs each step as its task, and transactions as Prefect transactions."""

    def __call__(self, step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        return task_of(step)(*args, **kwargs)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with transaction():
            yield

    def sync_schedules(self, cluster: str) -> list[str]:
        return schedules.sync_schedules(cluster)

    def remove_schedules(self, cluster: str) -> list[str]:
        return schedules.remove_schedules(cluster)

    def keep_on_member_hosts(self, spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        from tasks import member_hosts

        return member_hosts.keep_on_member_hosts(spec)

    def run_on_host(
        self,
        host: str,
        flow: str,
        parameters: dict[str, Any],
        *,
        needs: str,
        secrets: dict[str, str] | None = None,
    ) -> None:
        from tasks import member_hosts

        member_hosts.run_on_host(host, flow, parameters, needs=needs, secrets=secrets)

    def drop_on_member_hosts(self, cluster: str, hosts: list[str]) -> None:
        if hosts:
            from tasks import member_hosts

            member_hosts.drop_on_member_hosts(cluster, hosts)


#: What flows hand to the engine's operations.
STEPS = TaskSteps()
