"""What every pgpitr task shares: how an engine step becomes a task, the retry policy, the
engine's log in the run's log, byte progress as an artifact.

A task is an engine step (``pgpitr.*``) wrapped by ``step_task``; ``tasks.steps.STEPS`` is the
``pgpitr.steps.Steps`` a flow hands to an engine operation, so that the operation's order of
steps, written once in the engine, runs here with each step as its task (found in the tasks
modules ``tasks.steps.STEP_TASK_MODULES`` lists).

Only failures ``pgpitr.transient`` calls transient are retried (S3 5xx or throttling, a dropped
connection, PostgreSQL not ready yet), three times with exponential backoff (2, 4, 8 s); anything
else fails at once, because it would fail the same way again.  Prefect owns the retries: the S3
client retries a request once on its own, nothing else does.  Tasks never cache (they have side
effects) and never persist their results (a task's return value is an engine object that only
this run needs).
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.tasks import Task, exponential_backoff
from prefect.transactions import Transaction, get_transaction

from pgpitr.state import this_host
from pgpitr.steps import undo_of
from pgpitr.transient import is_transient

#: Base delay of the first retry in seconds; then 2x, 4x.
RETRY_BASE_DELAY = 2.0


def _retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result()
    except Exception as exc:  # the failure the state carries
        return is_transient(exc)
    return False


#: Options of a task whose step may meet a transient failure.
RETRYING: dict[str, Any] = {
    "retries": 3,
    "retry_delay_seconds": exponential_backoff(backoff_factor=RETRY_BASE_DELAY),
    "retry_jitter_factor": 0.2,
    "retry_condition_fn": _retry_if_transient,
    "cache_policy": NO_CACHE,
    "persist_result": False,
}
#: Options of a task that retrying cannot help (local files, a decision from given data).
ONCE: dict[str, Any] = {"cache_policy": NO_CACHE, "persist_result": False}


def logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except MissingContextError:  # called outside a run, e.g. from a unit test
        return logging.getLogger("pgpitr.tasks")


class _ToRunLog(logging.Handler):
    """The engine logs with the standard ``logging`` module (it imports no Prefect); inside a
    flow or task run, its records go to that run's log, in the UI."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            run_logger = get_run_logger()
        except MissingContextError:
            return
        except Exception:  # a log line is a view: never fail the work for it
            return
        run_logger.log(record.levelno, record.getMessage())


_engine_log = logging.getLogger("pgpitr")
if not any(isinstance(h, _ToRunLog) for h in _engine_log.handlers):
    _engine_log.addHandler(_ToRunLog())
    if _engine_log.level == logging.NOTSET or _engine_log.level > logging.INFO:
        _engine_log.setLevel(logging.INFO)


# -- engine steps as tasks ---------------------------------------------------------------------


def step_task(
    step: Callable[..., Any],
    name: str,
    *,
    progress: tuple[str, str] | None = None,
    **options: Any,
) -> Task:
    """The task of an engine step: the same call, with ``options`` (RETRYING or ONCE).

    ``progress`` = (KEY, PARAMETER) gives a step that takes a ``progress`` callback a progress
    artifact, keyed ``KEY-HOST-<the value of PARAMETER>`` (``backup-progress-db1-my-pg``).  A
    step marked ``@undone_by(fn)`` keeps its result in its transaction and is undone by
    ``fn(result)`` when the flow's transaction rolls back."""
    undo = undo_of(step)
    signature = inspect.signature(step)
    takes_progress = "progress" in signature.parameters

    @functools.wraps(step)
    def run(*args: Any, **kwargs: Any) -> Any:
        bar = None
        if progress and takes_progress:
            bound = signature.bind(*args, **kwargs)
            if bound.arguments.get("progress") is None:
                key, parameter = progress
                subject = str(bound.arguments[parameter])
                description = f"{name} {subject}: bytes moved"
                bar = ByteProgress(cluster_artifact_key(key, subject), description)
                bound.arguments["progress"] = bar
                args, kwargs = bound.args, bound.kwargs
        try:
            result = step(*args, **kwargs)
        except BaseException:
            if bar is not None:
                bar.stop()
            raise
        if bar is not None:
            bar.finish()
        if undo is not None:
            txn = get_transaction()
            if txn is not None:
                txn.set("undo", result)
        return result

    wrapped = task(run, name=name, **options)
    if undo is not None:

        def rollback(txn: Transaction) -> None:
            result = txn.get("undo", None)
            if result is not None:
                undo(result)

        wrapped.on_rollback(rollback)
    wrapped.step = step  # type: ignore[attr-defined]  # how tasks.steps finds the step's task
    return wrapped


def cluster_artifact_key(kind: str, cluster: str) -> str:
    """KIND-HOST-CLUSTER: a cluster's artifact, apart from a same-named one on another host."""
    return artifact_key(kind, this_host(), cluster)


def artifact_key(*parts: str) -> str:
    """Artifact keys allow lower-case letters, digits and dashes only."""
    text = "-".join(parts).lower()
    return "".join(c if c.isalnum() or c == "-" else "-" for c in text)


#: ByteProgress: the end of its reporter thread, and how long its last update may take
_DONE = -1.0
_REPORTER_GRACE = 30.0

# Whoever runs a flow in this process (the CLI's progress bar) may listen to the bytes moved.
_listeners: list[Callable[[int, int], None]] = []


def add_listener(listener: Callable[[int, int], None]) -> Callable[[], None]:
    """Call ``listener(done, total)`` on every progress report; returns the undo."""
    _listeners.append(listener)
    return lambda: _listeners.remove(listener)


class ByteProgress:
    """A progress artifact for bytes moved, updated at most once per ``interval`` seconds.

    The engine reports progress from whatever thread moves the bytes (pg_basebackup's stderr
    reader for a backup).  An update is an API call, which a busy server can hold for seconds
    (retries after a 503): it is made by a thread of its own, never by the one moving the bytes
    (a reader waiting on the API could leave pg_basebackup's last lines, its WAL end point,
    unread).  The Prefect settings and run context live in context variables, which
    a thread does not inherit, so updates run in a copy of the task's context."""

    def __init__(self, key: str, description: str, interval: float = 1.0) -> None:
        from prefect.artifacts import create_progress_artifact

        self._context = contextvars.copy_context()
        self._interval = interval
        self._last = 0.0
        self._artifact = None
        #: the newest percentage not yet shown (None: none); ``_DONE`` ends the reporter
        self._latest: float | None = None
        self._wake = threading.Event()
        self._reporter: threading.Thread | None = None
        self._stopped = False
        try:
            self._artifact = create_progress_artifact(0.0, key=key, description=description)
        except Exception as exc:  # an artifact is a view: never fail the work for it
            logger().warning("no progress artifact: %s", type(exc).__name__)

    def __call__(self, done: int, total: int) -> None:
        for listener in list(_listeners):
            listener(done, total)
        now = time.monotonic()
        if self._artifact is None or self._stopped or now - self._last < self._interval:
            return
        self._last = now
        self._latest = 100.0 * done / total if total else 0.0
        if self._reporter is None:
            self._reporter = threading.Thread(
                target=self._report, name="progress-artifact", daemon=True
            )
            self._reporter.start()
        self._wake.set()

    def _report(self) -> None:
        while True:
            self._wake.wait()
            self._wake.clear()
            percent, self._latest = self._latest, None
            if percent == _DONE:
                return
            if percent is not None:  # intermediate values skipped while the API was slow
                self._update(percent)

    def stop(self) -> None:
        """No more updates (the work failed: its bar stays where it was)."""
        self._stopped = True
        self._latest = _DONE
        self._wake.set()

    def finish(self) -> None:
        self.stop()
        if self._reporter is not None:
            self._reporter.join(timeout=_REPORTER_GRACE)
        self._update(100.0)

    def _update(self, percent: float) -> None:
        if self._artifact is None:
            return
        from prefect.artifacts import update_progress_artifact

        try:
            self._context.run(update_progress_artifact, self._artifact, min(percent, 100.0))
        except RuntimeError:  # the context is in use by the other thread: skip this tick
            pass
        except Exception as exc:
            logger().debug("progress artifact not updated: %s", type(exc).__name__)
