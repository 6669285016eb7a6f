"""The local platform: create and delete clusters, their backup policy, the log-backup switch.

The operations (``run_create``, ``run_delete``, ``run_set_log_backup``, ``run_edit_policy``)
each put their steps in order here, once; the steps take a cluster's name and reload its state,
so that a retried step starts from what is on disk.  Whatever a failed create leaves behind is
removed before the error reaches the caller.
"""

from __future__ import annotations

import configparser
import dataclasses
import io
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgpitr import catalog, keys, wal
from pgpitr import policy as pol
from pgpitr import state as st
from pgpitr.errors import (
    AlreadyExists,
    ClusterStateError,
    EncryptionKeyError,
    InvalidInput,
    NotFound,
    PitrError,
    RepositoryError,
)
from pgpitr.postgres import binaries, conf, slots
from pgpitr.postgres.cluster import Cluster, validate_name
from pgpitr.postgres.command import OsUser
from pgpitr.repository import FileUrl, Repository, RepositoryUrl, open_repository
from pgpitr.steps import Steps

log = logging.getLogger(__name__)

POLICY_FILE = "policy.json"


# -- repository and policy of a cluster ------------------------------------------------------


def repository(cluster: Cluster) -> Repository:
    return open_repository(
        cluster.state.repository,
        cluster.state.credentials_file,
        cluster.state.encryption_key_file or None,
    )


def encryption_key_file(url: RepositoryUrl | str, user: OsUser, recorded: str = "") -> str:
    """The key file a cluster archiving into ``url`` records ("" for a plain repository):
    checked to hold keys, mode 0600, readable by the server's OS user ``user``."""
    location = RepositoryUrl.parse(url)
    if not location.encrypted:
        return ""
    path = keys.key_file_for_server(location.display, recorded or None)
    if not user.is_self:
        from pgpitr.postgres.command import run

        if run(["test", "-r", str(path)], user=user, check=False).returncode != 0:
            raise EncryptionKeyError(
                f"the key file {path} is not readable by the OS user {user.name}, which runs "
                "PostgreSQL's archive and restore commands",
                hint=f"chown {user.name} {path} (mode 0600), in a directory it can enter",
            )
    return str(path)


def check_new_cluster_key(url: str | None) -> None:
    """Before a create flow starts: an encrypted repository's key file is usable."""
    from pgpitr.postgres.osuser import server_user

    if not url or not RepositoryUrl.parse(url).encrypted:
        return
    try:
        user = server_user(create=False)
    except PitrError:  # no server account yet: the flow creates it, then checks
        return
    encryption_key_file(url, user)


def agent_policy(cluster: Cluster) -> pol.BackupPolicy | None:
    """The policy of a cluster that this host's agent looks after (heartbeats, streaming): of
    this host, not being restored, not a drill's scratch cluster; None otherwise, or when its
    policy cannot be read."""
    from pgpitr import scratch

    if cluster.state.host != st.this_host() or cluster.state.restore_source:
        return None
    if scratch.is_scratch(cluster.name):
        return None
    try:
        return load_policy(cluster)
    except (OSError, ValueError, PitrError):
        return None


def load_policy(cluster: Cluster) -> pol.BackupPolicy:
    import json

    path = cluster.state.dir / POLICY_FILE
    with open(path) as f:
        return pol.from_dict(json.load(f))


def save_policy(cluster: Cluster, policy: pol.BackupPolicy) -> None:
    st.write_json_atomic(cluster.state.dir / POLICY_FILE, pol.to_dict(policy))


def _store_credentials(cluster: Cluster) -> None:
    """Keep the AWS keys of the environment for the archiver (mode 0600, server account)."""
    key, secret = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if not RepositoryUrl.parse(cluster.state.repository).is_s3 or not key or not secret:
        return
    ini = configparser.ConfigParser()
    ini["default"] = {"aws_access_key_id": key, "aws_secret_access_key": secret}
    if os.environ.get("AWS_SESSION_TOKEN"):
        ini["default"]["aws_session_token"] = os.environ["AWS_SESSION_TOKEN"]
    text = io.StringIO()
    ini.write(text)
    conf.write_file(cluster.state.credentials_file, text.getvalue(), cluster.owner, 0o600)


def _prepare_file_repository(cluster: Cluster) -> None:
    """A file repository must be writable by the server account, which runs the archiver."""
    location = RepositoryUrl.parse(cluster.state.repository)
    if not isinstance(location, FileUrl):
        return
    from pgpitr.postgres.command import run
    from pgpitr.postgres.osuser import make_dir

    root = location.path
    if not root.exists():
        make_dir(root, cluster.user, 0o750)
    probe = run(["test", "-w", str(root), "-a", "-x", str(root)], user=cluster.user, check=False)
    if probe.returncode != 0:
        raise RepositoryError(
            f"the OS user {cluster.state.os_user} cannot write to the repository {location}",
            hint=f"chown {cluster.state.os_user} {root}",
        )


def ensure_archive_info(cluster: Cluster, repo: Repository) -> dict:
    return wal.check_archive_info(
        repo,
        cluster.state.stanza,
        cluster.state.system_identifier,
        create={
            "cluster": cluster.name,
            "pg_version": cluster.state.pg_version,
            "wal_segment_size": cluster.state.wal_segment_size,
        },
    )


# -- the operations --------------------------------------------------------------------------


@dataclass(frozen=True)
class PolicyChange:
    current: pol.BackupPolicy
    new: pol.BackupPolicy

    @property
    def repository_switch(self) -> bool:
        if not self.new.repository:
            return False
        if not self.current.repository:
            return True
        return RepositoryUrl.parse(self.new.repository) != RepositoryUrl.parse(
            self.current.repository
        )

    @property
    def incrementals_asked(self) -> bool:
        """Scheduled incrementals turned on: they need WAL summaries."""
        return self.new.incremental_enabled and not self.current.incremental_enabled

    @property
    def log_backup_switch(self) -> bool:
        return self.new.logfile_enabled != self.current.logfile_enabled

    @property
    def streaming_switch(self) -> bool:
        """Streaming or synchronous streaming turned on or off (log backup's own switch
        included: streaming needs it)."""
        return _stream_mode(self.new) != _stream_mode(self.current)


def _stream_mode(policy: pol.BackupPolicy) -> tuple[bool, bool]:
    streams = policy.logfile_enabled and policy.logfile_method == "stream"
    return streams, streams and policy.logfile_synchronous


@dataclass(frozen=True)
class PolicyEdit:
    policy: pol.BackupPolicy
    schedules: list[str]


def run_create(
    steps: Steps,
    name: str,
    port: int | None = None,
    repository_url: str | None = None,
    bindir: str | None = None,
) -> dict[str, Any]:
    """A new running cluster with the default backup policy, and its schedules."""
    created = steps(create_cluster, name, port, repository_url, bindir)
    steps.sync_schedules(name)
    return created


def run_delete(steps: Steps, name: str) -> None:
    """Stop and remove the cluster and its schedules; its backups stay in the repository."""
    steps(delete_cluster, name)
    steps.remove_schedules(name)


def run_set_log_backup(steps: Steps, cluster: str, enabled: bool) -> str | None:
    return steps(switch_log_backup, cluster, enabled)


def run_edit_policy(
    steps: Steps,
    cluster: str,
    settings: list[str] | None = None,
    policy: dict[str, Any] | None = None,
) -> PolicyEdit:
    """Change CLUSTER's backup policy with kbcli settings or a whole policy; a new repository
    and the log-backup switch take effect now; the deployments' schedules follow."""
    change = steps(read_policy_change, cluster, settings, policy)
    if change.repository_switch:
        steps(switch_repository, cluster, change.new.repository)
    if change.log_backup_switch and change.new.logfile_enabled:
        steps(switch_log_backup, cluster, True)
    if change.streaming_switch:
        steps(switch_streaming, cluster, *_stream_mode(change.new))
    if change.incrementals_asked:
        steps(switch_wal_summaries, cluster)
    if change.log_backup_switch and not change.new.logfile_enabled:
        steps(switch_log_backup, cluster, False)
    saved = steps(save_policy_of, cluster, change.new)
    return PolicyEdit(saved, steps.sync_schedules(cluster))


# -- the steps -------------------------------------------------------------------------------


def create_cluster(
    name: str, port: int | None, repository_url: str | None, bindir: str | None = None
) -> dict[str, Any]:
    """initdb, configure, start; a failed attempt removes what it made before it fails."""
    c = create(name, port=port, repository_url=repository_url, bindir=bindir)
    log.info(
        "cluster %s created: PostgreSQL %s, port %s, repository %s",
        name,
        c.state.pg_version,
        c.state.port,
        c.state.repository,
    )
    return {
        "name": name,
        "port": c.state.port,
        "repository": c.state.repository,
        "pg_version": c.state.pg_version,
    }


def delete_cluster(name: str) -> None:
    delete(Cluster.get(name))
    log.info("cluster %s stopped and removed; its backups stay in the repository", name)


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


def switch_wal_summaries(cluster: str) -> bool:
    """``summarize_wal = on`` for the incrementals asked for, unless it is on; on a registered
    server its value before is recorded first, so that ``unregister`` puts it back."""
    c = Cluster.get(cluster)  # a 17+ server: read_policy_change refused older ones
    with c.connect() as db:
        row = db.execute(
            "SELECT setting, coalesce(sourcefile, '') FROM pg_settings WHERE name = 'summarize_wal'"
        ).fetchone()
    assert row is not None
    setting, source_file = row
    if setting == "on":
        return False
    if c.registered and "summarize_wal" not in c.state.previous_settings:
        c.state.previous_settings["summarize_wal"] = {
            "value": setting,
            "in_auto_conf": source_file.endswith("postgresql.auto.conf"),
        }
        c.state.save()
    enable_wal_summaries(c)
    log.info("WAL summaries of %s turned on (summarize_wal = on, a reload): incrementals", cluster)
    return True


#: the first major with incremental backups (pg_basebackup --incremental, WAL summaries)
INCREMENTAL_SINCE = 17


def require_incremental_support(c: Cluster) -> None:
    """Refuse an incremental on a server older than 17, naming the version it runs."""
    major = c.state.pg_version or binaries.major_of(c.bindir)
    if major < INCREMENTAL_SINCE:
        raise InvalidInput(
            f"incremental backups need PostgreSQL {INCREMENTAL_SINCE} or later; "
            f"{c.name} runs {major}",
            hint=f"take a full backup: `pgpitr cluster backup {c.name} --type full`",
        )


def read_policy_change(
    cluster: str, settings: list[str] | None, policy: dict[str, Any] | None
) -> PolicyChange:
    """The policy as it is and as asked for; checked, nothing saved."""
    current = load_policy(Cluster.get(cluster))
    new = pol.apply_settings(current, settings or []) if policy is None else pol.from_dict(policy)
    if new.cluster != cluster:
        raise InvalidInput(f"the policy is {new.name}, not the policy of cluster {cluster!r}")
    change = PolicyChange(current, new)
    if change.incrementals_asked:  # refused now rather than failing at every scheduled run
        require_incremental_support(Cluster.get(cluster))
    return change


def switch_repository(cluster: str, url: str) -> None:
    """Archive and back up into another repository from now on (it must answer first)."""
    c = Cluster.get(cluster)
    checked = RepositoryUrl.parse(url)
    key_file = encryption_key_file(checked, c.user, c.state.encryption_key_file)
    repo = open_repository(checked, c.state.credentials_file, key_file or None)
    repo.check()
    check_key(repo, c.state.stanza)  # the stanza there, if any, is encrypted the same way
    c.state.repository = str(checked)
    c.state.encryption_key_file = key_file
    c.state.save()
    log.info("cluster %s now uses the repository %s", cluster, checked.display)


def save_policy_of(cluster: str, policy: pol.BackupPolicy) -> pol.BackupPolicy:
    c = Cluster.get(cluster)
    save_policy(c, policy)
    log.info("backup policy %s saved", policy.name)
    return load_policy(c)


# -- where the backups of a cluster are (a live one, or one deleted whose backups remain) ------


@dataclass(frozen=True)
class Source:
    """Where a restore reads from: a repository and a stanza (the source cluster's name)."""

    cluster: str
    repository: str
    credentials_file: str | None = None
    #: the binaries of the source cluster when it lives on this host
    bindir: str | None = None
    #: the key file the source cluster recorded (an encrypted repository); else the environment's
    key_file: str | None = None

    def open(self) -> Repository:
        creds = Path(self.credentials_file) if self.credentials_file else None
        return open_repository(self.repository, creds, self.key_file)


def check_key(repo: Repository, stanza: str) -> dict | None:
    """Read the stanza's archive info, if it has one: a wrong, missing or needless encryption
    key fails here with its own message (the header is checked before anything is decrypted),
    before anything is created.  Returns the archive info (None without one)."""
    key = wal.archive_info_key(stanza)
    if repo.exists(key):
        return repo.get_json(key)
    return None


def resolve_source(name: str, repository: str | None = None) -> Source:
    """The source of a restore: a cluster pgpitr knows, or one deleted whose backups remain."""
    validate_name(name)
    try:
        cluster = Cluster.get(name)
        return Source(
            name,
            repository or cluster.state.repository,
            str(cluster.state.credentials_file),
            str(cluster.bindir),
            cluster.state.encryption_key_file or None,
        )
    except NotFound:
        pass
    url = repository or st.default_repository_url()
    source = Source(name, url)
    if not source.open().exists(wal.archive_info_key(name)) and not catalog.list_backups(
        source.open(), name
    ):
        raise NotFound(
            f"cluster {name!r} is unknown and the repository {source.open().url} has no backups "
            "of it",
            hint="see `pgpitr cluster list`, or pass --backup-repo with the repository URL "
            "(`pgpitr info` lists the stanzas of each repository)",
        )
    return source


# -- lifecycle -------------------------------------------------------------------------------


def create(
    name: str,
    *,
    port: int | None = None,
    repository_url: RepositoryUrl | str | None = None,
    bindir: Path | str | None = None,
    version: int | None = None,
) -> Cluster:
    """A new, running cluster with archive_mode on and log backup off, run by the binaries in
    ``bindir`` (or those of PostgreSQL ``version``, or the newest installed)."""
    url = str(RepositoryUrl.parse(repository_url or st.default_repository_url()))
    binaries_dir = binaries.resolve(version, bindir)
    from pgpitr.postgres.osuser import server_user

    key_file = encryption_key_file(url, server_user())  # refused before anything is made
    now = datetime.now(UTC).isoformat(timespec="seconds")
    cluster = Cluster.prepare(name, port=port, repository=url, created=now, bindir=binaries_dir)
    try:
        if key_file:
            cluster.state.encryption_key_file = key_file
            cluster.state.save()
        _store_credentials(cluster)
        _prepare_file_repository(cluster)
        repo = repository(cluster)
        repo.check()
        stanza = cluster.state.stanza
        if catalog.leftover_stanza(repo, stanza):
            repo.delete_prefix(f"{stanza}/")
        if repo.exists(wal.archive_info_key(stanza)):
            raise AlreadyExists(
                f"the repository {repo.url} already holds backups of a cluster named {name!r}",
                hint=f"choose another name, or remove them with `pgpitr cluster delete-backup "
                f"{name} --force`",
            )
        cluster.initdb()
        cluster.configure(archive=conf.archive_command(st.home(), name, enabled=False))
        cluster.refresh_identity()
        save_policy(cluster, pol.BackupPolicy(cluster=name, repository=url, create_time=now))
        cluster.start(move_if_port_taken=port is None)
        cluster.wait_ready()
        enable_wal_summaries(cluster)
    except BaseException:
        cluster.remove()
        raise
    return cluster


def enable_wal_summaries(cluster: Cluster) -> bool:
    """``summarize_wal = on`` (a reload, no restart) on PostgreSQL 17+, which incremental
    backups need; False on older servers.  Through ALTER SYSTEM, so a restored copy keeps it."""
    if (cluster.state.pg_version or 0) < 17:
        return False
    cluster.alter_system({"summarize_wal": "on"})
    return True


def delete(cluster: Cluster) -> None:
    """Stop and remove a cluster.  Its backups and WAL stay in the repository.  A registered
    server is refused (``unregister`` is how pgpitr lets go of it)."""
    cluster.refuse_if_registered("delete")
    cluster.remove()


# -- log backup ------------------------------------------------------------------------------


def set_log_backup(cluster: Cluster, enabled: bool, timeout: float = 60) -> str | None:
    """Turn WAL archiving on or off without a restart.

    On: check the repository, set the archive command, reload, switch to a new segment and wait
    until that segment is in the repository; raise if it does not arrive.  Off: acknowledge WAL
    without archiving it, so that pg_wal does not fill up.  Returns the confirmed segment name."""
    cluster.require_running()
    repo = repository(cluster)
    if enabled:
        repo.check()
        ensure_archive_info(cluster, repo)
    cluster.set_archive_command(conf.archive_command(st.home(), cluster.name, enabled))
    save_policy(cluster, dataclasses.replace(load_policy(cluster), logfile_enabled=enabled))
    if not enabled:
        return None
    return switch_and_confirm(cluster, repo, timeout=timeout)


def set_streaming(
    cluster: Cluster, stream: bool, synchronous: bool, receiver_timeout: float = 30
) -> None:
    """Stream WAL with pg_receivewal under the agent (pgpitr/walstream.py), or stop.

    On: check the server can stream, create the slot (the server keeps WAL from now on), save
    the method; synchronous only once the agent's receiver streams, since from then on every
    commit waits for it: without one it is refused, leaving asynchronous streaming on.  Off:
    synchronous_standby_names reset first, the method saved (the agent stops its receiver),
    the slot dropped, a segment switched and archived, then the streamed partials removed (the
    archived segment holds what they held)."""
    cluster.require_running()
    saved = load_policy(cluster)
    if stream:
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
    clear_stream_spool(cluster)  # the agent's receiver does too, as it stops
    repo = repository(cluster)
    if load_policy(cluster).logfile_enabled:
        switch_and_confirm(cluster, repo)
    removed = wal.remove_streamed_partials(repo, cluster.state.stanza)
    if removed:
        log.info("%s: %d streamed partial segment(s) removed", cluster.name, removed)


def clear_stream_spool(cluster: Cluster) -> None:
    """Streaming turned off: empty the receiver's spool.  Its files are archive_command's now
    (the server keeps each segment until it is archived), and a partial left there would be
    uploaded after ``set_streaming`` removed the partials, or make the receiver of a later
    stream-on start at that old segment, which the server may have recycled by then."""
    try:
        entries = list(os.scandir(conf.stream_spool_dir(Path(cluster.state.home), cluster.name)))
    except FileNotFoundError:
        return
    for entry in entries:
        if wal.WAL_FILE_RE.match(entry.name):
            Path(entry.path).unlink(missing_ok=True)


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
            if wal.stored_versions(repo, cluster.state.stanza, name):
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


def require_idle_name(name: str) -> None:
    if (st.clusters_dir() / name).exists():
        raise AlreadyExists(f"cluster {name!r} already exists")


def check_not_running(cluster: Cluster) -> None:
    if cluster.is_running():
        raise ClusterStateError(f"cluster {cluster.name!r} is running")
