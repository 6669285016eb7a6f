"""HA clusters managed by Patroni: one pgpitr cluster with members, exactly one of them primary.

**How pgpitr follows role changes: it asks.**  Every time pgpitr needs the primary (a backup,
a setting, describe, the WAL receiver's reconnect) it reads ``GET /cluster`` from the member's
REST API it was registered with, and acts on the member Patroni names primary now
(``follow``).  Not Patroni's callbacks: they are each member's local configuration (edited by
hand on every node, a program Patroni runs as the database's OS user, which pgpitr's privilege
model keeps out of reach), and a callback that fires while pgpitr is down is lost, where the
API's answer is always current.  Archiving never waits on that answer: ``archive_command``
lives in Patroni's dynamic configuration, which every member applies, so whichever member is
promoted archives its new timeline at once, as a standby it only replays.

**Settings go through Patroni** (``change_settings``): ``PATCH /config`` on
``postgresql.parameters``, then wait until the primary runs with them.  Never ``ALTER SYSTEM``
behind it: Patroni rewrites the configuration it owns, and a member promoted later would not
have the change.

``members`` holds what Patroni says of each member and where its server is on this host.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pgpitr.errors import ClusterStateError
from pgpitr.patroni.api import Credentials, PatroniApi
from pgpitr.patroni.members import Member, Placement, members_of, place, primary_of

if TYPE_CHECKING:
    from pgpitr.state import ClusterState

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "patroni-credentials"
#: How long a change of the dynamic configuration may take to reach the primary: Patroni
#: applies it in its next cycle (loop_wait, 10 s by default).
APPLY_TIMEOUT = 60.0


def credentials_path(state: ClusterState) -> Path:
    return state.dir / CREDENTIALS_FILE


def api_of(state: ClusterState) -> PatroniApi:
    others = [entry.get("api_url", "") for entry in state.members]
    return PatroniApi(state.patroni_url, Credentials.load(credentials_path(state)), others)


def follow(state: ClusterState) -> list[Member]:
    """Point STATE at the member that is primary now (its port, data directory, socket and
    log, in memory); return every member as Patroni describes it.  A primary not on this
    host is refused: a member on another host is served by that host's agent."""
    members = members_of(api_of(state).cluster())
    primary = primary_of(members, state.patroni_scope or state.name)
    try:
        placement = placement_of(state, primary, members)
    except PrimaryElsewhere as exc:
        exc.members = members
        raise
    state.port = placement.port
    state.pgdata = placement.datadir
    state.server_socket_dir = placement.socket_dir
    state.server_log = placement.server_log
    return members


def primary_host(state: ClusterState) -> str:
    """The pgpitr host whose member Patroni names primary now, when registration found it on
    another host ("" for this host's, or a member no host was recorded for)."""
    members = members_of(api_of(state).cluster())
    primary = primary_of(members, state.patroni_scope or state.name)
    known = {entry["name"]: entry for entry in state.members}
    return str((known.get(primary.name) or {}).get("host", ""))


class PrimaryElsewhere(ClusterStateError):
    """The primary runs on another pgpitr host (HOST), which keeps the cluster for its member:
    that host's agent archives it, and what needs the primary is handed to it
    (pgpitr/operations/primary_host.py).  ``members``: every member, as Patroni described them."""

    def __init__(self, host: str, message: str, *, hint: str, transient: bool) -> None:
        super().__init__(message, hint=hint, transient=transient)
        self.host = host
        self.members: list[Member] = []


def placement_of(state: ClusterState, member: Member, members: list[Member]) -> Placement:
    """Where MEMBER's server is on this host; refused when it is not here, naming the host
    whose member it is when registration found one."""
    known = {entry["name"]: Placement(**entry) for entry in state.members}
    found = known.get(member.name)
    if (
        found is not None
        and not found.host
        and found.port == member.port
        and Path(found.datadir).is_dir()
    ):
        return found
    placed = place(members)  # a member added, moved or not seen before: look again
    if member.name in placed:
        return placed[member.name]
    where = f"{member.role}, {member.host}:{member.port}"
    if found is not None and found.host:
        raise PrimaryElsewhere(
            found.host,
            f"member {member.name} of {state.name!r} ({where}) is a member of host "
            f"{found.host}, not of this one",
            hint=f"run the command on host {found.host}, whose pgpitr keeps {state.name!r} "
            "too (its agent archives for that member)",
            transient=True,
        )
    raise ClusterStateError(
        f"member {member.name} of {state.name!r} ({where}) runs on no server of this host "
        "that pgpitr can see",
        hint="run the command on the member's host, as the database's OS user; a member "
        "on a host added after registration is kept there once the cluster is unregistered "
        "and registered again",
    )


def change_settings(state: ClusterState, connect: Any, settings: dict[str, str | None]) -> None:
    """Set SETTINGS (None: remove pgpitr's value) in Patroni's dynamic configuration, and wait
    until the primary runs with them (``connect``: a connection to it).  A setting that needs a
    restart is only stored here: ``restart_members`` applies it."""
    api = api_of(state)
    api.patch_config({"postgresql": {"parameters": dict(settings)}})
    wanted = {name: value for name, value in settings.items() if value is not None}
    if not wanted:
        return
    deadline = time.monotonic() + APPLY_TIMEOUT
    while True:
        with connect() as db:
            rows = dict(
                db.execute(
                    "SELECT name, setting FROM pg_settings WHERE name = ANY(%s) "
                    "AND NOT pending_restart",
                    (list(wanted),),
                ).fetchall()
            )
        if all(_same(rows.get(name), value) for name, value in wanted.items()):
            return
        if time.monotonic() > deadline:
            late = sorted(n for n, v in wanted.items() if not _same(rows.get(n), v))
            raise ClusterStateError(
                f"Patroni did not apply {', '.join(late)} on the primary of {state.name!r} "
                f"within {APPLY_TIMEOUT:.0f} s",
                hint="see `patronictl show-config` and the Patroni log of the primary",
                transient=True,
            )
        time.sleep(0.5)


def _same(actual: str | None, wanted: str) -> bool:
    if actual is None:
        return False
    return actual == wanted or _units(actual) == _units(wanted)


def _units(value: str) -> str:
    """archive_timeout's 60 and 60s and 1min are one value; pg_settings says 60 (seconds)."""
    text = value.strip().lower()
    for suffix, factor in (("min", 60), ("s", 1)):
        if text.endswith(suffix) and text[: -len(suffix)].strip().isdigit():
            return str(int(text[: -len(suffix)]) * factor)
    return text


def restart_with(state: ClusterState, settings: dict[str, str], timeout: float = 180.0) -> None:
    """Set SETTINGS, which need a restart, in the dynamic configuration; then restart every
    member through Patroni (``POST /restart``) once it has taken them (a pending restart),
    standbys first and the primary last, each waited for."""
    api = api_of(state)
    api.patch_config({"postgresql": {"parameters": dict(settings)}})
    members = sorted(members_of(api.cluster()), key=lambda m: m.is_primary)
    for member in members:
        _wait_pending(api, member, timeout)
        log.warning("%s: restarting member %s through Patroni", state.name, member.name)
        api.restart(member.api_url, timeout)
        _wait_running(api, member, timeout)


def _wait_pending(api: PatroniApi, member: Member, timeout: float) -> None:
    """Until the member has read the new configuration (its restart would otherwise start it
    with the old one)."""
    deadline = time.monotonic() + timeout
    while not api.member(member.api_url).get("pending_restart"):
        if time.monotonic() > deadline:
            raise ClusterStateError(
                f"member {member.name} did not take the new configuration within {timeout:.0f} s",
                hint="see its Patroni log and `patronictl show-config`",
                transient=True,
            )
        time.sleep(0.5)


def _wait_running(api: PatroniApi, member: Member, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            answer = api.member(member.api_url)
            if answer.get("state") in ("running", "streaming") and not answer.get(
                "pending_restart"
            ):
                return
        except ClusterStateError:
            pass
        if time.monotonic() > deadline:
            raise ClusterStateError(
                f"member {member.name} did not come back within {timeout:.0f} s of its restart",
                hint="see its Patroni log and `patronictl list`",
            )
        time.sleep(0.5)


def set_permanent_slot(state: ClusterState, name: str, present: bool) -> None:
    """Add (or remove) the physical slot NAME to Patroni's permanent slots: Patroni creates it
    on every member, reserving WAL at once, and moves the replicas' copies along with the
    primary's, so the member promoted in a failover already holds the WAL the slot's consumer
    has not received.  A slot made with SQL instead would be dropped by Patroni as unknown.
    Removing the last one removes the ``slots`` key, as it was before."""
    api = api_of(state)
    if present:
        api.patch_config({"slots": {name: {"type": "physical"}}})
        return
    slots = api.config().get("slots") or {}
    if name in slots:  # a null for a key Patroni lacks would be stored as one
        api.patch_config({"slots": {name: None} if set(slots) - {name} else None})


def dynamic_parameters(api: PatroniApi) -> dict[str, Any]:
    """``postgresql.parameters`` of the dynamic configuration now."""
    config = api.config()
    return dict((config.get("postgresql") or {}).get("parameters") or {})


__all__ = [
    "Credentials",
    "Member",
    "PatroniApi",
    "Placement",
    "api_of",
    "change_settings",
    "dynamic_parameters",
    "follow",
    "placement_of",
    "PrimaryElsewhere",
    "primary_host",
    "restart_with",
    "set_permanent_slot",
]
