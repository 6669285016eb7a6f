"""Edit a cluster's backup policy: a new repository and the log-backup and streaming switches
take effect now; the deployments' schedules follow.

Each step takes a cluster's name and reloads its state, so that a retried step starts from what
is on disk.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pgpitr import policy as pol
from pgpitr.catalog.source import check_key
from pgpitr.cluster_repository import encryption_key_file
from pgpitr.errors import (
    InvalidInput,
)
from pgpitr.operations.create import enable_wal_summaries
from pgpitr.operations.log_backup import stream_mode, switch_streaming
from pgpitr.operations.log_backup import switch as switch_log_backup
from pgpitr.policy_store import load_policy, save_policy
from pgpitr.postgres import binaries, slots
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import RepositoryUrl, open_repository
from pgpitr.steps import Steps

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PolicyChange:
    current: pol.BackupPolicy
    new: pol.BackupPolicy

    @property
    def repository_switch(self) -> bool:
        if self.new.repository is None:
            return False
        return self.new.repository != self.current.repository

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
        return stream_mode(self.new) != stream_mode(self.current)


@dataclass(frozen=True)
class PolicyEdit:
    policy: pol.BackupPolicy
    schedules: list[str]


def run(
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
        switch_log_backup(steps, cluster, True)
    if change.streaming_switch:
        steps(switch_streaming, cluster, *stream_mode(change.new))
    if change.incrementals_asked:
        steps(switch_wal_summaries, cluster)
    if change.log_backup_switch and not change.new.logfile_enabled:
        switch_log_backup(steps, cluster, False)
    saved = steps(save_policy_of, cluster, change.new)
    return PolicyEdit(saved, steps.sync_schedules(cluster))


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
    if stream_mode(new)[1] and not stream_mode(current)[1]:
        slots.refuse_synchronous(Cluster.get(cluster))
    return change


def switch_repository(cluster: str, url: RepositoryUrl) -> None:
    """Archive and back up into another repository from now on (it must answer first)."""
    c = Cluster.get(cluster)
    checked = url
    key_file = encryption_key_file(checked, c.user, c.state.encryption_key_file)
    repo = open_repository(checked, c.state.credentials_file, key_file or None)
    repo.check()
    check_key(repo, c.state.stanza)  # the stanza there, if any, is encrypted the same way
    c.state.repository = checked
    c.state.encryption_key_file = key_file
    c.state.save()
    log.info("cluster %s now uses the repository %s", cluster, checked.display)


def save_policy_of(cluster: str, policy: pol.BackupPolicy) -> pol.BackupPolicy:
    c = Cluster.get(cluster)
    save_policy(c, policy)
    log.info("backup policy %s saved", policy.name)
    return load_policy(c)
