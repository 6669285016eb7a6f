"""The log-backup switch: archive_mode/archive_command on or off, and WAL streaming (its receiver,
slot and synchronous standby) on or off.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime

from pgpitr import policy as pol
from pgpitr import state as st
from pgpitr.cluster_repository import repository
from pgpitr.errors import (
    ClusterStateError,
    RepositoryError,
)
from pgpitr.operations.primary_host import primary_host
from pgpitr.policy_store import load_policy, save_policy
from pgpitr.postgres import conf, slots
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import Repository
from pgpitr.steps import Steps
from pgpitr.wal import archive
from pgpitr.wal import stream as wal_stream
from pgpitr.wal.archive_info import ensure_archive_info

log = logging.getLogger(__name__)


def stream_mode(policy: pol.BackupPolicy) -> tuple[bool, bool]:
    streams = policy.logfile_enabled and policy.logfile_method == "stream"
    return streams, streams and policy.logfile_synchronous


def run(steps: Steps, cluster: str, enabled: bool) -> str | None:
    return switch(steps, cluster, enabled)


def switch(steps: Steps, cluster: str, enabled: bool) -> str | None:
    """The log-backup switch (of ``run`` and of edit-backup-policy); when the primary runs on
    another host, that host's agent sets archiving and confirms a segment, and the policy is
    saved here once it has (it stays this host's).  Returns the segment confirmed here."""
    host = primary_host(steps, cluster)
    if not host:
        return steps(switch_log_backup, cluster, enabled)
    parameters = {"cluster": cluster, "enabled": enabled}
    steps.run_on_host(host, "set-log-backup-for-members", parameters, needs="the log-backup switch")
    steps(record_log_backup, cluster, enabled)
    log.info("log backup %s for %s, set by host %s", "on" if enabled else "off", cluster, host)
    return None


def run_for_members(steps: Steps, cluster: str, enabled: bool) -> str | None:
    """The switch on the primary's host, asked by the cluster's own host (``switch``)."""
    return steps(apply_log_backup, cluster, enabled)


def apply_log_backup(cluster: str, enabled: bool) -> str | None:
    """Archiving on (a segment confirmed) or off on another host's HA cluster whose primary
    runs here; its policy is that host's, which saves it."""
    return set_log_backup(Cluster.get(cluster), enabled, keep_policy=False)


def record_log_backup(cluster: str, enabled: bool) -> None:
    c = Cluster.get(cluster)
    save_policy(c, dataclasses.replace(load_policy(c), logfile_enabled=enabled))


def switch_log_backup(cluster: str, enabled: bool) -> str | None:
    """Archive WAL or not; on, wait until a switched segment is in the repository."""
    segment = set_log_backup(Cluster.get(cluster), enabled)
    if enabled:
        log.info("log backup on for %s: segment %s archived", cluster, segment)
    else:
        log.info("log backup off for %s", cluster)
    return segment


def switch_streaming(cluster: str, stream: bool, synchronous: bool) -> None:
    """Streaming on (slot, receiver, then synchronous when asked) or off (synchronous first, so
    that no commit waits, then the slot and the partials)."""
    set_streaming(Cluster.get(cluster), stream, synchronous)
    log.info(
        "WAL of %s: %s",
        cluster,
        ("synchronous streaming" if synchronous else "streaming")
        if stream
        else "archive_command only",
    )


def set_log_backup(
    cluster: Cluster, enabled: bool, timeout: float = 60, keep_policy: bool = True
) -> str | None:
    """Turn WAL archiving on or off without a restart (and save it in the policy when
    KEEP_POLICY).

    On: check the repository, set the archive command, reload, switch to a new segment and wait
    until that segment is in the repository; raise if it does not arrive.  Off: acknowledge WAL
    without archiving it, so that pg_wal does not fill up.  Returns the confirmed segment name."""
    cluster.require_running()
    repo = repository(cluster)
    if enabled:
        repo.check()
        ensure_archive_info(cluster, repo)
    cluster.set_archive_command(conf.archive_command(st.home(), cluster.name, enabled))
    if keep_policy:
        save_policy(cluster, dataclasses.replace(load_policy(cluster), logfile_enabled=enabled))
    if not enabled:
        return None
    return switch_and_confirm(cluster, repo, timeout=timeout)


def set_streaming(
    cluster: Cluster, stream: bool, synchronous: bool, receiver_timeout: float = 30
) -> None:
    """Stream WAL with pg_receivewal under the agent (pgpitr/wal/stream/), or stop.

    On: check the server can stream, create the slot (the server keeps WAL from now on), save
    the method; synchronous only once the agent's receiver streams, since from then on every
    commit waits for it: without one it is refused, leaving asynchronous streaming on.  Off:
    synchronous_standby_names reset first, the method saved (the agent stops its receiver),
    the slot dropped, a segment switched and archived, then the streamed partials removed (the
    archived segment holds what they held)."""
    cluster.require_running()
    saved = load_policy(cluster)
    if stream:
        if synchronous:
            slots.refuse_synchronous(cluster)  # a Patroni cluster's: before anything changes
        slots.check_ready(cluster)
        slots.ensure_slot(cluster)
        save_policy(
            cluster,
            dataclasses.replace(
                saved, logfile_enabled=True, logfile_method="stream", logfile_synchronous=False
            ),
        )
        if not synchronous:
            slots.set_synchronous(cluster, False)
            return
        # the agent starts its receiver again with --synchronous once the policy says so; only
        # that one reports each flush at once, so only then may commits wait for it
        asked = datetime.now(UTC)
        save_policy(cluster, dataclasses.replace(load_policy(cluster), logfile_synchronous=True))
        if not slots.wait_receiving(cluster, receiver_timeout, started_after=asked):
            save_policy(
                cluster, dataclasses.replace(load_policy(cluster), logfile_synchronous=False)
            )
            raise ClusterStateError(
                f"no pgpitr receiver streams from {cluster.name!r} within "
                f"{receiver_timeout:.0f} s: synchronous streaming left off (asynchronous "
                "streaming is on), since every commit would wait for a receiver",
                hint="start this host's agent (`pgpitr agent start`), then set "
                "schedule.logfile.synchronous=true again",
            )
        slots.set_synchronous(cluster, True)
        return
    slots.set_synchronous(cluster, False)
    save_policy(
        cluster,
        dataclasses.replace(saved, logfile_method="archive", logfile_synchronous=False),
    )
    slots.drop_slot(cluster)
    wal_stream.clear_spool(cluster)  # the agent's receiver does too, as it stops
    repo = repository(cluster)
    if load_policy(cluster).logfile_enabled:
        switch_and_confirm(cluster, repo)
    removed = archive.remove_streamed_partials(repo, cluster.state.stanza)
    if removed:
        log.info("%s: %d streamed partial segment(s) removed", cluster.name, removed)


def switch_and_confirm(
    cluster: Cluster,
    repo: Repository,
    timeout: float = 60,
    on_wait: Callable[[float], None] | None = None,
) -> str:
    """Commit a heartbeat, switch WAL, and wait until the finished segment is archived.

    The heartbeat is a transaction with an xid, so its commit record carries a time: the
    recoverable window then reaches at least this moment."""
    with cluster.connect() as db:
        db.execute("SELECT pg_current_xact_id()")
        row = db.execute("SELECT pg_walfile_name(pg_switch_wal())").fetchone()
        assert row is not None
        name = row[0]
        # pg_switch_wal on an idle segment may not switch; make sure the file is complete
        deadline = time.monotonic() + timeout
        while True:
            if archive.stored_versions(repo, cluster.state.stanza, name):
                return name
            if time.monotonic() > deadline:
                stats = db.execute(
                    "SELECT failed_count, last_failed_wal, last_failed_time, last_archived_wal "
                    "FROM pg_stat_archiver"
                ).fetchone()
                raise RepositoryError(
                    f"WAL segment {name} did not reach {repo.url} within {timeout:.0f} s "
                    f"(archiver: {stats[0]} failures, last failed {stats[1] or '-'}, last "
                    f"archived {stats[3] or '-'})",
                    hint=f"see the server log {cluster.state.log_file}; PostgreSQL keeps the WAL "
                    "and retries",
                )
            if on_wait:
                on_wait(time.monotonic())
            time.sleep(0.2)
