"""How the CLI runs a flow, and reads the schedules the deployments really have.

A command that changes something runs its flow:

- here, in this process, against the Prefect API: PREFECT_API_URL, the active Prefect profile's,
  or a server answering on 127.0.0.1:4200 (``pgpitr serve`` and ``make demo`` start one there);
  with none of them, against Prefect's temporary local server, which this says once;
- or, with ``--wait``/``--no-wait``, through ``run_deployment`` on the served deployment
  ``FLOW/pgpitr`` (PGPITR_DEPLOYMENT names another), so that the run happens where the
  schedules run; ``--no-wait`` returns as soon as the run is queued.

Prefect's own console logging is silenced (the runs' logs still go to the API); an engine error
raised inside the flow reaches the user as the original PitrError, with its message and exit code.

Reading the schedules (``list-backup-policy``, ``describe``) never imports Prefect nor starts a
flow: one HTTP request to the API, and the saved policy when no API answers.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import logging
import os
import re
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pgpitr.cli import console
from pgpitr.errors import PitrError

LOCAL_SERVER = "http://127.0.0.1:4200/api"
#: What ``run`` returns when the flow's result is not here (queued with --no-wait, or kept in
#: another machine's result storage); the command then has nothing more to print.
NO_RESULT: Any = type("NoResult", (), {"__repr__": lambda self: "NO_RESULT"})()
DEPLOYMENT_ENV = "PGPITR_DEPLOYMENT"
_FAILED = re.compile(r"^Flow run encountered an exception: (\w+): (.*)$", re.S)


# -- where the Prefect API is ------------------------------------------------------------------


@functools.cache
def api_url() -> str | None:
    """The configured Prefect API, or the local server if one answers, else None."""
    explicit = os.environ.get("PREFECT_API_URL") or _profile_setting("PREFECT_API_URL")
    if explicit:
        return explicit.rstrip("/")
    return LOCAL_SERVER if answers(LOCAL_SERVER) else None


def answers(url: str, timeout: float = 0.5) -> bool:
    import httpx

    try:
        return httpx.get(f"{url}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _profile_setting(name: str) -> str | None:
    """A setting of the active Prefect profile, read without importing Prefect."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml")
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    active = os.environ.get("PREFECT_PROFILE") or data.get("active", "ephemeral")
    value = data.get("profiles", {}).get(active, {}).get(name)
    return str(value) if value else None


def deployment_name() -> str:
    return os.environ.get(DEPLOYMENT_ENV) or "pgpitr"


def ui_url(path: str) -> str:
    base = (api_url() or LOCAL_SERVER).removesuffix("/api")
    return f"{base}/{path.lstrip('/')}"


# -- running a flow ----------------------------------------------------------------------------


def run(
    spec: str,
    wait: bool | None,
    /,
    *,
    progress: str | None = None,
    environment: Mapping[str, str] | None = None,
    **parameters: Any,
) -> Any:
    """Run the flow ``module:function`` with ``parameters``; return its result.

    ``wait`` None runs it here; True/False go through the deployment.  ``environment`` is set
    for an in-process run only (how a secret reaches a flow without being a parameter)."""
    prepare()
    if wait is None:
        return _run_here(spec, parameters, progress, environment)
    if environment:
        raise PitrError(
            "this command passes a secret to its flow through the environment, which a "
            "deployment's run does not share",
            hint="run it without --wait/--no-wait",
        )
    return _run_deployment(spec, parameters, wait)


_noted: list[bool] = []


def prepare() -> None:
    """Point Prefect at the API and quiet its console; call before importing a flow module."""
    # Set before Prefect is imported: its logging reads these once.  The runs' logs still go to
    # the API; only Prefect's console chatter (and tracebacks of engine errors) is silenced.
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
    os.environ.setdefault("PREFECT_INTERNAL_LOGGING_LEVEL", "CRITICAL")  # its internals
    # Its background workers report their exit-time drain on loggers of their own names.
    for name in ("EventsWorker", "APILogWorker"):
        logging.getLogger(name).setLevel(logging.ERROR)
    url = api_url()
    if url:
        os.environ["PREFECT_API_URL"] = url
    elif not _noted:
        _noted.append(True)
        console.info(
            "note: no Prefect server configured (PREFECT_API_URL) or running on 127.0.0.1:4200: "
            "this flow runs on Prefect's temporary local server (10 to 15 s more per command); "
            "`pgpitr serve` starts a lasting one"
        )


def _load(spec: str) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def _run_here(
    spec: str,
    parameters: dict[str, Any],
    label: str | None,
    environment: Mapping[str, str] | None,
) -> Any:
    flow = _load(spec)
    with _environment(environment or {}), _progress_bar(label):
        try:
            return flow(**parameters)
        except PitrError:
            raise
        except Exception as exc:  # not the engine's: one line, and where the run's log is
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise PitrError(
                f"the {flow.name} flow failed: {type(exc).__name__}: {first}",
                hint=f"see the flow run's log in the Prefect UI ({ui_url('runs')})",
            ) from exc


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
    from pgpitr.cli import progress
    from tasks._common import add_listener

    with progress.bytes_bar(label) as update:
        remove = add_listener(update)
        try:
            yield
        finally:
            remove()


def _run_deployment(spec: str, parameters: dict[str, Any], wait: bool) -> Any:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound

    target = f"{_load(spec).name}/{deployment_name()}"
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(target)
        except ObjectNotFound:
            raise PitrError(
                f"no deployment {target} in the Prefect API at {api_url()}",
                hint="start `pgpitr serve` (or `prefect deploy --all` and a worker), or run "
                "the command without --wait/--no-wait to run the flow here",
            ) from None
    status = getattr(deployment, "status", None)
    if getattr(status, "value", status) == "NOT_READY":
        console.info(f"note: nothing serves {target} right now; the run waits for a runner")
    flow_run = run_deployment(
        target, parameters=parameters, timeout=None if wait else 0, poll_interval=1
    )
    link = ui_url(f"runs/flow-run/{flow_run.id}")
    if not wait:
        console.info(f"flow run {flow_run.name} queued on {target}: {link}")
        return NO_RESULT
    state = flow_run.state
    if state is not None and state.is_completed():
        try:
            return state.result()
        except Exception:  # a result kept elsewhere (another machine's storage): say where
            console.info(f"flow run {flow_run.name} completed: {link}")
            return NO_RESULT
    raise error_from_state(state, flow_run.name, link)


def error_from_state(state: Any, run_name: str, link: str) -> PitrError:
    """The engine error a failed run raised, rebuilt from its state: same message, same code."""
    from pgpitr import errors

    message = (getattr(state, "message", None) or "").strip()
    found = _FAILED.match(message)
    if found:
        kind = getattr(errors, found.group(1), None)
        if isinstance(kind, type) and issubclass(kind, PitrError):
            error = PitrError(found.group(2))
            error.exit_code = kind.exit_code
            return error
    name = getattr(state, "name", "did not complete")
    return PitrError(f"flow run {run_name} {name}: {message or 'no message'}", hint=link)


# -- what the deployments really have ----------------------------------------------------------


@functools.cache
def _deployment(flow_name: str) -> tuple[dict[str, Any] | None, str]:
    """(the deployment as the API returns it, or None; why None)."""
    import httpx

    url = api_url()
    target = f"{flow_name}/{deployment_name()}"
    if url is None:
        return None, "no Prefect API is configured or running on 127.0.0.1:4200"
    try:
        response = httpx.get(f"{url}/deployments/name/{target}", timeout=3)
    except httpx.HTTPError:
        return None, f"the Prefect API at {url} does not answer"
    if response.status_code == 404:
        return None, f"{target} is not deployed (start `pgpitr serve`)"
    if response.status_code != 200:
        return None, f"the Prefect API at {url} answered {response.status_code}"
    return response.json(), ""


_explained: set[str] = set()


def schedule_fields(cluster: str, policy: Any) -> dict[str, Any]:
    """The backup schedule of ``cluster`` as its deployment has it, in describe's fields; the
    saved policy's when the deployment cannot be read (and a note on stderr, once)."""
    deployment, why = _deployment("backup")
    schedule = None
    if deployment is not None:
        schedule = next((s for s in deployment["schedules"] if s.get("slug") == cluster), None)
        if schedule is None:
            why = f"backup/{deployment_name()} has no schedule for {cluster}"
    if schedule is None or "cron" not in schedule.get("schedule", {}):
        if why not in _explained:
            _explained.add(why)
            console.info(f"note: backup schedule from the saved policy: {why}")
        return {
            "auto_backup": policy.datafile_enabled,
            "backup_schedule": policy.cron,
            "schedule_timezone": policy.timezone,
            "schedule_source": f"saved policy ({why})",
        }
    assert deployment is not None
    return {
        "auto_backup": bool(schedule["active"]) and not deployment.get("paused", False),
        "backup_schedule": schedule["schedule"]["cron"],
        "schedule_timezone": schedule["schedule"].get("timezone") or "UTC",
        "schedule_source": f"deployment backup/{deployment_name()}",
    }
