"""A real three-member Patroni cluster on this machine, for the HA tests.

Patroni 4.1.5 (the test extra) with its built-in Raft DCS, PostgreSQL from BINDIR (Debian's 15
unless told), everything on 127.0.0.1 with ports from ``$PGPITR_PORTS`` and every file under one
directory.  Each member is one ``patroni`` process started with this interpreter and a YAML
config the harness writes; the REST API asks for a username and password on its changing
requests (:attr:`PatroniCluster.rest_auth`).  The superuser is the members' OS user (by default
the one running the tests), so that peer authentication over a member's Unix socket works for
pgpitr; it also has a password (:attr:`PatroniCluster.superuser_password`) for TCP, which
pg_rewind and the writer use.

A member may also run on a "host" of its own (:class:`Site`): an address it listens on and
advertises, and a command prefix that starts it there (a network namespace, say), as another OS
account (``os_user``, root's tests pass the service account).  The files stay on one file system
and the harness, patronictl included, still runs in the caller's namespace: it reaches the
members over their addresses, and over TCP with the superuser's password when the caller is not
the members' account (peer authentication would map it to the wrong role).

Nothing is mocked: the timings are Patroni's own, with the smallest ``ttl``, ``loop_wait`` and
``retry_timeout`` its validator accepts (20, 1, 3 seconds; ``retry_timeout`` 5 here), so a
crashed leader is replaced within about ``ttl`` seconds.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pgpitr.postgres.ports import port_is_free, port_range

PG15_BINDIR = Path("/usr/lib/postgresql/15/bin")
PATRONI = [sys.executable, "-m", "patroni"]
PATRONICTL = Path(sys.executable).with_name("patronictl")
REPLICATION_USER = "replicator"
REST_USER = "patroni"


def patroni_missing() -> str | None:
    """Why Patroni (with its Raft DCS) cannot run here, or None."""
    for module in ("patroni", "pysyncobj", "psycopg", "psutil"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (the test extra: patroni[raft,psycopg3])"
    if not (PG15_BINDIR / "postgres").exists():
        return f"no PostgreSQL in {PG15_BINDIR}"
    return None


def require_patroni() -> None:
    """Skip the test when Patroni is missing, but fail it in CI (``CI`` set), where the test
    extra is installed: a skip there would hide that the HA tests did not run."""
    import pytest

    why = patroni_missing()
    if why is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"{why}, in CI: `make install` installs the test extras")
    pytest.skip(why)


class HarnessError(AssertionError):
    """The cluster did not reach the state a test waited for (an assertion failure in a test)."""


def _os_user() -> str:
    return pwd.getpwuid(os.geteuid()).pw_name


@dataclass(frozen=True)
class Site:
    """Where one member runs: the "host" of a multi-host test on this one machine.

    ADDRESS is the IP the member's PostgreSQL, REST API and Raft node listen on and advertise
    (their ``connect_address``); the caller must be able to reach it.  WRAP turns an argv into
    the argv that runs it on that host, e.g. ``["ip", "netns", "exec", NS, "setpriv",
    "--reuid=...", ..., *argv]``; None runs it here, as it is.  The wrap must *exec* ARGV in
    place (``ip netns exec``, ``setpriv``, ``nsenter`` and ``env`` do; a shell without ``exec``,
    ``sudo`` or ``su`` do not): the harness signals the process it started as the member's
    Patroni (a stop's SIGTERM, a crash's SIGKILL), and a parent left between them would take
    the signal instead, leaving Patroni and its PostgreSQL running."""

    address: str = "127.0.0.1"
    wrap: Callable[[list[str]], list[str]] | None = None

    def command(self, argv: list[str]) -> list[str]:
        """ARGV as it runs on this site."""
        return list(argv) if self.wrap is None else list(self.wrap(list(argv)))


def _cidr(address: str) -> str:
    """ADDRESS as a pg_hba address: one host unless it already names a network."""
    if "/" in address:
        return address
    return f"{address}/128" if ":" in address else f"{address}/32"


@dataclass
class Member:
    """One member: its PostgreSQL, its REST API and its Raft node, and where its files are."""

    name: str
    dir: Path
    port: int
    rest_port: int
    raft_port: int
    socket_dir: Path
    site: Site = field(default_factory=Site)
    process: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def datadir(self) -> Path:
        return self.dir / "data"

    @property
    def config_file(self) -> Path:
        return self.dir / "patroni.yml"

    @property
    def log_file(self) -> Path:
        """Patroni's output (appended to across restarts)."""
        return self.dir / "patroni.log"

    @property
    def pg_log_dir(self) -> Path:
        """PostgreSQL's own log (the logging collector)."""
        return self.dir / "pglog"

    @property
    def host(self) -> str:
        return self.site.address

    @property
    def rest_url(self) -> str:
        return f"http://{self.host}:{self.rest_port}"

    @property
    def raft_addr(self) -> str:
        return f"{self.host}:{self.raft_port}"

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def postmaster_pid(self) -> int | None:
        """The postmaster's pid from its pid file, if that process is alive."""
        try:
            pid = int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None
        return pid if _alive(pid) else None

    def socket_conninfo(self, dbname: str = "postgres") -> str:
        """As the OS user over the Unix socket (peer authentication, no password): only for a
        caller that is the members' OS account (:meth:`PatroniCluster.member_conninfo` for
        others)."""
        return f"host={self.socket_dir} port={self.port} dbname={dbname}"


def _alive(pid: int) -> bool:
    """PID runs (a zombie does not: an orphaned postmaster that died waits for init to reap
    it, which may take a while)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] not in ("Z", "X")


def _take_ports(count: int, taken: set[int]) -> list[int]:
    """COUNT free ports of $PGPITR_PORTS, from its top down: pgpitr takes its clusters' ports from
    the bottom up, so that a member stopped for a while keeps its port from them."""
    low, high = port_range()
    found: list[int] = []
    for port in range(high, low - 1, -1):
        if port not in taken and port_is_free(port):
            found.append(port)
            taken.add(port)
            if len(found) == count:
                return found
    raise HarnessError(f"fewer than {count} free ports between {low} and {high}")


class PatroniCluster:
    """Three (or MEMBERS) Patroni members of scope SCOPE under BASE, the leader made by initdb
    or by the custom BOOTSTRAP_METHOD.

    SITES, one per member, put each on a host of its own (:class:`Site`); by default all run
    here on 127.0.0.1.  OS_USER is the account the members run as (their site's wrap makes them
    so) and the PostgreSQL superuser's name; by default the caller's.  When it is another
    account (a root caller's), every directory and file the harness makes for the members is
    that account's, which needs root, and every directory above BASE must let it in.
    CLIENT_ADDRESSES are the addresses, besides 127.0.0.1 and the members', that pg_hba lets
    connect (over TCP, with a password): where the caller reaches a namespaced member from.

    ``start()`` bootstraps and waits for a leader and streaming replicas; ``stop()`` stops every
    process it started, and is safe to call at any point (also after a failed start)."""

    def __init__(
        self,
        base: Path,
        *,
        bindir: Path | str = PG15_BINDIR,
        scope: str = "pgpitr-ha",
        members: int = 3,
        synchronous_mode: bool = False,
        ttl: int = 20,
        loop_wait: int = 1,
        retry_timeout: int = 5,
        parameters: dict[str, Any] | None = None,
        bootstrap_method: dict[str, dict[str, Any]] | None = None,
        sites: list[Site] | None = None,
        os_user: str | None = None,
        client_addresses: Sequence[str] = (),
    ) -> None:
        self.base = Path(base)
        self.bindir = Path(bindir)
        self.scope = scope
        self.synchronous_mode = synchronous_mode
        self.ttl, self.loop_wait, self.retry_timeout = ttl, loop_wait, retry_timeout
        self.extra_parameters = dict(parameters or {})
        #: one custom bootstrap method, its name to its section (``{"pgpitr": {"command":
        #: ...}}``): the leader is made by that command instead of initdb
        self.bootstrap_method = dict(bootstrap_method or {})
        if len(self.bootstrap_method) > 1:
            raise HarnessError("one custom bootstrap method at most")
        sites = list(sites) if sites is not None else [Site() for _ in range(members)]
        if len(sites) != members:
            raise HarnessError(f"{len(sites)} sites for {members} members: one per member")
        self.client_addresses = list(client_addresses)
        self.os_user = os_user or _os_user()
        #: (uid, gid) the members' files are given to; None when they are the caller's own
        self._owner: tuple[int, int] | None = None
        if self.os_user != _os_user():
            try:
                account = pwd.getpwnam(self.os_user)
            except KeyError:
                raise HarnessError(f"no OS account {self.os_user!r}") from None
            self._owner = (account.pw_uid, account.pw_gid)
        #: the members' own PostgreSQL role is their OS account, so that peer auth maps it
        self.superuser = self.os_user
        self.superuser_password = secrets.token_urlsafe(18)
        self.replication_password = secrets.token_urlsafe(18)
        self.rest_username = REST_USER
        self.rest_password = secrets.token_urlsafe(18)
        # Unix socket paths are limited to 107 bytes: the sockets live in a short directory
        self._socket_root = Path(tempfile.mkdtemp(prefix="ha-", dir="/tmp"))
        self._socket_root.chmod(0o755)
        self._own(self._socket_root)
        taken: set[int] = set()
        self.members: list[Member] = []
        for i, site in enumerate(sites, start=1):
            port, rest_port, raft_port = _take_ports(3, taken)
            self.members.append(
                Member(
                    name=f"{scope}-{i}",
                    dir=self.base / f"m{i}",
                    port=port,
                    rest_port=rest_port,
                    raft_port=raft_port,
                    socket_dir=self._socket_root / f"m{i}",
                    site=site,
                )
            )

    # -- credentials, as a test passes them on -------------------------------------------------

    @property
    def rest_auth(self) -> tuple[str, str]:
        return self.rest_username, self.rest_password

    def __repr__(self) -> str:  # never the passwords
        return f"PatroniCluster(scope={self.scope!r}, members={[m.name for m in self.members]})"

    def member(self, name: str) -> Member:
        for m in self.members:
            if m.name == name:
                return m
        raise KeyError(name)

    @property
    def rest_url(self) -> str:
        """The REST base URL of a running member (the first that runs)."""
        for m in self.members:
            if m.running():
                return m.rest_url
        return self.members[0].rest_url

    def conninfo(self, dbname: str = "postgres", **extra: str | int) -> str:
        """libpq multi-host connection string over every member, as the superuser over TCP with
        its password, to whichever is the primary (``target_session_attrs=read-write``)."""
        params: dict[str, str | int] = {
            "host": ",".join(m.host for m in self.members),
            "port": ",".join(str(m.port) for m in self.members),
            "user": self.superuser,
            "password": self.superuser_password,
            "dbname": dbname,
            "target_session_attrs": "read-write",
            "connect_timeout": 2,
        }
        params.update(extra)
        return " ".join(f"{k}={_quote(str(v))}" for k, v in params.items())

    def member_conninfo(self, member: Member, dbname: str = "postgres") -> str:
        """One member over TCP, as the superuser with its password."""
        return (
            f"host={member.host} port={member.port} user={self.superuser} "
            f"password={_quote(self.superuser_password)} dbname={dbname} connect_timeout=2"
        )

    def _harness_conninfo(self, member: Member) -> str:
        """How the harness itself connects to MEMBER: over its socket as before when the caller
        is the members' account, else over TCP with the password (peer authentication would
        take the caller, root say, for a role that does not exist)."""
        if self._owner is None:
            return member.socket_conninfo()
        return self.member_conninfo(member)

    # -- the members' files --------------------------------------------------------------------

    def _own(self, path: Path) -> None:
        """Give PATH to the members' account (when it is not the caller's), so that a member
        running as that account can write where the harness made room for it."""
        if self._owner is not None:
            os.chown(path, *self._owner)

    def _check_reachable(self, path: Path) -> None:
        """Fail at once, rather than after a start's timeout with the reason in a Patroni log,
        when the members' account cannot enter a directory above PATH (a root-only 0700
        temporary directory, say)."""
        if self._owner is None:
            return
        uid, gid = self._owner
        groups = set(os.getgrouplist(self.os_user, gid))
        for parent in path.resolve().parents:
            st = parent.stat()
            if st.st_uid == uid:
                bit = 0o100
            elif st.st_gid in groups:
                bit = 0o010
            else:
                bit = 0o001
            if not st.st_mode & bit:
                raise HarnessError(f"{self.os_user} cannot enter {parent} (mode {st.st_mode:o})")

    # -- configuration ---------------------------------------------------------------------------

    def _config(self, m: Member) -> dict[str, Any]:
        parameters = {
            "wal_level": "replica",
            "hot_standby": "on",
            "wal_log_hints": "on",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "max_connections": 40,
            "wal_keep_size": "64MB",
            "password_encryption": "scram-sha-256",
        }
        parameters.update(self.extra_parameters)
        bootstrap: dict[str, Any] = {
            "dcs": {
                "ttl": self.ttl,
                "loop_wait": self.loop_wait,
                "retry_timeout": self.retry_timeout,
                "maximum_lag_on_failover": 1048576,
                "synchronous_mode": self.synchronous_mode,
                "postgresql": {
                    "use_pg_rewind": True,
                    "use_slots": True,
                    "parameters": parameters,
                },
            },
            "initdb": [{"encoding": "UTF8"}, {"locale": "C"}, "data-checksums"],
        }
        for method, section in self.bootstrap_method.items():
            bootstrap.update({"method": method, method: section})
        return {
            "scope": self.scope,
            "name": m.name,
            "log": {"level": "INFO"},
            "restapi": {
                "listen": f"{m.host}:{m.rest_port}",
                "connect_address": f"{m.host}:{m.rest_port}",
                "authentication": {
                    "username": self.rest_username,
                    "password": self.rest_password,
                },
            },
            "raft": {
                "data_dir": str(m.dir / "raft"),
                "self_addr": m.raft_addr,
                "partner_addrs": [o.raft_addr for o in self.members if o is not m],
            },
            "bootstrap": bootstrap,
            "postgresql": {
                "listen": f"{m.host}:{m.port}",
                "connect_address": f"{m.host}:{m.port}",
                "data_dir": str(m.datadir),
                "bin_dir": str(self.bindir),
                # Patroni writes this file; its default is ~/.pgpass, the account's own
                "pgpass": str(m.dir / "pgpass"),
                "use_unix_socket": True,
                "authentication": {
                    "superuser": {
                        "username": self.superuser,
                        "password": self.superuser_password,
                    },
                    "replication": {
                        "username": REPLICATION_USER,
                        "password": self.replication_password,
                    },
                },
                "basebackup": [{"checkpoint": "fast"}],
                "parameters": {
                    "unix_socket_directories": str(m.socket_dir),
                    "logging_collector": "on",
                    "log_directory": str(m.pg_log_dir),
                    "log_filename": "postgresql.log",
                    "shared_buffers": "16MB",
                },
                "pg_hba": self._pg_hba(),
            },
            "tags": {"nofailover": False, "noloadbalance": False, "clonefrom": False},
        }

    def _pg_hba(self) -> list[str]:
        """Peer authentication over the sockets; a password over TCP from 127.0.0.1, from every
        member's address (replication, pg_rewind) and from the caller's CLIENT_ADDRESSES."""
        members = list(dict.fromkeys(["127.0.0.1/32", *(_cidr(m.host) for m in self.members)]))
        clients = list(dict.fromkeys([*members, *(_cidr(a) for a in self.client_addresses)]))
        return [
            "local all all peer",
            "local replication all peer",
            *(f"host replication {REPLICATION_USER} {a} scram-sha-256" for a in members),
            *(f"host all all {a} scram-sha-256" for a in clients),
        ]

    def _write_config(self, m: Member) -> None:
        for directory in (m.dir, m.socket_dir, m.pg_log_dir):
            directory.mkdir(parents=True, exist_ok=True)
            self._own(directory)
        m.config_file.write_text(yaml.safe_dump(self._config(m), sort_keys=False))
        m.config_file.chmod(0o600)  # it holds the passwords
        self._own(m.config_file)
        m.log_file.touch()
        self._own(m.log_file)

    # -- processes ----------------------------------------------------------------------------

    def _spawn(self, m: Member) -> None:
        """Start M's Patroni through its site's wrap: the process started is Patroni itself
        (the wrap execs it), which the harness signals to stop or crash the member."""
        if m.running():
            raise HarnessError(f"{m.name}'s Patroni already runs")
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
        if self._owner is not None:  # the account's own, not the caller's (root's HOME)
            home = pwd.getpwnam(self.os_user).pw_dir
            env.update(HOME=home, USER=self.os_user, LOGNAME=self.os_user)
        with open(m.log_file, "ab") as log:
            m.process = subprocess.Popen(
                m.site.command([*PATRONI, str(m.config_file)]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=m.dir,
                # its own session: a signal to the test's terminal does not reach it
                start_new_session=True,
                env=env,
            )

    def start(self, timeout: float = 120) -> PatroniCluster:
        """Bootstrap all members together; return once a leader runs and every replica
        streams."""
        self.base.mkdir(parents=True, exist_ok=True)
        self._check_reachable(self.base)
        self._own(self.base)
        for m in self.members:
            self._write_config(m)
        for m in self.members:
            self._spawn(m)
        self.wait_streaming(timeout=timeout)
        return self

    def stop(self, timeout: float = 20, graceful: bool = True) -> None:
        """Stop every member and every process the harness started; safe to call at any point.

        Graceful: SIGTERM to each Patroni, which stops its PostgreSQL (a synchronous standby
        first waits for the leader to release it: several seconds).  Not graceful (a teardown,
        where the data is thrown away): SIGKILL to each Patroni, then a fast shutdown of each
        PostgreSQL.  Either way, after TIMEOUT s whatever remains, Patroni or postmaster and
        its children, is killed."""
        deadline = time.monotonic() + timeout
        for m in self.members:
            if m.running():
                with contextlib.suppress(ProcessLookupError):
                    m.process.send_signal(signal.SIGTERM if graceful else signal.SIGKILL)
        for m in self.members:
            if m.process is None:
                continue
            try:
                m.process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                m.process.kill()
                m.process.wait(timeout=10)
        for m in self.members:
            self._kill_postgres(m, signal.SIGINT, children=False)  # fast shutdown
        while any(m.postmaster_pid() for m in self.members) and time.monotonic() < deadline:
            time.sleep(0.05)
        for m in self.members:
            self._kill_postgres(m, signal.SIGKILL)
        stragglers = time.monotonic() + 10
        while any(m.postmaster_pid() for m in self.members) and time.monotonic() < stragglers:
            time.sleep(0.05)
        shutil.rmtree(self._socket_root, ignore_errors=True)

    def __enter__(self) -> PatroniCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @staticmethod
    def _kill_postgres(m: Member, sig: int, children: bool = True) -> None:
        """SIG to the member's postmaster and, at once, to all its CHILDREN."""
        import psutil  # Patroni's dependency

        pid = m.postmaster_pid()
        if pid is None:
            return
        try:
            postmaster = psutil.Process(pid)
            others = postmaster.children(recursive=True) if children else []
        except psutil.Error:
            return
        for process in [postmaster, *others]:
            with contextlib.suppress(psutil.Error):
                process.send_signal(sig)

    def crash_leader(self) -> Member:
        """Simulate the leader's node crashing: SIGKILL its Patroni and, at once, its postmaster
        and all its backends.  Return the old leader."""
        leader = self.leader()
        pid = leader.postmaster_pid()
        if leader.process is not None:
            leader.process.kill()
        if pid is not None:
            self._kill_postgres(leader, signal.SIGKILL)
        if leader.process is not None:
            leader.process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while leader.postmaster_pid() is not None:
            if time.monotonic() > deadline:
                raise HarnessError(f"{leader.name}'s postmaster survived SIGKILL")
            time.sleep(0.05)
        return leader

    def restart_member(self, member: Member, timeout: float = 90) -> Member:
        """Start MEMBER's Patroni again (after a crash or a stop): it rejoins as a replica
        (pg_rewind if it diverged); return once it streams from the leader."""
        if member.running():
            raise HarnessError(f"{member.name}'s Patroni still runs")
        self._spawn(member)
        self.wait_streaming(timeout=timeout, members=[member])
        return member

    # -- the REST API -------------------------------------------------------------------------

    def api(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        member: Member | None = None,
        auth: bool = True,
        timeout: float = 10,
    ) -> tuple[int, Any]:
        """One request to MEMBER's REST API (any running member's); (status, body): the body is
        parsed JSON when it is JSON, else text."""
        url = (member.rest_url if member else self.rest_url) + path
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        if auth:
            token = base64.b64encode(f"{self.rest_username}:{self.rest_password}".encode())
            request.add_header("Authorization", f"Basic {token.decode()}")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, raw = response.status, response.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        text = raw.decode(errors="replace")
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def cluster_state(self, member: Member | None = None) -> dict[str, Any]:
        """``GET /cluster`` from MEMBER, or from the first member that answers."""
        errors = []
        for m in [member] if member else [m for m in self.members if m.running()]:
            try:
                status, body = self.api("GET", "/cluster", member=m, auth=False, timeout=3)
            except OSError as e:
                errors.append(f"{m.name}: {e}")
                continue
            if status == 200 and isinstance(body, dict):
                return body
            errors.append(f"{m.name}: {status} {body!r}")
        raise HarnessError(f"no member answered GET /cluster: {errors}")

    def patroni_status(self, member: Member) -> dict[str, Any]:
        """``GET /patroni`` of MEMBER."""
        return self.api("GET", "/patroni", member=member, auth=False)[1]

    def dcs_config(self) -> dict[str, Any]:
        """The dynamic configuration (``GET /config``)."""
        status, body = self.api("GET", "/config", auth=False)
        if status != 200:
            raise HarnessError(f"GET /config: {status} {body!r}")
        return body

    def patch_config(self, patch: dict[str, Any]) -> dict[str, Any]:
        """``PATCH /config`` (authenticated); the new dynamic configuration."""
        status, body = self.api("PATCH", "/config", patch)
        if status != 200:
            raise HarnessError(f"PATCH /config: {status} {body!r}")
        return body

    def _members_by_role(self, state: dict[str, Any]) -> tuple[Member | None, list[Member]]:
        leader, replicas = None, []
        for entry in state.get("members", []):
            try:
                m = self.member(entry["name"])
            except KeyError:
                continue
            if entry.get("role") == "leader" and entry.get("state") == "running":
                leader = m
            elif entry.get("role") in ("replica", "sync_standby", "quorum_standby"):
                replicas.append(m)
        return leader, replicas

    def leader(self) -> Member:
        leader, _ = self._members_by_role(self.cluster_state())
        if leader is None:
            raise HarnessError(f"no running leader: {self.cluster_state()}")
        return leader

    def replicas(self) -> list[Member]:
        return self._members_by_role(self.cluster_state())[1]

    def until(self, what: str, probe, timeout: float, interval: float = 0.2):
        """PROBE()'s first true result, polled every INTERVAL s; HarnessError (with the
        cluster's state) after TIMEOUT s."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while True:
            try:
                result = probe()
            except (HarnessError, OSError) as e:
                result, last = None, e
            if result:
                return result
            if time.monotonic() > deadline:
                try:
                    last = self.cluster_state()
                except HarnessError as e:
                    last = e
                raise HarnessError(f"{what} within {timeout:.0f} s; last seen: {last}")
            time.sleep(interval)

    def wait_for_leader(self, not_name: str | None = None, timeout: float = 60) -> Member:
        """The leader once one runs (one other than NOT_NAME, if given) and accepts writes."""

        def probe() -> Member | None:
            leader, _ = self._members_by_role(self.cluster_state())
            if leader is None or leader.name == not_name:
                return None
            return leader if self._writable(leader) else None

        why = f"a writable leader other than {not_name}" if not_name else "a writable leader"
        return self.until(why, probe, timeout)

    def _writable(self, m: Member) -> bool:
        import psycopg

        try:
            with psycopg.connect(
                self._harness_conninfo(m), connect_timeout=2, autocommit=True
            ) as c:
                return c.execute("select not pg_is_in_recovery()").fetchone()[0]
        except psycopg.Error:
            return False

    def wait_streaming(
        self, timeout: float = 60, max_lag: int = 1024 * 1024, members: list[Member] | None = None
    ) -> Member:
        """Wait until a leader runs and every running member (or MEMBERS) but it is a replica in
        state "streaming" with a lag of at most MAX_LAG bytes; return the leader."""

        def probe() -> Member | None:
            state = self.cluster_state()
            leader, _ = self._members_by_role(state)
            if leader is None:
                return None
            expected = {m.name for m in (members or self.members) if m.running()}
            expected.discard(leader.name)
            streaming = {
                e["name"]
                for e in state.get("members", [])
                if e.get("state") == "streaming"
                and isinstance(e.get("lag", 0), int)
                and e.get("lag", 0) <= max_lag
            }
            return leader if expected <= streaming else None

        return self.until("a leader and streaming replicas", probe, timeout)

    def switchover(self, candidate: Member | None = None, timeout: float = 60) -> Member:
        """Switch the leader over (``POST /switchover``, authenticated) to CANDIDATE or to the
        replica Patroni picks; return the new leader once it accepts writes."""
        old = self.leader()
        body: dict[str, Any] = {"leader": old.name}
        if candidate is not None:
            body["candidate"] = candidate.name
        status, answer = self.api("POST", "/switchover", body, member=old, timeout=timeout)
        if status != 200:
            raise HarnessError(f"POST /switchover {body}: {status} {answer!r}")
        return self.wait_for_leader(not_name=old.name, timeout=timeout)

    def patronictl(self, *args: str, check: bool = True, timeout: float = 60):
        """Run ``patronictl -c <a member's config> ARGS``; the CompletedProcess.

        It runs here, as the caller, whatever the members' sites: a Raft client of every
        member's ``raft_addr`` and a client of their REST APIs, all over their addresses."""
        config = next((m for m in self.members if m.running()), self.members[0]).config_file
        result = subprocess.run(
            [str(PATRONICTL), "-c", str(config), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and result.returncode != 0:
            raise HarnessError(
                f"patronictl {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def logs(self, tail: int = 40) -> str:
        """The last TAIL lines of every member's Patroni log (for a failing test's report)."""
        out = []
        for m in self.members:
            try:
                lines = m.log_file.read_text(errors="replace").splitlines()[-tail:]
            except OSError:
                lines = ["(no log)"]
            out.append(f"--- {m.name} ({m.log_file})\n" + "\n".join(lines))
        return "\n".join(out)


def _quote(value: str) -> str:
    if value and all(c not in value for c in " '\\"):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
