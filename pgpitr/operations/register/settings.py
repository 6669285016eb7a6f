"""Saving a registered server's record and settings, and putting its settings back: the steps
that change something, each undone by putting back what ALTER SYSTEM (or, for a Patroni
cluster, its dynamic configuration) had held.
"""

from __future__ import annotations

import logging
import pwd
import shutil
from datetime import UTC, datetime
from typing import Any

from pgpitr import cluster_repository, patroni, policy_store
from pgpitr import state as st
from pgpitr.errors import ClusterStateError, NotFound
from pgpitr.operations.log_backup import set_streaming
from pgpitr.operations.register.server import (
    ARCHIVE_TIMEOUT,
    RegisterRequest,
    Server,
    Settings,
    state_of,
)
from pgpitr.postgres import conf, slots
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import OsUser
from pgpitr.postgres.osuser import check_reachable, make_dir
from pgpitr.steps import undone_by
from pgpitr.wal.stream.files import streaming

log = logging.getLogger(__name__)


def forget(name: str) -> None:
    """Remove pgpitr's record of a registered cluster (PGPITR_HOME/clusters/NAME only)."""
    try:
        cluster = Cluster.get(name)
    except NotFound:
        return
    if not cluster.registered:
        raise ClusterStateError(f"cluster {name!r} was created by pgpitr, not registered")
    datadir = cluster.state.datadir.resolve()
    if datadir.is_relative_to(cluster.state.dir.resolve()):  # never, by construction
        raise ClusterStateError(f"{datadir} is inside {cluster.state.dir}; not removing it")
    shutil.rmtree(cluster.state.dir)


def _undo_registration(name: str) -> None:
    forget(name)
    log.warning("registration of %s failed: forgot it again", name)


def record_of(request: RegisterRequest, server: Server, found: Settings) -> st.ClusterState:
    """The cluster's record as registration saves it (not saved here)."""
    url = request.backup_repo or st.default_repository_url()
    state = state_of(request.name, server, url, found.superuser)
    state.created = datetime.now(UTC).isoformat(timespec="seconds")
    state.previous_settings = found.previous
    state.encryption_key_file = cluster_repository.encryption_key_file(url, _user_of(server))
    return state


def save_record(state: st.ClusterState, user: OsUser) -> Cluster:
    """A registered cluster's directory under PGPITR_HOME (its log and spool, which the
    server's OS user USER writes) and its record; a failure after this leaves the directory
    to its caller to remove."""
    home = st.home()
    if not home.exists():
        make_dir(home, user, 0o755)
    check_reachable(user, home, writable=False)  # it writes only in its own directory
    make_dir(state.dir, user, 0o750)
    for sub in ("log", "spool"):
        make_dir(state.dir / sub, user, 0o750)
    state.save()
    return Cluster(state)


def _user_of(server: Server) -> OsUser:
    entry = pwd.getpwnam(server.os_user)
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


@undone_by(_undo_registration)
def save_registration(request: RegisterRequest, server: Server, found: Settings) -> str:
    """Record the cluster under PGPITR_HOME: state, default policy, credentials, spool."""
    state = record_of(request, server, found)
    now, url, user = state.created, state.repository, _user_of(server)
    try:
        cluster = save_record(state, user)
        cluster_repository.store_credentials(cluster)
        if state.is_ha:
            credentials = patroni.Credentials.from_environment()
            if credentials is not None:  # this account's, as it is this account that asks
                credentials.save(patroni.credentials_path(state), owner=None)
        cluster_repository.prepare_file_repository(cluster)
        cluster_repository.repository(cluster).check()
        policy_store.save_policy(
            cluster,
            # no heartbeat rows and no scheduled drills in someone else's server unless asked
            policy_store.new_policy(
                cluster.name,
                repository=url,
                create_time=now,
                heartbeat_enabled=False,
                drill_enabled=False,
            ),
        )
    except BaseException:  # a failed step is not undone by its transaction: leave nothing
        shutil.rmtree(state.dir, ignore_errors=True)
        raise
    log.info(
        "registered %s: %s (PostgreSQL %s, port %s, socket %s, OS user %s)",
        request.name,
        server.datadir,
        server.major,
        server.port,
        server.socket_dir,
        server.os_user,
    )
    return request.name


def _put_back(name: str) -> None:
    put_back_settings(name)


@undone_by(_put_back)
def turn_on_archive_mode(name: str) -> str:
    """archive_mode = on, then restart the server (asked for: --restart): with ALTER SYSTEM, or
    through Patroni for an HA cluster (every member, the standbys first)."""
    cluster = Cluster.get(name)
    settings = {"archive_mode": "on", "archive_command": conf.ARCHIVE_OFF}
    log.warning("restarting %s to turn archive_mode on (asked for with --restart)", name)
    if cluster.state.is_ha:
        patroni.restart_with(cluster.state, settings)
        return name
    cluster.change_settings(settings)
    cluster.restart()
    return name


@undone_by(_put_back)
def set_archive_settings(name: str) -> str:
    """pgpitr's archive_command (log backup off, as for a new cluster) and archive_timeout."""
    cluster = Cluster.get(name)
    cluster.change_settings(
        {
            "archive_command": conf.archive_command(st.home(), name, enabled=False),
            "archive_timeout": ARCHIVE_TIMEOUT,
        }
    )
    log.info(
        "%s: archive_command and archive_timeout set %s",
        name,
        "in Patroni's dynamic configuration" if cluster.state.is_ha else "with ALTER SYSTEM",
    )
    return name


def put_back_settings(name: str) -> dict[str, Any]:
    """The settings as they were before registration, with a reload.  ``archive_mode`` turned
    on by registration is reset too, but stays on until the server's next restart."""
    cluster = Cluster.get(name)
    cluster.require_running()
    if streaming(policy_store.load_policy(cluster)):
        # first, while archiving still runs: the receiver stops (it would make its slot
        # again), the last segment is archived, the streamed partials go
        set_streaming(cluster, stream=False, synchronous=False)
    previous = cluster.state.previous_settings
    settings: dict[str, str | None] = {
        key: (old["value"] if old["in_auto_conf"] else None) for key, old in previous.items()
    }
    cluster.change_settings(settings)
    log.info("%s: settings put back: %s", name, settings)
    # streaming's own: commits must not wait for a receiver pgpitr no longer runs, nor the
    # slot hold WAL back for it
    slots.set_synchronous(cluster, False)
    if slots.drop_slot(cluster):
        log.info("%s: replication slot %s dropped", name, slots.SLOT)
    notes = []
    if "archive_mode" in previous:
        notes.append("archive_mode returns to its old value at the server's next restart")
    return {"settings": settings, "notes": notes}
