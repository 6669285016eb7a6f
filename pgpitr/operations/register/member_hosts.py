"""An HA cluster's members on other hosts: each of their hosts keeps the cluster too.

Why: ``archive_command`` lives in Patroni's dynamic configuration, one text for every member.
When a member on host B is promoted, its PostgreSQL runs ``pgpitr wal-push --cluster NAME``
on B, which reads NAME's record from B's PGPITR_HOME: without one there, archiving stops at
the switchover and the window silently ends.  So registering a Patroni cluster asks the agent
of every other host to keep it (``keep``): a host that runs members of the cluster writes its
copy of the record (cluster.json naming the cluster's own host, the repository's and Patroni's
credentials, the spool); a host that runs none writes nothing.  ``unregister`` asks them to
``drop`` it again.

A copy is not the cluster: the policy, the schedules and the window are its own host's, whose
agent alone schedules it.  A member's host archives for its members and runs what a person
asks there, on its members' servers (a backup of its standby, say).

The member's host must run the same ``archive_command`` (the same PGPITR_HOME and the same
installed WAL commands), and reach an encrypted repository's key at the path the cluster
records: both are checked there before anything is written.  The secrets reach the other
hosts through the Prefect API, never as a parameter (tasks/member_hosts.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pwd
import shutil
from pathlib import Path
from typing import Any

from pgpitr import cluster_repository, patroni
from pgpitr import state as st
from pgpitr.errors import ClusterStateError, EncryptionKeyError, InvalidInput
from pgpitr.operations.register.settings import save_record
from pgpitr.patroni.members import Member, Placement, local_postmasters, place
from pgpitr.postgres import conf
from pgpitr.postgres.command import OsUser

log = logging.getLogger(__name__)

#: The secrets a member's host needs, by the file of the cluster's directory they go to.
AWS_CREDENTIALS = "aws-credentials"
PATRONI_CREDENTIALS = "patroni-credentials"


def spec_of(state: st.ClusterState, elsewhere: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    """What the other hosts are told (JSON, no secret): the cluster's record as its own host
    keeps it, the members on other hosts, and the archive_command every member runs."""
    record = {k: v for k, v in dataclasses.asdict(state).items() if k != "home"}
    record.update(repository=str(state.repository), previous_settings={})
    return {
        "cluster": record,
        "members": list(elsewhere),
        "archive_command": conf.archive_command(st.home(), state.name, enabled=True),
    }


def secrets_of_environment(url: Any) -> dict[str, str]:
    """The secret files a member's host writes, from this process's environment, as the
    cluster's own host writes them (the repository's keys, Patroni's REST credentials)."""
    found = {}
    aws = cluster_repository.credentials_text(url)
    if aws:
        found[AWS_CREDENTIALS] = aws
    rest = patroni.Credentials.from_environment()
    if rest is not None:
        found[PATRONI_CREDENTIALS] = json.dumps(
            {"username": rest.username, "password": rest.password}
        )
    return found


def keep(spec: dict[str, Any], secrets: dict[str, str]) -> list[dict[str, Any]]:
    """On a host asked to keep the cluster SPEC describes: the placements of its members here,
    with the cluster's copy written; nothing written, and [] returned, when none runs here."""
    record = spec["cluster"]
    name = record["name"]
    placed = place([Member(**m) for m in spec["members"]])
    if not placed:
        return []
    _refuse_another_cluster(name, record)
    here = conf.archive_command(st.home(), name, enabled=True)
    if here != spec["archive_command"]:
        raise InvalidInput(
            f"host {st.this_host()} runs members of {name!r}, but its pgpitr would archive with "
            f"{here!r}, where Patroni gives every member {spec['archive_command']!r}",
            hint="install pgpitr at the same path, with the same PGPITR_HOME, on every host "
            "of the cluster's members",
        )
    first = placed[sorted(placed)[0]]
    user, bindir = _server_of(first)
    state = st.ClusterState(
        **{k: v for k, v in record.items() if k in _FIELDS}, home=str(st.home())
    )
    state.port, state.pgdata = first.port, first.datadir
    state.server_socket_dir, state.server_log = first.socket_dir, first.server_log
    state.os_user, state.bindir = user.name, bindir
    state.members = [p.as_dict() for p in placed.values()]
    try:
        state.encryption_key_file = cluster_repository.encryption_key_file(
            state.repository, user, record.get("encryption_key_file", "")
        )
    except EncryptionKeyError as exc:  # every member archives with the key at the same path
        raise EncryptionKeyError(
            f"host {st.this_host()} runs members of {name!r}, whose repository is encrypted, "
            f"but {exc.message}",
            hint=f"copy the key file from host {record.get('host') or 'of the registration'} "
            f"to the same path here, owned by {user.name}, mode 0600, then register again",
        ) from None
    try:
        cluster = save_record(state, user)
        if AWS_CREDENTIALS in secrets:
            cluster_repository.store_credentials(cluster, secrets[AWS_CREDENTIALS])
        if PATRONI_CREDENTIALS in secrets:
            rest = json.loads(secrets[PATRONI_CREDENTIALS])
            patroni.Credentials(rest["username"], rest["password"]).save(
                patroni.credentials_path(state), owner=None
            )
        cluster_repository.repository(cluster).check()
    except BaseException:
        shutil.rmtree(state.dir, ignore_errors=True)
        raise
    log.info(
        "%s (of host %s): this host keeps it for its members %s",
        name,
        state.host,
        ", ".join(sorted(placed)),
    )
    return [dataclasses.replace(p, host=st.this_host()).as_dict() for p in placed.values()]


_FIELDS = {f.name for f in dataclasses.fields(st.ClusterState)} - {"home"}


def _refuse_another_cluster(name: str, record: dict[str, Any]) -> None:
    """A cluster of this host's own with NAME is never overwritten; a copy of the same
    cluster (registered again) is."""
    try:
        mine = st.ClusterState.load(name)
    except FileNotFoundError:
        return
    if mine.host == record["host"] and mine.system_identifier == record["system_identifier"]:
        return
    raise ClusterStateError(
        f"host {st.this_host()} has a cluster named {name!r} already (of host {mine.host})",
        hint="register the Patroni cluster under another name",
    )


def _server_of(placement: Placement) -> tuple[OsUser, str]:
    """The OS user a member's server runs as, and its binaries' directory, from its
    postmaster."""
    pid = local_postmasters()[placement.port][2]
    entry = pwd.getpwuid(Path(placement.datadir).stat().st_uid)
    if entry.pw_uid == 0:
        raise InvalidInput(f"the data directory {placement.datadir} belongs to root")
    if os.geteuid() not in (0, entry.pw_uid):
        raise ClusterStateError(
            f"the member in {placement.datadir} runs as {entry.pw_name}, not as this account",
            hint="run pgpitr's agent on that host as the database's OS user",
        )
    return (
        OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid),
        str(Path(os.readlink(f"/proc/{pid}/exe")).parent),
    )


def drop(name: str, home_host: str) -> bool:
    """On a member's host: forget its copy of NAME (of HOME_HOST); False when it has none.  A
    cluster of this host's own is never removed here."""
    try:
        mine = st.ClusterState.load(name)
    except FileNotFoundError:
        return False
    if mine.host != home_host or mine.host == st.this_host():
        raise ClusterStateError(
            f"the cluster {name!r} of host {st.this_host()} is not a copy of host "
            f"{home_host}'s; not removing it",
        )
    shutil.rmtree(mine.dir)
    log.info("%s (of host %s): this host no longer keeps it", name, home_host)
    return True


def kept_on(members: list[dict[str, Any]]) -> list[str]:
    """The other hosts that keep a cluster whose members' placements are MEMBERS."""
    return sorted({m["host"] for m in members if m.get("host")})


def unplaced(
    elsewhere: tuple[dict[str, Any], ...], placements: list[dict[str, Any]], asked: list[str]
) -> None:
    """Refuse a registration some member of which no host keeps."""
    found = {p["name"] for p in placements}
    missing = [m for m in elsewhere if m["name"] not in found]
    if not missing:
        return
    names = ", ".join(f"{m['name']} ({m['host']}:{m['port']})" for m in missing)
    raise ClusterStateError(
        f"members of the Patroni cluster run on no host pgpitr serves: {names}",
        hint=(
            f"the agents of {', '.join(asked)} run none of them; "
            if asked
            else "no other host's agent answers; "
        )
        + "start `pgpitr agent` on each member's host (joined to this Prefect server with "
        "`pgpitr server connect`), as the database's OS user, then register again",
    )
