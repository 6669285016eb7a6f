"""A local PostgreSQL cluster: one facade over state, configuration and postmaster.

A cluster is *created* (pgpitr ran initdb and owns its configuration files) or *registered*
(someone else's server, ``pgpitr cluster register``).  The facade hides the difference from the
operations: ``state.datadir``/``socket_dir``/``port`` are the server's own, connections and
client programs act as the server's OS user (peer authentication as its superuser role), and
the archive command is set with ``ALTER SYSTEM`` instead of in pgpitr's managed file.  A
registered server is started, stopped or restarted only when asked explicitly, and never
removed.
"""

from __future__ import annotations

import os
import pwd
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from pgpitr import state as st
from pgpitr.errors import AlreadyExists, ClusterStateError, CommandError, InvalidInput, NotFound
from pgpitr.postgres import binaries, conf
from pgpitr.postgres.command import OsUser, initdb_command, pg_ctl_command, run
from pgpitr.postgres.osuser import acting_as, check_reachable, make_dir, server_user
from pgpitr.postgres.ports import free_port, port_is_free
from pgpitr.postgres.postmaster import pg_ctlcluster, remove_stale_locks, running_pid
from pgpitr.repository.url import RepositoryUrl

if TYPE_CHECKING:
    from pgpitr.patroni.members import Member

SUPERUSER = "postgres"


def validate_name(name: str) -> None:
    if not st.NAME_RULE.fullmatch(name or ""):
        raise InvalidInput(f"invalid cluster name {name!r}: use {st.NAME_RULE_TEXT}")


class Cluster:
    def __init__(self, state: st.ClusterState) -> None:
        self.state = state
        #: An HA cluster's members as Patroni described them when this was looked up (None:
        #: not HA, or Patroni did not answer: then ``ha_problem`` says why, and the primary
        #: last seen stands in)
        self.members: list[Member] | None = None
        self.ha_problem = ""
        #: the other pgpitr host whose member is the primary now ("": this host's, or unknown)
        self.primary_host = ""

    # -- lookup ------------------------------------------------------------------------------
    @classmethod
    def get(cls, name: str, home: Path | None = None) -> Cluster:
        validate_name(name)
        try:
            cluster = cls(st.ClusterState.load(name, home))
        except FileNotFoundError:
            raise NotFound(
                f"cluster {name!r} does not exist", hint="see `pgpitr cluster list`"
            ) from None
        cluster.follow_primary()
        return cluster

    @classmethod
    def all(cls, home: Path | None = None) -> list[Cluster]:
        base = st.clusters_dir(home)
        if not base.is_dir():
            return []
        found = []
        for path in sorted(base.iterdir()):
            if (path / "cluster.json").exists():
                cluster = cls(st.ClusterState.load(path.name, home))
                cluster.follow_primary()
                found.append(cluster)
        return found

    def follow_primary(self) -> None:
        """An HA cluster: act on the member that is primary now (pgpitr/postgres/ha.py)."""
        if self.state.is_ha:
            from pgpitr.postgres import ha

            ha.follow_primary(self)

    def require_primary(self) -> None:
        """Refuse to act on a server that is not the primary now (pgpitr/postgres/ha.py)."""
        from pgpitr.postgres import ha

        ha.require_primary(self)

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def user(self) -> OsUser:
        entry = pwd.getpwnam(self.state.os_user)
        return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)

    @property
    def owner(self) -> tuple[int, int] | None:
        user = self.user
        return None if user.is_self else (user.uid, user.gid)

    @property
    def bindir(self) -> Path:
        return Path(self.state.bindir)

    @property
    def registered(self) -> bool:
        return self.state.registered

    @property
    def client_user(self) -> OsUser | None:
        """Whom connections and client programs (pg_basebackup, psql) act as: nobody special
        for a created cluster (its pg_ident.conf maps root and pgpitr's user), the server's OS
        user for a registered one (its own peer authentication)."""
        return self.user if self.registered else None

    @property
    def superuser(self) -> str:
        return self.state.superuser or SUPERUSER

    # -- creation ----------------------------------------------------------------------------
    @classmethod
    def prepare(
        cls, name: str, *, port: int | None, repository: RepositoryUrl, created: str, bindir: Path
    ) -> Cluster:
        """Allocate the directories and state of a new cluster (its data directory is empty),
        to be run by the binaries in ``bindir``."""
        validate_name(name)
        home = st.home()
        if (st.clusters_dir(home) / name).exists():
            raise AlreadyExists(f"cluster {name!r} already exists")
        user = server_user()
        make_dir(home, user, 0o755)
        check_reachable(user, home)
        if port is None:
            port = free_port({c.state.port for c in cls.all(home)})
        elif not 1024 <= port <= 65535:
            raise InvalidInput(f"port {port} is out of range 1024-65535")
        elif not port_is_free(port):
            raise AlreadyExists(f"port {port} is in use", hint="omit --port to get a free one")
        state = st.ClusterState(
            name=name,
            platform="local",
            port=port,
            repository=repository,
            bindir=str(bindir),
            pg_version=binaries.major_of(bindir),
            os_user=user.name,
            created=created,
            home=str(home),
        )
        make_dir(state.dir, user, 0o750)
        for sub in ("log", "spool"):
            make_dir(state.dir / sub, user, 0o750)
        make_dir(state.socket_dir, user, 0o700)
        make_dir(state.datadir, user, 0o700)
        state.save()
        return cls(state)

    def initdb(self) -> None:
        run(
            initdb_command(self.bindir, self.state.datadir, superuser=SUPERUSER),
            user=self.user,
            timeout=300,
        )

    def configure(self, *, archive: str) -> None:
        """Write every file pgpitr manages in the data directory."""
        self.refuse_if_registered("rewrite the configuration files of")
        datadir = self.state.datadir
        owner = self.owner
        conf.ensure_include(datadir, owner)
        settings = conf.managed_settings(
            port=self.state.port, socket_dir=self.state.socket_dir, archive=archive
        )
        conf.write_file(datadir / conf.MANAGED, conf.render(settings), owner)
        conf.write_file(datadir / "pg_hba.conf", conf.hba(self.superuser), owner)
        admins = ["root", pwd.getpwuid(os.geteuid()).pw_name, self.state.os_user]
        conf.write_file(datadir / "pg_ident.conf", conf.ident(admins, self.superuser), owner)

    def remove(self) -> None:
        """Stop the server if it runs and remove everything under the cluster's directory."""
        self.refuse_if_registered("remove")
        if self.is_running():
            self.stop(mode="immediate")
        shutil.rmtree(self.state.dir, ignore_errors=True)

    # -- postmaster --------------------------------------------------------------------------
    def pid(self) -> int | None:
        """The postmaster's pid, checked against the live process, or None."""
        return running_pid(self.state.datadir)

    def is_running(self) -> bool:
        return self.pid() is not None

    def remove_stale_pidfile(self) -> bool:
        """Remove the lock files (postmaster.pid, the socket's ``.s.PGSQL.PORT.lock``) of a
        created cluster whose postmaster is dead for sure (no such process, a zombie, or a
        process that is no postgres: its pid reused after a reboot), which would make
        PostgreSQL refuse to start; True when any was removed.  A pid whose process cannot be
        read counts as alive: a second postmaster would corrupt the data."""
        if self.registered:
            return False
        return remove_stale_locks(self.state.datadir, self.state.socket_dir)

    def refuse_if_registered(self, what: str) -> None:
        if self.registered:
            raise ClusterStateError(
                f"cluster {self.name!r} is a registered server: pgpitr does not {what} it",
                hint=f"`pgpitr cluster unregister {self.name}` stops protecting it",
            )

    def _require_force(self, action: str, force: bool) -> None:
        if self.registered and not force:
            raise ClusterStateError(
                f"cluster {self.name!r} is a registered server (someone else's): pgpitr does not "
                f"{action} it unless told to",
                hint=f"pass --force to {action} it anyway",
            )

    def _pg_ctlcluster(self, action: str, timeout: int = 120) -> None:
        pg_ctlcluster(self.state.debian_cluster, action, timeout)

    def start(
        self,
        timeout: int = 120,
        *,
        force: bool = False,
        move_if_port_taken: bool = False,
        by_operator: bool = False,
    ) -> None:
        """Start the server (a registered one only with ``force``).  ``move_if_port_taken`` (for
        a port pgpitr chose): when another process took the port between the choice and the
        start, move to a free one and retry.  ``by_operator``: the operator's ``cluster start``,
        which also ends a stop of theirs (the agent starts the cluster after a reboot again)."""
        if by_operator and self.state.stopped_by_operator:
            self.state.stopped_by_operator = False
            self.state.save()
        if self.is_running():
            return
        self._require_force("start", force)
        tried_again = False
        for _ in range(3):
            try:
                self._start(timeout)
                return
            except ClusterStateError:
                if not move_if_port_taken or self.registered:
                    raise
                if port_is_free(self.state.port):
                    # free again already (the other server was a short-lived one), or the start
                    # failed for another reason: one more try on the same port tells which
                    if tried_again:
                        raise
                    tried_again = True
                    continue
            taken = {c.state.port for c in Cluster.all(Path(self.state.home))} | {self.state.port}
            self.state.port = free_port(taken)
            self.state.save()
            conf.set_managed(self.state.datadir, self.owner, port=self.state.port)
        self._start(timeout)

    def _start(self, timeout: int) -> None:
        if self.is_running():
            return
        if self.state.debian_cluster:
            self._pg_ctlcluster("start", timeout)
            return
        argv = pg_ctl_command(
            self.bindir, "start", self.state.datadir, log=self.state.log_file, timeout=timeout
        )
        try:
            run(argv, user=self.user, timeout=timeout + 10)
        except CommandError as exc:
            raise ClusterStateError(
                f"cluster {self.name!r} did not start:\n{self.log_tail()}",
                hint=f"see {self.state.log_file}",
            ) from exc

    def stop(self, mode: str = "fast", *, force: bool = False, by_operator: bool = False) -> None:
        """Stop the server (a registered one only with ``force``).  ``by_operator``: the
        operator's ``cluster stop``, remembered so that the agent does not start it again."""
        if by_operator and not self.registered and not self.state.stopped_by_operator:
            self.state.stopped_by_operator = True
            self.state.save()
        if not self.is_running():
            return
        self._require_force("stop", force)
        if self.state.debian_cluster:
            self._pg_ctlcluster("stop")
            return
        try:
            run(pg_ctl_command(self.bindir, "stop", self.state.datadir, mode=mode), user=self.user)
        except CommandError:
            if self.is_running():
                raise
            # it ended by itself meanwhile: a server that failed to start, or was killed

    def restart(self, timeout: int = 120) -> None:
        """Restart the server (fast shutdown): ``pg_ctlcluster`` for a Debian cluster."""
        if self.state.debian_cluster:
            self._pg_ctlcluster("restart", timeout)
        else:
            argv = pg_ctl_command(
                self.bindir,
                "restart",
                self.state.datadir,
                log=self.state.log_file,
                timeout=timeout,
            )
            run(argv, user=self.user, timeout=timeout + 10)
        self.wait_ready()

    def change_settings(self, settings: dict[str, str | None]) -> None:
        """Set each setting (None: back to the server's own), in effect once this returns:
        through Patroni's dynamic configuration for an HA cluster (pgpitr/patroni), else
        ``ALTER SYSTEM SET`` (``RESET`` for None) and a reload."""
        if self.state.is_ha:
            from pgpitr import patroni

            patroni.change_settings(self.state, self.connect, settings)
            return
        from psycopg import sql

        with self.connect() as db:
            for name, value in settings.items():
                if value is None:
                    db.execute(sql.SQL("ALTER SYSTEM RESET {}").format(sql.Identifier(name)))
                else:
                    db.execute(
                        sql.SQL("ALTER SYSTEM SET {} = {}").format(
                            sql.Identifier(name), sql.Literal(value)
                        )
                    )
            db.execute("SELECT pg_reload_conf()")

    def set_archive_command(self, command: str) -> None:
        """The archive command, in effect once this returns: pgpitr's managed file for a created
        cluster, ``ALTER SYSTEM`` for a registered one (never someone else's files)."""
        if self.registered:
            self.change_settings({"archive_command": command})
            return
        self.configure(archive=command)
        self.reload()

    def reload(self) -> None:
        with self.connect() as db:
            db.execute("SELECT pg_reload_conf()")

    def log_tail(self, lines: int = 8) -> str:
        try:
            text = self.state.log_file.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return "(no server log)"
        return "\n".join("    " + line for line in text[-lines:])

    def require_running(self) -> None:
        if not self.is_running():
            raise ClusterStateError(
                f"cluster {self.name!r} is not running",
                hint=f"start it with `pgpitr cluster start {self.name}`",
            )

    # -- connections -------------------------------------------------------------------------
    def conninfo(self, dbname: str = "postgres") -> dict:
        return {
            "host": str(self.state.socket_dir),
            "port": self.state.port,
            "user": self.superuser,
            "dbname": dbname,
        }

    def client_options(self) -> list[str]:
        """The same administrator connection as ``conninfo``, as a client program's options
        (psql, pg_amcheck)."""
        info = self.conninfo()
        return ["--host", info["host"], "--port", str(info["port"]), "--username", info["user"]]

    @contextmanager
    def connect(self, dbname: str = "postgres", timeout: int = 10) -> Iterator:
        import psycopg

        try:
            with acting_as(self.client_user):
                conn = psycopg.connect(
                    **self.conninfo(dbname),
                    autocommit=True,
                    connect_timeout=timeout,
                    application_name="pgpitr",
                )
        except psycopg.OperationalError as exc:
            # a running server that refuses (starting up, too many clients) may accept later
            raise ClusterStateError(
                f"cannot connect to cluster {self.name!r}: {exc}", transient=self.is_running()
            ) from None
        with conn:
            yield conn

    def wait_ready(self, timeout: float = 60) -> None:
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                with acting_as(self.client_user):
                    conn = psycopg.connect(**self.conninfo(), connect_timeout=2)
                conn.close()
                return
            except psycopg.OperationalError:
                if time.monotonic() > deadline or not self.is_running():
                    raise ClusterStateError(
                        f"cluster {self.name!r} does not accept connections:\n{self.log_tail()}"
                    ) from None
                time.sleep(0.2)

    # -- control data ------------------------------------------------------------------------
    def control_data(self) -> dict[str, str]:
        out = run(
            [self.bindir / "pg_controldata", "-D", self.state.datadir], env={"LC_ALL": "C"}
        ).stdout
        return dict(
            (k.strip(), v.strip())
            for k, _, v in (line.partition(":") for line in out.splitlines())
            if k
        )

    def configured(self, setting: str) -> str:
        """The value a setting would take from the configuration files, read by the server
        itself (``postgres -C``) without starting it: includes, the last value and
        postgresql.auto.conf all count as they will at start."""
        argv = [self.bindir / "postgres", "-D", self.state.datadir, "-C", setting]
        return run(argv, user=self.user, env={"LC_ALL": "C"}).stdout.rstrip("\n")

    def refresh_identity(self) -> None:
        data = self.control_data()
        self.state.system_identifier = data["Database system identifier"]
        self.state.wal_segment_size = int(data["Bytes per WAL segment"])
        self.state.pg_version = binaries.major_of(self.bindir)
        self.state.save()
