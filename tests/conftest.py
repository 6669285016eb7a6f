"""Fixtures shared by the whole suite.

Real parts only: PostgreSQL 15 servers started with initdb/pg_ctl, moto's S3 server over HTTP on
127.0.0.1, Prefect's test harness once per session (started by the first test that needs it).
Nothing at a boundary is mocked.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import pytest

# Prefect must never touch the developer's profile or send analytics, even when a test imports it
# indirectly; set this before anything imports prefect.
_PREFECT_HOME = tempfile.mkdtemp(prefix="pgpitr-prefect-")
atexit.register(shutil.rmtree, _PREFECT_HOME, ignore_errors=True)
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
# The agents the suite starts serve no Prometheus metrics on the fixed default port (several at
# once, and maybe a real agent's); a test that wants them gives a free port.
os.environ.setdefault("PGPITR_METRICS_PORT", "off")


def _ports_of_this_worker() -> None:
    """Each pytest-xdist worker takes its clusters' ports from a part of the range of its own
    (PGPITR_PORTS): a cluster a test stopped keeps its port, and the other worker's home, which
    does not know that cluster, would otherwise give the port to a new one."""
    from pgpitr.postgres.ports import PORTS_ENV, port_range

    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ...
    if not worker.startswith("gw"):
        return
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    low, high = port_range()
    size = (high - low + 1) // count
    first = low + int(worker[2:]) * size
    os.environ[PORTS_ENV] = f"{first}-{first + size - 1}"


_ports_of_this_worker()


def _home_of_the_session() -> None:
    """A PGPITR_HOME for whatever runs without the ``home`` fixture: never the machine's own
    (/var/lib/pgpitr, which the install makes), whose credentials and clusters are not the
    suite's."""
    if "PGPITR_HOME" in os.environ:
        return
    path = Path(tempfile.mkdtemp(prefix="pgpitr-session-home-", dir="/tmp"))
    path.chmod(0o755)
    if os.geteuid() == 0:  # the commands root starts run as the service account
        from pgpitr.privilege import make_service_account

        account = make_service_account()
        os.chown(path, account.uid, account.gid)
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["PGPITR_HOME"] = str(path)


_home_of_the_session()

#: The Prefect API of a test that did not ask for one (see ``prefect_harness``): nothing answers
#: there, so a flow run fails at once and names this address, instead of the CLI starting pgpitr's
#: own persistent local server on port 4200 (with no PREFECT_API_URL it would), or reaching a
#: developer's server.  Set before Prefect is imported: its settings read it once.
NO_API = "http://127.0.0.1:9/no-prefect-api-request-the-prefect_harness-fixture/api"
os.environ["PREFECT_API_URL"] = NO_API


class _Harness:
    """A Prefect server (SQLite, in a subprocess) for the session, as Prefect's own test harness
    starts it but on a database earlier servers migrated (tests/prefect_db.py), started by the
    first test that needs it and kept until the session ends: a unit-only session never pays
    its start."""

    def __init__(self) -> None:
        self._stack: ExitStack | None = None
        self.url: str | None = None

    def ensure(self) -> str:
        if self.url is None:
            stack = ExitStack()
            # the server is not told of NO_API (its environment is this process's)
            os.environ.pop("PREFECT_API_URL", None)
            try:
                self.url = _start_server(stack)
            except BaseException:
                os.environ["PREFECT_API_URL"] = NO_API  # never no URL at all: see NO_API
                stack.close()
                raise
            self._stack = stack
        # in os.environ so that every child process (the `pgpitr` CLI, whose changing commands
        # run flows, and the agents) reports to it
        os.environ["PREFECT_API_URL"] = self.url
        return self.url

    def close(self) -> None:
        if self._stack is not None:
            # its settings context was entered in a test's frame: resetting it may complain,
            # once the server is already stopped
            with suppress(ValueError, RuntimeError):
                self._stack.close()
            self._stack, self.url = None, None


def _start_server(stack: ExitStack) -> str:
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )

    from tests import prefect_db

    directory = Path(tempfile.mkdtemp(prefix="pgpitr-prefect-server-"))
    stack.callback(shutil.rmtree, directory, ignore_errors=True)
    database = directory / "prefect.db"
    stack.enter_context(
        temporary_settings(
            updates={PREFECT_SERVER_DATABASE_CONNECTION_URL: f"sqlite+aiosqlite:///{database}"},
            restore_defaults={PREFECT_API_URL},
        )
    )
    with prefect_db.started_from_kept_copy(database) as copied:
        server = SubprocessASGIServer(port=free_port())
        server.start(timeout=120)
        stack.callback(server.stop)
        if not copied:
            prefect_db.keep(database)
    stack.enter_context(temporary_settings(updates={PREFECT_API_URL: server.api_url}))
    return server.api_url


HARNESS = _Harness()


#: Modules that keep one worker for minutes, longest first (CI's durations, 2026-12-07): they
#: run first, in this order (after pytest-randomly's shuffle), so that the other workers' many
#: short modules fill that time, not one of them ending the run.
LONG_MODULES = (
    "tests/fleet/test_fleet.py",  # root's: three hosts, a server, five tests: 110-170 s
    "tests/security/test_hostile_account.py",  # root's: 140 s
    "tests/fleet/test_ha_hosts.py",  # root's: two hosts, a server, Patroni: 110 s
    "tests/ha/test_ha_cluster.py",
    "tests/ha/test_ha_incremental.py",  # Patroni on 17, a switchover and a failover: 155 s
    "tests/flows/test_agent.py",
    "tests/ui/test_restore_form.py",  # a server, a cluster, an agent, two form runs: 85 s
    "tests/flows/test_orphans.py",
    "tests/flows/test_restore_targets_api.py",
    "tests/test_encryption.py",
    "tests/flows/test_incremental_schedule.py",
    "tests/flows/test_orchestration.py",
    "tests/flows/test_restore_targets.py",
    "tests/faults/test_secrets.py",
    "tests/faults/test_streaming_faults.py",
)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first = {module: i for i, module in enumerate(LONG_MODULES)}
    items.sort(key=lambda item: first.get(item.nodeid.split("::")[0], len(first)))  # stable
    # the root tests need root; a developer running as themself is told so (CI runs them as
    # root through `make test`, and anywhere under CI a root test run without root fails)
    if os.geteuid() != 0 and not os.environ.get("CI"):
        needs_root = pytest.mark.skip(reason="starts as root: `make test` runs it as root")
        for item in items:
            if item.get_closest_marker("root"):
                item.add_marker(needs_root)
    # tests/kubernetes' `cli` fixture runs the CLI in this process: its flows need the API
    for item in items:
        if "cli" in getattr(item, "fixturenames", ()) and "prefect_harness" not in (
            item.fixturenames
        ):
            item.fixturenames.append("prefect_harness")


def pytest_sessionfinish(session: pytest.Session) -> None:
    HARNESS.close()


@pytest.fixture(scope="session")
def prefect_harness() -> str:
    """The session's Prefect API (started on first use); request it in every test that runs a
    flow or reads the API in this process.  ``cli()`` starts it itself."""
    return HARNESS.ensure()


# -- PostgreSQL and pgpitr's home --------------------------------------------------------------

import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402

from tests import warm  # noqa: E402

PG_BINDIR = Path(os.environ.get("PGPITR_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
PGPITR = [sys.executable, "-m", "pgpitr"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_everything_under(home: Path) -> None:
    for pidfile in home.glob("clusters/*/data/postmaster.pid"):
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown
        except (ValueError, OSError):
            continue


def give_to_service_account(path: Path) -> None:
    """Under root, hand PATH to pgpitr's service account, which every ``pgpitr`` command that
    root starts becomes (a home of root's it refuses)."""
    if os.geteuid() == 0:
        from pgpitr.privilege import make_service_account

        account = make_service_account()
        os.chown(path, account.uid, account.gid)


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh PGPITR_HOME that the server's OS user can reach; every cluster is stopped after."""
    path = reachable_tempdir("pgpitr-home-")
    give_to_service_account(path)
    monkeypatch.setenv("PGPITR_HOME", str(path))
    monkeypatch.setenv("TZ", "UTC")
    yield path
    stop_everything_under(path)
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def shared_home() -> Iterator[Path]:
    """A PGPITR_HOME for fixtures wider than one test (monkeypatch is function-scoped)."""
    path = reachable_tempdir("pgpitr-home-")
    give_to_service_account(path)
    saved = os.environ.get("PGPITR_HOME")
    os.environ["PGPITR_HOME"] = str(path)
    try:
        yield path
    finally:
        stop_everything_under(path)
        if saved is None:
            os.environ.pop("PGPITR_HOME", None)
        else:
            os.environ["PGPITR_HOME"] = saved
        shutil.rmtree(path, ignore_errors=True)


def cli(
    *args: str,
    check: bool = True,
    env: dict | None = None,
    timeout: float = 300,
    user: str | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the real ``pgpitr`` command line in a child process, as a user would, against the
    session's Prefect harness (started now if no test has needed it yet); as USER (root only),
    with a Prefect home of its own, from the installed package; ``input`` is its standard
    input.  The child is a fork of a process that has Prefect and the flows imported already
    (tests/warm.py), unless PGPITR_TEST_COLD_CLI=1 or a USER is given."""
    if "PREFECT_API_URL" not in (env or {}):
        HARNESS.ensure()
    identity: dict = {}
    argv = [*PGPITR, *args]
    child = {**os.environ, **(env or {})}
    if user is not None:
        import pwd

        entry = pwd.getpwnam(user)
        identity = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        argv = [sys.executable, "-I", "-m", "pgpitr", *args]  # the checkout may be root's only
        prefect_home = reachable_tempdir("pgpitr-prefect-")
        os.chown(prefect_home, entry.pw_uid, entry.pw_gid)
        child.update(HOME=str(prefect_home), PREFECT_HOME=str(prefect_home), USER=user)
    if user is None and warm.enabled():
        result = warm.run(list(args), argv, child, input, timeout)
    else:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            env=child,
            cwd="/" if user is not None else None,
            **identity,
        )
    if check and result.returncode != 0:
        raise AssertionError(
            f"pgpitr {' '.join(args)} failed ({result.returncode}):\n"
            f"{result.stdout}\n{result.stderr}"
        )
    return result


# -- S3: moto's server over HTTP on 127.0.0.1 ------------------------------------------------

S3_KEY, S3_SECRET = "AKIAPGPITRTESTKEY001", "pgpitr-test-secret-Kx93mQ7vZt"


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_url(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new bucket on the moto server, credentials in the environment; its repository URL."""
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    bucket = f"pgpitr-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(
        Bucket=bucket
    )
    return f"s3://{bucket}/backups?endpoint={moto_endpoint}&region=us-east-1"


def reachable_tempdir(prefix: str) -> Path:
    """A temporary directory the server's OS user can traverse (pytest's own are mode 700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(0o755)
    return path


#: The repository kinds ``repo_url`` gives: both, unless PGPITR_TEST_REPOSITORY_KINDS names
#: some (the version matrix gives each version one: the difference between the kinds is not the
#: version's, and the whole suite runs both on PostgreSQL 15).
REPOSITORY_KINDS = os.environ.get("PGPITR_TEST_REPOSITORY_KINDS", "file,s3").split(",")


@pytest.fixture(params=REPOSITORY_KINDS)
def repo_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Each repository kind (``REPOSITORY_KINDS``), for suites that must behave the same on
    each."""
    if request.param == "s3":
        yield request.getfixturevalue("s3_url")
        return
    path = reachable_tempdir("pgpitr-repo-")
    yield f"file://{path / 'repo'}"
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def moto_with_auth() -> Iterator[dict[str, str]]:
    """A second moto server, in its own process, that checks credentials (IAM on).

    The first few requests are allowed without authentication: they create the user, its policy,
    its access key and the bucket."""
    import json

    import boto3

    port = free_port()
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "5"}
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "moto server did not start"
                time.sleep(0.1)
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="bootstrap",
            aws_secret_access_key="bootstrap",
        )
        iam.create_user(UserName="pgpitr")
        iam.put_user_policy(
            UserName="pgpitr",
            PolicyName="s3",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="pgpitr")["AccessKey"]
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=key["AccessKeyId"],
            aws_secret_access_key=key["SecretAccessKey"],
        ).create_bucket(Bucket="pgpitr-auth")
        yield {
            "endpoint": endpoint,
            "key": key["AccessKeyId"],
            "secret": key["SecretAccessKey"],
            "bucket": "pgpitr-auth",
        }
    finally:
        server.terminate()
        server.wait(timeout=10)
