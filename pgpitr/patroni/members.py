"""The members of a Patroni cluster: what Patroni says of them (``Member``: role, state,
timeline, lag) and where each one's server is on this host (``Placement``: data directory,
Unix socket directory, server log), found from the running postmasters, since Patroni's API
names neither.

"This host" is this network namespace: a member is here when its address is one a socket here
can bind to and its postmaster runs in this namespace.  On a machine (or a container host) that
runs several namespaces, a postmaster of another one listens on another address even when its
port is the same, and is another host's member.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pgpitr.errors import ClusterStateError

#: The roles Patroni gives the member that accepts writes (4.x says "primary"; older releases
#: "leader" or "master").  A standby cluster's "standby_leader" is no primary.
PRIMARY_ROLES = ("primary", "leader", "master")


@dataclass(frozen=True)
class Member:
    """One member as ``GET /cluster`` describes it."""

    name: str
    role: str
    state: str
    host: str
    port: int
    api_url: str
    timeline: int | None = None
    #: bytes the member's replay is behind the primary (None: the primary, or unknown)
    lag: int | None = None

    @property
    def is_primary(self) -> bool:
        return self.role in PRIMARY_ROLES

    @property
    def is_streaming_standby(self) -> bool:
        return not self.is_primary and self.state == "streaming"

    @classmethod
    def from_api(cls, entry: dict[str, Any]) -> Member:
        lag = entry.get("lag")
        return cls(
            name=str(entry["name"]),
            role=str(entry.get("role", "")),
            state=str(entry.get("state", "")),
            host=str(entry.get("host", "")),
            port=int(entry.get("port") or 5432),
            api_url=str(entry.get("api_url", "")).removesuffix("/patroni"),
            timeline=entry.get("timeline"),
            lag=lag if isinstance(lag, int) else None,
        )


@dataclass(frozen=True)
class Membership:
    """An HA cluster's members as Patroni describes them now (describe), and why they are
    unknown when its API did not answer."""

    patroni: str
    members: tuple[Member, ...]
    problem: str = ""
    #: the other pgpitr host whose member is the primary, whose agent archives it now
    primary_host: str = ""
    #: each member's pgpitr host as registration found it ("": this host); a member that is
    #: not here is one this host does not keep (another host's copy)
    member_hosts: tuple[tuple[str, str], ...] = ()

    @staticmethod
    def of(cluster: Any) -> Membership:
        """Of a ``Cluster`` as ``Cluster.get`` followed it."""
        elsewhere = bool(cluster.primary_host)
        return Membership(
            cluster.state.patroni_url,
            tuple(cluster.members or ()),
            "" if elsewhere else cluster.ha_problem,
            cluster.primary_host,
            tuple((m["name"], m.get("host", "")) for m in cluster.state.members),
        )

    def pgpitr_host(self, member: Member) -> str | None:
        """The pgpitr host of MEMBER ("": this one; None: not known here)."""
        return dict(self.member_hosts).get(member.name)

    def as_json(self) -> dict[str, Any]:
        return {
            "patroni": self.patroni,
            "members": [{**asdict(m), "pgpitr_host": self.pgpitr_host(m)} for m in self.members],
            "ha_problem": self.problem or None,
            "primary_host": self.primary_host or None,
        }


def members_of(cluster_answer: dict[str, Any]) -> list[Member]:
    return [Member.from_api(entry) for entry in cluster_answer.get("members", [])]


def primary_of(members: list[Member], scope: str) -> Member:
    primaries = [m for m in members if m.is_primary]
    if len(primaries) != 1:
        raise ClusterStateError(
            f"the Patroni cluster {scope!r} has no primary now"
            if not primaries
            else f"the Patroni cluster {scope!r} names {len(primaries)} primaries",
            hint="a switchover or failover is under way; try again in a few seconds "
            "(`patronictl list` shows the members)",
            transient=True,
        )
    return primaries[0]


@dataclass(frozen=True)
class Placement:
    """Where a member's server runs on this host."""

    name: str
    port: int
    datadir: str
    socket_dir: str
    server_log: str = ""
    #: its REST API, which answers for the cluster when the one registered does not
    api_url: str = ""
    #: the pgpitr host (agent) whose member this is, when it is not this host's ("" for this
    #: host's): that host keeps the cluster too (pgpitr/operations/register/member_hosts.py)
    host: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def local_postmasters() -> dict[int, tuple[str, str, int]]:
    """port -> (data directory, first Unix socket directory, pid) of every postmaster of this
    account on this host (other accounts' data directories cannot be read, and pgpitr acts
    only on servers of its own account: register's rule)."""
    found: dict[int, tuple[str, str, int]] = {}
    here = _network_namespace("self")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != os.geteuid() and os.geteuid() != 0:
                continue
            argv = Path(entry.path, "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        namespace = _network_namespace(entry.name)
        if namespace and here and namespace != here:
            continue
        datadir = _data_directory(argv)
        if datadir is None:
            continue
        try:
            lines = Path(datadir, "postmaster.pid").read_text().split("\n")
            pid, port = int(lines[0]), int(lines[3])
        except (OSError, ValueError, IndexError):
            continue
        if pid == int(entry.name):
            found[port] = (str(Path(datadir).resolve()), lines[4].strip(), pid)
    return found


def _network_namespace(pid: str) -> str:
    """The network namespace PID runs in ("" when it cannot be read: then every process is
    taken as this host's, as before namespaces mattered)."""
    try:
        return os.readlink(f"/proc/{pid}/ns/net")
    except OSError:
        return ""


def _data_directory(argv: list[bytes]) -> str | None:
    """The data directory a postmaster's command line names (``postgres -D DIR`` as Patroni
    and pg_ctl start it), or None for any other process."""
    if (
        not argv
        or not argv[0]
        or os.path.basename(argv[0]).decode(errors="replace")
        not in (
            "postgres",
            "postmaster",
        )
    ):
        return None
    for i, arg in enumerate(argv[:-1]):
        if arg == b"-D":
            return argv[i + 1].decode(errors="replace")
        if arg.startswith(b"-D") and len(arg) > 2:
            return arg[2:].decode(errors="replace")
    return None


def stderr_file(pid: int) -> str:
    """The file a process's stderr goes to (the server log when it has no collector)."""
    try:
        target = os.readlink(f"/proc/{pid}/fd/2")
    except OSError:
        return ""
    return target if target.startswith("/") and Path(target).is_file() else ""


def place(members: list[Member]) -> dict[str, Placement]:
    """The members whose server listens on this host, by name (matched by port)."""
    postmasters = local_postmasters()
    placed = {}
    for member in members:
        if member.port in postmasters and _is_this_host(member.host):
            datadir, socket_dir, pid = postmasters[member.port]
            placed[member.name] = Placement(
                member.name, member.port, datadir, socket_dir, stderr_file(pid), member.api_url
            )
    return placed


def _is_this_host(host: str) -> bool:
    """HOST (a name or an address, as Patroni advertises a member) is one of this host's own
    addresses: a socket here can bind to it.  The machine's name is not enough: a network
    namespace shares it with the machine, and a name may resolve to an address of another."""
    import socket

    if host in ("", "localhost") or host.startswith("127.") or host == "::1":
        return True
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return any(_can_bind(address) for address in addresses)


def _can_bind(address: str) -> bool:
    import socket

    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.bind((address, 0))
    except OSError:
        return False
    return True
