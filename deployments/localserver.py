"""The embedded default Prefect server: one local server that pgpitr starts once and keeps.

With no PREFECT_API_URL (and no Prefect profile of the user's own naming one), the first command
that needs the API starts ``prefect server start`` on 127.0.0.1:PORT (PGPITR_PREFECT_PORT,
default 4200; PGPITR_PREFECT_ADDRESS for another address, the one the agents of a fleet's other
hosts reach), detached from the command, with everything it keeps under
``PGPITR_HOME/prefect``::

    PGPITR_HOME/prefect/prefect.db    its database (runs, deployments, schedules, artifacts)
    PGPITR_HOME/prefect/server.json   pid and port of the server pgpitr started
    PGPITR_HOME/prefect/server.log    its log
    PGPITR_HOME/prefect/server.lock   held while one command starts it (no second server)
    PGPITR_HOME/prefect/api-credentials  the API's auth string (0600; made at install)
    PGPITR_HOME/prefect/ui/           the UI's files, as the server serves them

The server requires those credentials on every request but ``/health`` (Prefect's
``server.api.auth_string``); pgpitr's commands and its agent read them from the file and hand
them to Prefect's client in the environment (PREFECT_API_AUTH_STRING), never on a command line.
A server on the port that another account runs is never sent them: whatever answers there is
trusted only when the listening socket is this account's.

and writes a Prefect profile ``pgpitr`` (made active, PREFECT_API_URL and the auth string set;
the file 0600) into PREFECT_HOME's profiles.toml, so that the ``prefect`` CLI and the UI find the
same server.  Later commands find it answering and reuse it.  ``pgpitr server status|start|stop``.

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

from deployments import serverdb
from deployments.daemon import Daemon, kill
from pgpitr.errors import PitrError

PORT_ENV = "PGPITR_PREFECT_PORT"
DEFAULT_PORT = 4200
ADDRESS_ENV = "PGPITR_PREFECT_ADDRESS"
DEFAULT_ADDRESS = "127.0.0.1"
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


def address() -> str:
    """The address the server listens on (PGPITR_PREFECT_ADDRESS): 127.0.0.1 by default, this
    host's address on the network when the agents of other hosts use it (a fleet)."""
    import ipaddress

    value = (os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS).strip()
    try:
        parsed = ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        raise PitrError(
            f"{ADDRESS_ENV}={value!r} is not an IP address",
            hint=f"unset {ADDRESS_ENV} (127.0.0.1), or give this host's address, e.g. 10.0.0.5",
        ) from None
    if parsed.is_unspecified:
        raise PitrError(
            f"{ADDRESS_ENV}={value!r} listens everywhere, and names no address to reach it at",
            hint="give the one address the other hosts reach this one at",
        )
    return str(parsed)


def url(at: int | None = None) -> str:
    host = address()
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{at or port()}/api"


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


# -- the credentials ---------------------------------------------------------------------------

AUTH_ENV = "PREFECT_API_AUTH_STRING"  # what Prefect's client sends (basic authentication)
SERVER_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"  # what Prefect's server requires
#: the user name in the auth string ``USER:SECRET`` (the UI's login asks for the whole string)
AUTH_USER = "pgpitr"


def credentials_path() -> Path:
    return directory() / "api-credentials"


def credentials() -> str | None:
    """The local server's auth string, or None before the install (or a first start) made it."""
    from pgpitr.osutil import read_private

    try:
        return read_private(credentials_path()).strip() or None
    except FileNotFoundError:
        return None


def ensure_credentials(secret: str | None = None) -> str:
    """The auth string, made now (SECRET, or a new random one) when there is none."""
    import secrets

    from pgpitr.osutil import write_atomic

    found = credentials()
    if found:
        return found
    made = secret or f"{AUTH_USER}:{secrets.token_urlsafe(32)}"
    directory().mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(credentials_path(), made + "\n", mode=0o600)
    return made


def use_credentials() -> None:
    """Hand the auth string to Prefect's client in this process and its children."""
    secret = credentials()
    if secret:
        os.environ[AUTH_ENV] = secret


def listener_uids(at: int) -> set[int]:
    """The uids owning the sockets that listen on port AT (any address, IPv4 and IPv6)."""
    owners = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            port_hex, status, uid = fields[1].rpartition(":")[2], fields[3], fields[7]
            if status == "0A" and int(port_hex, 16) == at:  # 0A: LISTEN
                owners.add(int(uid))
    return owners


def check_trusted(at: int) -> None:
    """Refuse a server on port AT that another account runs: it would be sent the credentials,
    and its answers (a run's result, a deployment) taken for pgpitr's."""
    from pgpitr.privilege import account_name

    for owner in listener_uids(at) - {os.geteuid()}:
        raise PitrError(
            f"port {at} is held by a process of {account_name(owner)}, not by pgpitr's local "
            "Prefect server: pgpitr sends it no credentials and takes none of its answers",
            hint=f"stop that process, or give pgpitr another port ({PORT_ENV})",
        )


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
        database=_database_shown(),
        log=str(logfile()),
        profile=str(profiles_path()) if _profile_is_ours() else "",
    )


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    from pgpitr.osutil import open_private

    directory().mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = open_private(directory() / "server.lock", os.O_RDWR | os.O_CREAT)
    with os.fdopen(fd, "r+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # another command starting it: wait for it, then reuse
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def ensure(timeout: float = START_TIMEOUT) -> tuple[str, bool]:
    """The local server's API URL, started first if nothing answers; (url, started now)."""
    api = url()
    if _answers(api):
        _adopt(api)
        return api, False
    with _lock():
        if _answers(api):  # started by another command while this one waited
            _adopt(api)
            return api, False
        _start(timeout)
    _adopt(api)
    return api, True


def _adopt(api: str) -> None:
    check_trusted(port())
    use_credentials()
    write_profile(api)


def _server_command(at: int) -> tuple[list[str], dict[str, str]]:
    """argv and environment of the server on port AT; the credentials go in the environment."""
    api = url(at)
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", AUTH_ENV)}
    env.update(
        **{SERVER_AUTH_ENV: ensure_credentials()},
        # the server's own home: its database, memo store and settings stay with pgpitr's
        PREFECT_HOME=str(directory()),
        PREFECT_PROFILES_PATH=str(directory() / "server-profiles.toml"),
        PREFECT_API_DATABASE_CONNECTION_URL=serverdb.connection_url(directory(), database()),
        PREFECT_UI_API_URL=api,
        # Prefect copies its UI into the installed package before serving it, which the venv
        # that root installed does not let this account write: without a directory of the
        # server's own it serves no UI at all (and says so in no log)
        PREFECT_UI_STATIC_DIRECTORY=str(directory() / "ui"),
    )
    argv = [sys.executable, "-I", "-m", "prefect", "server", "start", "--host", address()]
    return argv + ["--port", str(at)], env


def run_foreground() -> None:
    """Become the server (``pgpitr server run``: its systemd unit), with the credentials."""
    at = port()
    check_trusted(at)
    directory().mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chdir(directory())
    argv, env = _server_command(at)
    os.execve(argv[0], argv, env)


def _start(timeout: float) -> int:
    at = port()
    api = url(at)
    check_trusted(at)
    directory().mkdir(parents=True, exist_ok=True, mode=0o700)
    argv, env = _server_command(at)
    server = DAEMON.spawn(argv, cwd=directory(), env=env, port=at)
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


def _database_shown() -> str:
    used = serverdb.connection_url(directory(), database())
    return str(database()) if used.startswith("sqlite") else serverdb.shown(used)


def use_database(url: str) -> None:
    """Keep the server's data at URL from now on (serverdb): the server pgpitr runs is stopped
    and started on it.  If it does not start there, the database before is kept and the
    server started on it again, and the error raised."""
    kept = serverdb.url_file(directory())
    before = kept.read_text() if kept.exists() else None
    was_running = stop() is not None
    serverdb.keep(directory(), url)
    try:
        ensure()
    except PitrError:
        if before is None:
            kept.unlink(missing_ok=True)
        else:
            serverdb.keep(directory(), before)
        if was_running:
            ensure()
        raise


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


def write_profile(api: str, secret: str | None = None, name: str = PROFILE) -> None:
    """Profile NAME (``pgpitr``: the local server's) with PREFECT_API_URL=API and the auth
    string (SECRET, else the credentials file's), made active; the other profiles are kept."""
    data = read_profiles()
    profiles = dict(data.get("profiles") or {})  # type: ignore[call-overload]
    mine = dict(profiles.get(name) or {})
    wanted = {"PREFECT_API_URL": api}
    secret = secret or (credentials() if name == PROFILE else None)
    if secret:
        wanted[AUTH_ENV] = secret
    if data.get("active") == name and wanted.items() <= mine.items():
        return
    mine.update(wanted)
    profiles[name] = mine
    text = f"active = {_toml(name)}\n"
    for name, settings in profiles.items():
        text += f"\n[profiles.{_toml(name)}]\n"
        for key, value in dict(settings).items():
            text += f"{key} = {_toml(value)}\n"
    path = profiles_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    from pgpitr.osutil import write_atomic

    write_atomic(path, text, mode=0o600)  # it holds the auth string


#: the profile ``pgpitr server connect`` writes on a host that uses another host's server
REMOTE_PROFILE = "pgpitr-remote"


def connect(api: str, secret: str) -> None:
    """Use the Prefect server at API (a fleet's: another host's pgpitr server, or any Prefect
    server) with the auth string SECRET: checked against it first, then written into the
    active Prefect profile ``pgpitr-remote`` (0600), which pgpitr, its agent and ``prefect``
    read.  Wrong credentials, or no server there, change nothing."""
    import base64

    import httpx

    api = api.strip().rstrip("/")
    if not api.startswith(("http://", "https://")) or not api.endswith("/api"):
        raise PitrError(
            f"{api!r} is not a Prefect API URL", hint="give http://HOST:PORT/api (https too)"
        )
    secret = secret.strip()
    header = {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    try:
        httpx.get(f"{api}/health", timeout=5).raise_for_status()
        answer = httpx.get(f"{api}/admin/version", headers=header, timeout=10)
    except httpx.HTTPError as exc:
        raise PitrError(
            f"the Prefect API at {api} does not answer ({type(exc).__name__})",
            hint="start the server there (`pgpitr server start` with PGPITR_PREFECT_ADDRESS "
            "set to that host's address), and check the address and the port",
        ) from None
    if answer.status_code == 401:
        raise PitrError(
            f"the Prefect API at {api} refused the credentials",
            hint="give the server's auth string: its PGPITR_HOME/prefect/api-credentials",
        )
    if answer.status_code != 200:
        raise PitrError(f"the Prefect API at {api} answered {answer.status_code}")
    write_profile(api, secret, name=REMOTE_PROFILE)


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))  # a TOML basic string is a JSON string
