"""The checks around a backup: before it, that the cluster runs and its repository answers
(``check_cluster``) and which backup an incremental is taken against (``choose_parent``); after
it, that the WAL reaches the repository (``confirm_wal_arrival``)."""

from __future__ import annotations

import logging

from pgpitr import cluster_repository, policy_store
from pgpitr import policy as pol
from pgpitr.catalog import backups as catalog_backups
from pgpitr.errors import InvalidInput, NotFound, PitrError
from pgpitr.operations import log_backup as operations_log_backup
from pgpitr.operations.edit_policy import require_incremental_support
from pgpitr.postgres.cluster import Cluster

log = logging.getLogger(__name__)

#: How long the WAL switched after a backup may take to reach the repository.
WAL_ARRIVAL_TIMEOUT = 120.0


def check_cluster(cluster: str) -> pol.BackupPolicy:
    """The cluster runs and its repository answers; returns its backup policy."""
    c = Cluster.get(cluster)
    c.require_running()
    c.require_primary()
    cluster_repository.repository(c).check()
    policy = policy_store.load_policy(c)
    log.info(
        "cluster %s runs on port %s; repository %s; log backup %s",
        cluster,
        c.state.port,
        c.state.repository,
        "on" if policy.logfile_enabled else "off",
    )
    return policy


def choose_parent(cluster: str, wanted: str | None = None) -> str:
    """The backup an incremental is taken against: ``wanted``, or the newest backup whose
    lineage is usable, on the server's current timeline, with a stored backup_manifest."""
    c = Cluster.get(cluster)
    require_incremental_support(c)
    with c.connect() as db:
        row = db.execute(
            "SELECT current_setting('summarize_wal'), "
            "(SELECT timeline_id FROM pg_control_checkpoint())"
        ).fetchone()
    assert row is not None
    summarize, timeline = row
    if summarize != "on":
        raise PitrError(
            f"summarize_wal is off on {cluster}: incremental backups are made from the "
            "server's WAL summaries",
            hint=(
                "turn it on in Patroni's configuration (`patronictl edit-config -p "
                "summarize_wal=on`: on every member)"
                if c.state.is_ha
                else "turn it on (ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf();)"
            )
            + f", then take a full backup: `pgpitr cluster backup {cluster}`",
        )
    repo = cluster_repository.repository(c)
    stanza = c.state.stanza
    backups = catalog_backups.list_backups(repo, stanza)
    broken = catalog_backups.broken_links(repo, stanza, backups)
    first = f"take a full backup first: `pgpitr cluster backup {cluster} --type full`"
    if wanted:
        chosen = next((b for b in backups if b.name == wanted), None)
        if chosen is None:
            catalog_backups.get_backup(repo, stanza, wanted)  # raises NotFound with a hint
        assert chosen is not None
        why = broken.get(wanted) or (None if chosen.completed else f"it is {chosen.status}")
        if why is None and chosen.timeline != timeline:
            why = f"it is on timeline {chosen.timeline}, the server on {timeline}"
        if why:
            raise InvalidInput(f"backup {wanted!r} cannot be a parent: {why}", hint=first)
    else:
        candidates = [
            b
            for b in backups
            if b.completed
            and b.name not in broken
            and b.timeline == timeline
            and b.system_identifier == c.state.system_identifier
        ]
        if not candidates:
            raise NotFound(
                f"cluster {cluster!r} has no completed backup on timeline {timeline} to take "
                "an incremental against",
                hint=first,
            )
        chosen = candidates[-1]
    if chosen.backup_manifest_sha256 is None:
        raise InvalidInput(
            f"backup {chosen.name!r} was taken before pgpitr stored backup manifests, so it "
            "cannot be the parent of an incremental",
            hint=first,
        )
    log.info("incremental backup of %s against %s (%s)", cluster, chosen.name, chosen.type)
    return chosen.name


def confirm_wal_arrival(cluster: str, timeout: float = WAL_ARRIVAL_TIMEOUT) -> str:
    """Switch WAL and wait until the finished segment is in the repository."""
    c = Cluster.get(cluster)
    segment = operations_log_backup.switch_and_confirm(
        c, cluster_repository.repository(c), timeout=timeout
    )
    log.info("WAL segment %s is in the repository", segment)
    return segment
