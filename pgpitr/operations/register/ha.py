"""Registering a Patroni cluster (``register --patroni URL``): its members from the REST API,
the primary's server found on this host like any registered server's, and the settings
registration changes as Patroni's dynamic configuration holds them.  Nothing here changes the
cluster.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pgpitr.errors import ClusterStateError, InvalidInput
from pgpitr.patroni import dynamic_parameters
from pgpitr.patroni.api import Credentials, PatroniApi
from pgpitr.patroni.members import Member, members_of, place, primary_of


def find_members(url: str) -> Members:
    """The Patroni cluster whose member answers at URL: its scope, system identifier, the
    placements of the members on this host (the primary's among them: registration starts on
    the primary's host) and the members on other hosts, whose hosts keep the cluster too
    (member_hosts.py)."""
    api = PatroniApi(url, Credentials.from_environment())
    members = members_of(api.cluster())
    if not members:
        raise ClusterStateError(
            f"Patroni at {url} lists no members",
            hint="is it the REST API of a running Patroni member?",
        )
    identity = api.member()
    scope = str((identity.get("patroni") or {}).get("scope", ""))
    system_identifier = str(identity.get("database_system_identifier", ""))
    primary = primary_of(members, scope or url)
    placed = place(members)
    if primary.name not in placed:
        raise ClusterStateError(
            f"the primary of the Patroni cluster {scope!r}, {primary.name} "
            f"({primary.host}:{primary.port}), runs on no server of this host that pgpitr can "
            "see",
            hint="register the cluster on the primary's host, as the database's OS user; the "
            "hosts of the other members then keep it through their agents",
        )
    return Members(
        scope=scope,
        system_identifier=system_identifier,
        here=tuple(placed[m.name].as_dict() for m in members if m.name in placed),
        primary=placed[primary.name].as_dict(),
        elsewhere=tuple(m for m in members if m.name not in placed),
    )


@dataclasses.dataclass(frozen=True)
class Members:
    scope: str
    system_identifier: str
    #: the placements of this host's members
    here: tuple[dict[str, Any], ...]
    primary: dict[str, Any]
    #: what Patroni says of the members on other hosts
    elsewhere: tuple[Member, ...]


def request_for_primary(request: Any, primary: dict[str, Any]) -> Any:
    """The request as if it had named the primary's server by its data directory."""
    return dataclasses.replace(
        request,
        pgdata=primary["datadir"],
        port=primary["port"],
        socket_dir=primary["socket_dir"],
        patroni=None,
    )


def previous_settings(url: str, names: list[str]) -> dict[str, dict[str, Any]]:
    """What Patroni's dynamic configuration says of NAMES now: the value it sets, or none
    (``in_auto_conf`` False: the key is absent, and unregister removes pgpitr's again)."""
    parameters = dynamic_parameters(PatroniApi(url, Credentials.from_environment()))
    return {
        name: {"value": parameters.get(name), "in_auto_conf": name in parameters} for name in names
    }


def parse_url(text: str | None) -> str | None:
    from pgpitr.patroni.api import parse_url

    if text is None or not text.strip():
        return None
    return parse_url(text)


def refuse_both(pgdata: str | None, patroni: str | None) -> None:
    if pgdata and patroni:
        raise InvalidInput(
            "give --pgdata (one server) or --patroni (a Patroni cluster's REST API), not both",
            hint="with --patroni, pgpitr finds every member's data directory itself",
        )
    if not pgdata and not patroni:
        raise InvalidInput(
            "give --pgdata (the server's data directory) or --patroni (a Patroni member's "
            "REST API, e.g. http://127.0.0.1:8008)"
        )
