"""The embedded default Prefect server: one local server that pgpitr starts once and keeps.

With no PREFECT_API_URL (and no Prefect profile of the user's own naming one), the first command
that needs the API starts ``prefect server start`` on 127.0.0.1:PORT (PGPITR_PREFECT_PORT,
default 4200), detached from the command, with everything it keeps under
``PGPITR_HOME/prefect``::

    PGPITR_HOME/prefect/prefect.db    its database (runs, deployments, schedules, artifacts)
    PGPITR_HOME/prefect/server.json   pid and port of the server pgpitr started
    PGPITR_HOME/prefect/server.log    its log
    PGPITR_HOME/prefect/server.lock   held while one command starts it (no second server)

and writes a Prefect profile ``pgpitr`` (made active, PREFECT_API_URL set) into PREFECT_HOME's
profiles.toml, so that the ``prefect`` CLI and the UI find the same server.  Later commands find
it answering and reuse it.  ``pgpitr server status|start|stop``.

Nothing here imports Prefect: the read-only commands use it to find the API.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from deployments.daemon import Daemon, kill
from pgpitr.errors import PitrError

PORT_ENV = "PGPITR_PREFECT_PORT"
DEFAULT_PORT = 4200
PROFILE = "pgpitr"
START_TIMEOUT = 180.0  # a loaded 2-core machine takes 10-30 s to migrate and serve
#: PGPITR_HOME/prefect/server.json (pid, port) and server.log; its command line is
#: `… -m prefect server start …`
DAEMON = Daemon("prefect", "server", marks=(b"prefect", b"server"))


def port() -> int:
    value = os.environ.get(PORT_ENV) or str(DEFAULT_PORT)
    try:
        return int(value)
    except ValueError:
        raise PitrError(
            f"{PORT_ENV}={value!r} is not a port number", hint=f"unset {PORT_ENV} or fix it"
        ) from None


def url(at: int | None = None) -> str:
    return f"http://127.0.0.1:{at or port()}/api"


directory, pidfile, logfile = DAEMON.directory, DAEMON.pidfile, DAEMON.logfile


def database() -> Path:
    return directory() / "prefect.db"


@dataclass(frozen=True)
class ServerStatus:
    url: str
    answering: bool
    #: the server pgpitr started (its pidfile names a live process), or None
    pid: int | None
    port: int
    database: str
    log: str
    profile: str  # the profiles.toml written, or ""

    @property
    def managed(self) -> bool:
        return self.pid is not None

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "managed": self.managed}


def _answers(api: str, timeout: float = 0.5) -> bool:
    import httpx

    try:
        return httpx.get(f"{api}/health", timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def _recorded() -> tuple[int, int] | None:
    """(pid, port) of the server pgpitr started, while that process lives."""
    found = DAEMON.recorded()
    try:
        return (found["pid"], int(found["port"])) if found else None
    except (KeyError, TypeError, ValueError):
        return None


def status() -> ServerStatus:
    recorded = _recorded()
    at = recorded[1] if recorded else port()
    return ServerStatus(
        url=url(at),
        answering=_answers(url(at)),
        pid=recorded[0] if recorded else None,
        port=at,
        database=str(database()),
        log=str(logfile()),
        profile=str(profiles_path()) if _profile_is_ours() else "",
    )


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    directory().mkdir(parents=True, exist_ok=True)
    with open(directory() / "server.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # another command starting it: wait for it, then reuse
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure(timeout: float = START_TIMEOUT) -> tuple[str, bool]:
    """The local server's API URL, started first if nothing answers; (url, started now)."""
    api = url()
    if _answers(api):
        write_profile(api)
        return api, False
    with _lock():
        if _answers(api):  # started by another command while this one waited
            write_profile(api)
            return api, False
        _start(timeout)
    write_profile(api)
    return api, True


def _start(timeout: float) -> int:
    at = port()
    api = url(at)
    directory().mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    env.update(
        # the server's own home: its database, memo store and settings stay with pgpitr's
        PREFECT_HOME=str(directory()),
        PREFECT_PROFILES_PATH=str(directory() / "server-profiles.toml"),
        PREFECT_API_DATABASE_CONNECTION_URL=f"sqlite+aiosqlite:///{database()}",
        PREFECT_UI_API_URL=api,
    )
    server = DAEMON.spawn(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1"]
        + ["--port", str(at)],
        cwd=directory(),
        env=env,
        port=at,
    )
    deadline = time.monotonic() + timeout
    while not _answers(api, timeout=1):
        if server.poll() is not None or time.monotonic() > deadline:
            kill(server.pid)
            DAEMON.forget()
            raise PitrError(
                f"the local Prefect server on port {at} did not start",
                hint=f"see its log {logfile()}; another program may hold port {at} "
                f"(set {PORT_ENV} to another port)",
            )
        time.sleep(0.5)
    return server.pid


def stop(timeout: float = 30) -> int | None:
    """Stop the server pgpitr started; its pid, or None when none runs."""
    if _recorded() is None:
        DAEMON.forget()
        return None
    return DAEMON.stop(timeout)


# -- the Prefect profile -----------------------------------------------------------------------


def profiles_path() -> Path:
    prefect_home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect")
    return Path(os.environ.get("PREFECT_PROFILES_PATH") or prefect_home / "profiles.toml")


def read_profiles() -> dict[str, object]:
    try:
        return tomllib.loads(profiles_path().read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def _profile_is_ours() -> bool:
    return read_profiles().get("active") == PROFILE


def active_profile_is_ours() -> bool:
    """The active Prefect profile is the one pgpitr writes: its URL is the local server's."""
    return (os.environ.get("PREFECT_PROFILE") or read_profiles().get("active")) == PROFILE


def write_profile(api: str) -> None:
    """Profile ``pgpitr`` with PREFECT_API_URL=API, made active; the other profiles are kept."""
    data = read_profiles()
    profiles = dict(data.get("profiles") or {})  # type: ignore[call-overload]
    mine = dict(profiles.get(PROFILE) or {})
    if data.get("active") == PROFILE and mine.get("PREFECT_API_URL") == api:
        return
    mine["PREFECT_API_URL"] = api
    profiles[PROFILE] = mine
    text = f"active = {_toml(PROFILE)}\n"
    for name, settings in profiles.items():
        text += f"\n[profiles.{_toml(name)}]\n"
        for key, value in dict(settings).items():
            text += f"{key} = {_toml(value)}\n"
    path = profiles_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    tmp.replace(path)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string is a JSON string
