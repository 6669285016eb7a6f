"""Protect a server pgpitr did not create: ``register`` (``operations.unregister`` undoes it).

``run`` puts its steps in order here, once.  Registering finds the running server from its data
directory (or, in Debian's layout, its configuration directory /etc/postgresql/N/NAME) and checks
everything it can before it changes anything (``server``), then records the cluster under
PGPITR_HOME (state, policy, spool: never the server's data) and sets ``archive_command`` and
``archive_timeout`` with ``ALTER SYSTEM`` and a reload, remembering how they were (``settings``).
``archive_mode`` needs a restart: refused unless asked for (``restart``).

A Patroni cluster (``--patroni``, ``ha``) is found from a member's REST API: the primary's
server as above, every member's data directory from the postmasters of this host; its settings
change in Patroni's dynamic configuration instead (pgpitr/patroni), and a restart is Patroni's.
The hosts of its other members keep the cluster too, asked before any setting changes
(``member_hosts``), and forget it again if registration fails.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from pgpitr.operations.register import member_hosts
from pgpitr.operations.register.server import RegisterRequest, check_server, find_server
from pgpitr.operations.register.settings import (
    record_of,
    save_registration,
    set_archive_settings,
    turn_on_archive_mode,
)
from pgpitr.steps import Steps


def run(steps: Steps, request: RegisterRequest) -> dict[str, Any]:
    """Protect the running server of ``request.pgdata`` as cluster ``request.name``."""
    server = steps(find_server, request)
    found = steps(check_server, request, server)
    kept: list[str] = []
    if server.members_elsewhere:
        record = steps(record_of, request, server, found)
        answers = steps.keep_on_member_hosts(member_hosts.spec_of(record, server.members_elsewhere))
        placements = [p for placed in answers.values() for p in placed]
        kept = sorted(host for host, placed in answers.items() if placed)
        try:
            member_hosts.unplaced(server.members_elsewhere, placements, sorted(answers))
        except BaseException:
            steps.drop_on_member_hosts(request.name, kept)
            raise
        server = dataclasses.replace(server, members=(*server.members, *placements))
    try:
        with steps.transaction():
            steps(save_registration, request, server, found)
            if found.archive_mode == "off":
                steps(turn_on_archive_mode, request.name)
            steps(set_archive_settings, request.name)
    except BaseException:
        steps.drop_on_member_hosts(request.name, kept)
        raise
    steps.sync_schedules(request.name)
    return {
        "name": request.name,
        "datadir": server.datadir,
        "port": server.port,
        "pg_version": server.major,
        "previous": found.previous,
        "restarted": found.archive_mode == "off",
        "patroni_scope": server.patroni_scope,
        "members": [member["name"] for member in server.members],
        "member_hosts": kept,
    }
