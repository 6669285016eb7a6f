"""Finding and checking the running server that ``register`` protects: what it was asked
(``RegisterRequest``), where the server is and how it runs (``Server``), and the settings it reads
before it changes anything (``Settings``).  Nothing here changes the server.
"""

from __future__ import annotations

import dataclasses
import os
import pwd
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pgpitr import cluster_repository
from pgpitr import state as st
from pgpitr.errors import (
    AlreadyExists,
    ClusterStateError,
    InvalidInput,
    NotFound,
)
from pgpitr.operations import create
from pgpitr.operations.register import ha
from pgpitr.osutil import process_alive
from pgpitr.patroni.members import stderr_file
from pgpitr.postgres import binaries
from pgpitr.postgres.cluster import Cluster, validate_name
from pgpitr.postgres.command import controldata_command, run
from pgpitr.privilege import account_name
from pgpitr.repository import RepositoryUrl, open_repository
from pgpitr.wal import archive

#: What registration changes, and so what unregistration puts back.
CHANGED = ("archive_command", "archive_timeout")
ARCHIVE_TIMEOUT = "60"
_DEBIAN_CONF = re.compile(r"^/etc/postgresql/(\d+)/([^/]+)$")
_DATA_DIRECTORY = re.compile(r"^\s*data_directory\s*=\s*'((?:[^']|'')*)'", re.MULTILINE)


@dataclass(frozen=True)
class RegisterRequest:
    """What ``cluster register`` was asked for, checked once at the edge."""

    name: str
    pgdata: str
    bindir: str | None = None
    socket_dir: str | None = None
    port: int | None = None
    os_user: str | None = None
    backup_repo: RepositoryUrl | None = None
    restart: bool = False
    #: a Patroni member's REST API: the whole HA cluster, its members found from there
    patroni: str | None = None

    def as_parameters(self) -> dict[str, Any]:
        """The register-cluster flow's parameters: JSON, so the repository as its text."""
        url = self.backup_repo
        return {**vars(self), "backup_repo": None if url is None else str(url)}

    @classmethod
    def parse(
        cls,
        name: str,
        pgdata: str,
        bindir: str | None = None,
        socket_dir: str | None = None,
        port: int | None = None,
        os_user: str | None = None,
        backup_repo: str | None = None,
        restart: bool = False,
        patroni: str | None = None,
    ) -> RegisterRequest:
        """The checks that need no server: the name is valid and free, the path holds a
        cluster (or the Patroni address reads), a given bindir is of the cluster's major, the
        port and the repository URL read."""
        validate_name(name)
        create.require_idle_name(name)
        ha.refuse_both(pgdata, patroni)
        if port is not None and not 1 <= port <= 65535:
            raise InvalidInput(f"port {port} is out of range 1-65535")
        url = RepositoryUrl.parse_optional(backup_repo)
        patroni = ha.parse_url(patroni)
        if not patroni:
            datadir, _config = locate(Path(pgdata))
            if bindir:
                binaries.resolve(major_of_datadir(datadir), bindir)
        return cls(
            name,
            pgdata or "",
            bindir or None,
            socket_dir or None,
            port,
            os_user or None,
            url,
            restart,
            patroni,
        )


@dataclass(frozen=True)
class Server:
    """A running server, as found on this host (read only)."""

    datadir: str
    config_dir: str  # Debian's /etc/postgresql/N/NAME, or ""
    debian_cluster: str  # "N/NAME" for pg_ctlcluster, or ""
    pid: int
    port: int
    socket_dir: str
    major: int
    bindir: str
    os_user: str
    system_identifier: str
    wal_segment_size: int
    server_log: str  # where the postmaster's stderr goes, when it is a file
    #: a Patroni cluster's: its REST API, scope and members' placements (the primary's above)
    patroni_url: str = ""
    patroni_scope: str = ""
    members: tuple[dict[str, Any], ...] = ()
    #: what Patroni says of the members on other hosts (``Member``'s fields), whose hosts
    #: keep the cluster too: their placements join ``members`` once they do
    members_elsewhere: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True)
class Settings:
    """The server's settings that registration reads; ``previous`` is what it will change."""

    superuser: str
    archive_mode: str
    previous: dict[str, dict[str, Any]] = field(default_factory=dict)


# -- finding the server ----------------------------------------------------------------------


def locate(path: Path) -> tuple[Path, Path | None]:
    """The data directory and the configuration directory (Debian's, or None) of PATH, which
    names either."""
    path = Path(os.path.abspath(path))
    if not path.is_dir():
        raise NotFound(
            f"{path} does not exist or is not a directory",
            hint="pass the server's data directory (or Debian's /etc/postgresql/N/NAME)",
        )
    try:
        if (path / "PG_VERSION").exists():
            return path, _config_dir_of(path)
    except PermissionError:  # a data directory (mode 0700) of another account
        refuse_another_account(path, path.stat().st_uid)
    conf_file = path / "postgresql.conf"
    if conf_file.exists():
        found = _DATA_DIRECTORY.search(conf_file.read_text(errors="replace"))
        if found:
            datadir = Path(found.group(1).replace("''", "'"))
            if (datadir / "PG_VERSION").exists():
                return datadir, path
            raise NotFound(
                f"{conf_file} names the data directory {datadir}, which holds no cluster",
            )
    raise NotFound(
        f"no PostgreSQL cluster in {path}: no PG_VERSION, nor a postgresql.conf naming a "
        "data_directory",
        hint="pass the server's data directory (or Debian's /etc/postgresql/N/NAME)",
    )


def refuse_another_account(datadir: Path, uid: int) -> None:
    """pgpitr acts only on servers of the account it runs as (peer authentication, the archive
    and restore commands the server runs): another account's is refused with what to do."""
    if os.geteuid() in (0, uid):
        return
    me, owner = account_name(os.geteuid()), account_name(uid)
    raise ClusterStateError(
        f"the server of {datadir} runs as {owner}, and pgpitr runs as {me}: pgpitr acts only "
        "on servers of the account it runs as",
        hint=f"protect it with pgpitr run as {owner}, in a home of its own: `sudo -u {owner} "
        f"PGPITR_HOME=DIR pgpitr cluster register NAME --pgdata {datadir}` (docs/security.md)",
    )


def _config_dir_of(datadir: Path) -> Path | None:
    """Where a data directory's configuration lives when it is not inside it: from the running
    server's command line (postmaster.opts), else Debian's /etc/postgresql/*/*."""
    try:
        opts = (datadir / "postmaster.opts").read_text()
        found = re.search(r'"-c" "config_file=([^"]+)"', opts)
        if found:
            return Path(found.group(1)).parent
    except OSError:
        pass
    for conf_file in sorted(Path("/etc/postgresql").glob("*/*/postgresql.conf")):
        named = _DATA_DIRECTORY.search(conf_file.read_text(errors="replace"))
        if named and Path(named.group(1)) == datadir:
            return conf_file.parent
    return None


def major_of_datadir(datadir: Path) -> int:
    text = (datadir / "PG_VERSION").read_text().strip()
    try:
        return int(text.split(".")[0])
    except ValueError:
        raise ClusterStateError(f"cannot read {datadir / 'PG_VERSION'}: {text!r}") from None


def _postmaster(datadir: Path) -> tuple[int, list[str]]:
    """The live postmaster's pid and postmaster.pid's lines; refuse a stopped server."""
    stopped = ClusterStateError(
        f"the server of {datadir} is not running",
        hint="start it first; pgpitr registers a running server",
    )
    try:
        lines = (datadir / "postmaster.pid").read_text().split("\n")
        pid = int(lines[0])
    except (OSError, ValueError):
        raise stopped from None
    try:
        alive = b"postgres" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        alive = False
    if not (alive and process_alive(pid)):
        raise stopped
    return pid, lines


def find_server(request: RegisterRequest) -> Server:
    """Everything about the running server that needs no connection; a Patroni cluster's
    primary, with its members."""
    if request.patroni:
        found = ha.find_members(request.patroni)
        server = find_server(ha.request_for_primary(request, found.primary))
        identifier = found.system_identifier
        if identifier and identifier != server.system_identifier:
            raise ClusterStateError(
                f"Patroni at {request.patroni} reports system identifier {identifier}, its "
                f"primary's data directory {server.datadir} {server.system_identifier}",
            )
        return dataclasses.replace(
            server,
            server_log=server.server_log or found.primary["server_log"],
            patroni_url=request.patroni,
            patroni_scope=found.scope,
            members=found.here,
            members_elsewhere=tuple(asdict(m) for m in found.elsewhere),
        )
    create.require_idle_name(request.name)
    datadir, config_dir = locate(Path(request.pgdata))
    pid, lines = _postmaster(datadir)
    major = major_of_datadir(datadir)
    bindir = binaries.resolve(major, request.bindir)
    port = request.port or int(lines[3])
    socket_dir = request.socket_dir or (lines[4].strip() if len(lines) > 4 else "")
    if not socket_dir:
        raise ClusterStateError(
            f"the server of {datadir} listens on no Unix socket",
            hint="pass --socket-dir with one of its unix_socket_directories",
        )
    os_user = request.os_user or pwd.getpwuid(datadir.stat().st_uid).pw_name
    try:
        entry = pwd.getpwnam(os_user)
    except KeyError:
        raise InvalidInput(f"the OS user {os_user!r} does not exist") from None
    if entry.pw_uid == 0:
        raise InvalidInput(f"the OS user {os_user!r} is root; PostgreSQL never runs as root")
    refuse_another_account(datadir, entry.pw_uid)
    control = _control_data(bindir, datadir)
    system_identifier = control["Database system identifier"]
    for other in Cluster.all():
        if other.state.system_identifier == system_identifier:
            raise AlreadyExists(
                f"the server in {datadir} (system identifier {system_identifier}) is already "
                f"protected by pgpitr as cluster {other.name!r}",
                hint=f"see `pgpitr cluster describe {other.name}`",
            )
    debian = _DEBIAN_CONF.match(str(config_dir)) if config_dir else None
    return Server(
        datadir=str(datadir),
        config_dir=str(config_dir or ""),
        debian_cluster=f"{debian.group(1)}/{debian.group(2)}" if debian else "",
        pid=pid,
        port=port,
        socket_dir=socket_dir,
        major=major,
        bindir=str(bindir),
        os_user=os_user,
        system_identifier=system_identifier,
        wal_segment_size=int(control["Bytes per WAL segment"]),
        server_log=stderr_file(pid),
    )


def _control_data(bindir: Path, datadir: Path) -> dict[str, str]:
    out = run(controldata_command(bindir, datadir), env={"LC_ALL": "C"}).stdout
    return {
        k.strip(): v.strip()
        for k, _, v in (line.partition(":") for line in out.splitlines())
        if k.strip()
    }


def state_of(
    name: str, server: Server, repository: RepositoryUrl, superuser: str
) -> st.ClusterState:
    return st.ClusterState(
        name=name,
        platform="local",
        port=server.port,
        repository=repository,
        bindir=server.bindir,
        os_user=server.os_user,
        system_identifier=server.system_identifier,
        pg_version=server.major,
        wal_segment_size=server.wal_segment_size,
        registered=True,
        pgdata=server.datadir,
        server_socket_dir=server.socket_dir,
        server_log=server.server_log,
        config_dir=server.config_dir,
        debian_cluster=server.debian_cluster,
        superuser=superuser,
        home=str(st.home()),
        patroni_url=server.patroni_url,
        patroni_scope=server.patroni_scope,
        members=list(server.members),
    )


def check_server(request: RegisterRequest, server: Server) -> Settings:
    """Connect as the server's OS user and check what archiving needs; change nothing."""
    url = request.backup_repo or st.default_repository_url()
    # peer authentication: the OS user's own role, which must be a superuser
    probe = Cluster(state_of(request.name, server, url, superuser=server.os_user))
    try:
        with probe.connect() as db:
            rows = dict(
                db.execute(
                    "SELECT name, setting FROM pg_settings WHERE name IN "
                    "('wal_level', 'archive_mode', 'archive_library')"
                ).fetchall()
            )
            superuser = db.execute(
                "SELECT current_user::text, rolsuper FROM pg_roles WHERE rolname = current_user"
            ).fetchone()
            current = dict(
                db.execute(
                    "SELECT name, current_setting(name) FROM pg_settings WHERE name = ANY(%s)",
                    ([*CHANGED, "archive_mode"],),
                ).fetchall()
            )
    except ClusterStateError as exc:
        raise ClusterStateError(
            f"cannot log in to the server of {server.datadir} as role {server.os_user} over "
            f"{server.socket_dir} (port {server.port}): {exc.message}",
            hint="pgpitr logs in as the server's OS user with peer authentication; pass "
            "--os-user, --socket-dir or --port if they differ",
        ) from None
    assert superuser is not None
    if not superuser[1]:
        raise ClusterStateError(
            f"the role {superuser[0]} of the server's OS user is not a superuser",
            hint="pass --os-user with the OS user whose role is the server's superuser",
        )
    if rows["wal_level"] == "minimal":
        raise ClusterStateError(
            f"wal_level is minimal on {request.name}; archiving and backups need replica",
            hint="ALTER SYSTEM SET wal_level = replica and restart the server, then register it",
        )
    if rows.get("archive_library"):
        raise ClusterStateError(
            f"archive_library is {rows['archive_library']!r} on {request.name}; pgpitr "
            "archives with archive_command",
            hint="reset archive_library (and restart), then register the server",
        )
    if rows["archive_mode"] == "off" and not request.restart:
        raise ClusterStateError(
            f"archive_mode is off on {request.name}; turning it on needs a restart: pass "
            "--restart, or set it and restart yourself"
        )
    # read only: a file repository is created (owned by the server's OS user) when saved
    key_file = cluster_repository.encryption_key_file(
        url, probe.user
    )  # an encrypted one's, checked
    try:
        archive.check_archive_info(
            open_repository(url, key_file=key_file or None), request.name, server.system_identifier
        )
    except NotFound:
        pass  # a new stanza; the same system's archive (registered before) is continued
    changed = [*CHANGED, "archive_mode"] if rows["archive_mode"] == "off" else list(CHANGED)
    if server.patroni_url:  # Patroni's configuration is the one to put back
        return Settings(
            superuser[0], rows["archive_mode"], ha.previous_settings(server.patroni_url, changed)
        )
    # what ALTER SYSTEM had written, exactly as written, so that it can be written back
    auto_conf = read_auto_conf(Path(server.datadir))
    previous = {
        name: {"value": auto_conf.get(name, current[name]), "in_auto_conf": name in auto_conf}
        for name in changed
    }
    return Settings(superuser[0], rows["archive_mode"], previous)


_AUTO_LINE = re.compile(r"^\s*([A-Za-z_.]+)\s*=\s*'((?:[^']|'')*)'\s*$")


def read_auto_conf(datadir: Path) -> dict[str, str]:
    """The settings in postgresql.auto.conf (ALTER SYSTEM's file; read, never written here)."""
    try:
        text = (datadir / "postgresql.auto.conf").read_text()
    except FileNotFoundError:
        return {}
    found = {}
    for line in text.splitlines():
        match = _AUTO_LINE.match(line)
        if match:
            found[match.group(1).lower()] = match.group(2).replace("''", "'")
    return found
