"""Where pgpitr keeps what it knows about its clusters: ``PGPITR_HOME``.

Kept deliberately light (json, os, pathlib, the repository's URL): the WAL commands load a
cluster's state once per segment.  Layout::

    PGPITR_HOME/clusters/NAME/cluster.json   what the cluster is (no secrets)
    PGPITR_HOME/clusters/NAME/policy.json    its backup policy
    PGPITR_HOME/clusters/NAME/data           PGDATA
    PGPITR_HOME/clusters/NAME/run            Unix socket directory
    PGPITR_HOME/clusters/NAME/log            server log
    PGPITR_HOME/clusters/NAME/spool          WAL pushed ahead / fetched ahead
    PGPITR_HOME/repo                         the default file repository

A *registered* cluster is a server pgpitr did not create (``pgpitr cluster register``): its
directory here holds only cluster.json, policy.json, log and spool; ``datadir``, ``socket_dir``
and ``log_file`` name the server's own, wherever they are, and its data is never touched.

The default home is /var/lib/pgpitr, which the install gives the service account
(pgpitr/privilege.py); a user who is not that account keeps one in ~/.local/share/pgpitr.
"""

from __future__ import annotations

import json
import os
import re
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from pgpitr.errors import InvalidInput
from pgpitr.osutil import write_atomic
from pgpitr.repository.url import FileUrl, RepositoryUrl

NAME_RULE = re.compile(r"^[a-z][a-z0-9-]{0,46}[a-z0-9]$|^[a-z]$")
NAME_RULE_TEXT = (
    "1 to 48 characters: lower-case letters, digits and '-', starting with a letter and not "
    "ending with '-' (like a Kubernetes name)"
)


HOST_ENV = "PGPITR_HOST"
HOST_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")


def this_host() -> str:
    """The host (agent) this process acts for: PGPITR_HOST, else the machine's hostname."""
    name = os.environ.get(HOST_ENV) or socket.gethostname()
    if not HOST_RULE.fullmatch(name):
        raise InvalidInput(
            f"invalid host name {name!r}: use letters, digits, '.', '_' and '-' (at most 63)",
            hint=f"set {HOST_ENV} to this machine's name",
        )
    return name


def home() -> Path:
    """PGPITR_HOME; else the service account's home that the install made (root's default
    too, before it leaves root for that account); else the user's own data directory."""
    from pgpitr.privilege import SYSTEM_HOME

    explicit = os.environ.get("PGPITR_HOME")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return SYSTEM_HOME
    try:
        if SYSTEM_HOME.stat().st_uid == os.geteuid():
            return SYSTEM_HOME
    except OSError:
        pass
    data = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(data, "pgpitr")


def clusters_dir(base: Path | None = None) -> Path:
    return (base or home()) / "clusters"


def default_repository_url(base: Path | None = None) -> FileUrl:
    """The embedded default repository."""
    return FileUrl((base or home()) / "repo")


_REGISTERED_ONLY = (
    "registered",
    "pgdata",
    "server_socket_dir",
    "server_log",
    "config_dir",
    "debian_cluster",
    "previous_settings",
    "patroni_url",
    "patroni_scope",
    "members",
)


@dataclass
class ClusterState:
    """What pgpitr knows about one cluster.  Stored as cluster.json (never a secret in it)."""

    name: str
    platform: str
    port: int
    #: text in cluster.json, parsed when the state is built
    repository: RepositoryUrl
    bindir: str
    os_user: str
    system_identifier: str = ""
    pg_version: int = 15
    wal_segment_size: int = 16 * 1024 * 1024
    created: str = ""
    #: For a restored cluster: where its WAL came from, until recovery finished.
    restore_source: dict[str, Any] = field(default_factory=dict)
    #: The host (agent) the cluster lives on; a state saved before hosts existed is this one's.
    host: str = field(default_factory=this_host)
    #: Someone else's server, protected by pgpitr (``cluster register``); the rest of these
    #: fields are set only for one.
    registered: bool = False
    #: Its data directory, socket directory and server log (not under PGPITR_HOME).
    pgdata: str = ""
    server_socket_dir: str = ""
    server_log: str = ""
    #: Debian's layout: the configuration directory /etc/postgresql/N/M and "N/M" for
    #: pg_ctlcluster; empty for a server run with pg_ctl.
    config_dir: str = ""
    debian_cluster: str = ""
    #: The role pgpitr administers as (peer authentication as the server's OS user).
    superuser: str = "postgres"
    #: The settings registration changed, as they were: name -> {"value", "in_auto_conf"}
    #: ("in_auto_conf": the server's configuration manager set it: postgresql.auto.conf, or
    #: Patroni's dynamic configuration for an HA cluster).
    previous_settings: dict[str, Any] = field(default_factory=dict)
    #: An HA cluster managed by Patroni: a member's REST API, the Patroni scope, and where each
    #: member's server was last seen on this host (pgpitr/patroni/members.py ``Placement``).
    #: ``port``, ``pgdata``, ``server_socket_dir`` and ``server_log`` then name the primary's,
    #: as ``Cluster.get`` found it (pgpitr/patroni ``follow``).
    patroni_url: str = ""
    patroni_scope: str = ""
    members: list[dict[str, Any]] = field(default_factory=list)
    #: The key file of an encrypted repository (its path, never a key), read by the WAL
    #: commands as the server's OS user (pgpitr/keys.py); empty when the repository is plain.
    encryption_key_file: str = ""
    #: A created cluster the operator stopped (``cluster stop``): the agent, starting after a
    #: reboot, leaves it stopped; every other created cluster it starts again.
    stopped_by_operator: bool = False
    home: str = ""

    def __post_init__(self) -> None:
        self.repository = RepositoryUrl.parse(self.repository)

    @property
    def is_ha(self) -> bool:
        """Patroni manages it: several members, one primary at a time."""
        return bool(self.patroni_url)

    @property
    def dir(self) -> Path:
        return Path(self.home) / "clusters" / self.name

    @property
    def datadir(self) -> Path:
        return Path(self.pgdata) if self.registered else self.dir / "data"

    @property
    def socket_dir(self) -> Path:
        return Path(self.server_socket_dir) if self.registered else self.dir / "run"

    @property
    def log_file(self) -> Path:
        """The server log: a registered server's stderr file, else the file its logging
        collector writes now (current_logfiles: Patroni's members, say), else pgpitr's own."""
        if self.registered and self.server_log:
            return Path(self.server_log)
        if self.registered:
            current = collector_log(self.datadir)
            if current is not None:
                return current
        return self.dir / "log" / "postgresql.log"

    @property
    def spool(self) -> Path:
        return self.dir / "spool"

    @property
    def credentials_file(self) -> Path:
        return self.dir / "aws-credentials"

    @property
    def stanza(self) -> str:
        """The cluster's prefix in the repository."""
        return self.name

    def save(self) -> None:
        data = {k: v for k, v in asdict(self).items() if k != "home"}
        data["repository"] = str(self.repository)
        if not self.registered:  # a created cluster's cluster.json stays as it always was
            for key in _REGISTERED_ONLY:
                data.pop(key)
            if self.superuser == "postgres":
                data.pop("superuser")
        if not self.encryption_key_file:
            data.pop("encryption_key_file")
        if not self.stopped_by_operator:
            data.pop("stopped_by_operator")
        if not self.patroni_url:  # a single server's cluster.json stays as it always was
            for key in ("patroni_url", "patroni_scope", "members"):
                data.pop(key, None)
        write_json_atomic(self.dir / "cluster.json", data)

    @classmethod
    def load(cls, name: str, base: Path | None = None) -> ClusterState:
        base = base or home()
        path = clusters_dir(base) / name / "cluster.json"
        with open(path) as f:
            data = json.load(f)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known}, home=str(base))


def collector_log(datadir: Path) -> Path | None:
    """The stderr file the logging collector of DATADIR's server writes now, from its
    current_logfiles (a path relative to the data directory, or absolute), or None."""
    try:
        text = (datadir / "current_logfiles").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        kind, _, path = line.partition(" ")
        if kind == "stderr" and path.strip():
            return datadir / path.strip()  # an absolute path stays as it is
    return None


def write_json_atomic(path: Path, data: Any, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(data, indent=2, sort_keys=True), mode=mode)
