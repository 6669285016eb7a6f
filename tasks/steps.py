"""The ``Steps`` a flow hands to an engine operation: each step runs as its task (tasks are
registered by ``tasks._common.step_task``), a transaction as a Prefect transaction whose
rollback runs the steps' undo, and the schedule hooks as the schedule tasks."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from prefect.transactions import transaction

from pgpitr.errors import PitrError
from pgpitr.steps import Steps
from tasks import schedules
from tasks._common import TASKS


class TaskSteps(Steps):
    """Runs each step as its task, and transactions as Prefect transactions."""

    def __call__(self, step: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            wrapped = TASKS[step]
        except KeyError:
            raise PitrError(
                f"the engine step {step.__module__}.{step.__qualname__} has no Prefect task",
                hint="wrap it with tasks._common.step_task in its tasks module",
            ) from None
        return wrapped(*args, **kwargs)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        with transaction():
            yield

    def sync_schedules(self, cluster: str) -> list[str]:
        return schedules.sync_schedules(cluster)

    def remove_schedules(self, cluster: str) -> list[str]:
        return schedules.remove_schedules(cluster)


#: What flows hand to the engine's operations.
STEPS = TaskSteps()
