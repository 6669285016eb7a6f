"""A backup's name: the rule a name follows, and the default one (cluster and second) a backup
gets when none is given."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

from pgpitr import cluster_repository
from pgpitr.errors import InvalidInput
from pgpitr.manifest import manifest_key
from pgpitr.postgres.cluster import Cluster

BACKUP_NAME_RULE = re.compile(r"^[a-z0-9][a-z0-9.-]{0,98}[a-z0-9]$")


def default_name(cluster: str, now: datetime) -> str:
    return f"backup-default-{cluster}-{now.strftime('%Y%m%d%H%M%S')}"


def fresh_name(cluster: str) -> str:
    """A default name no backup of CLUSTER has yet: the name is to the second, and two backups
    (a full and its incremental on a small database) can start in one second; the next second
    is waited for then.  Call it with the cluster's backup slot held, so no other run takes it."""
    repo = cluster_repository.repository(Cluster.get(cluster))
    stanza = Cluster.get(cluster).state.stanza
    while True:
        now = datetime.now(UTC)
        name = default_name(cluster, now)
        if not repo.exists(manifest_key(stanza, name)):
            return name
        time.sleep(1 - now.microsecond / 1e6)


def validate_name(name: str) -> None:
    if not BACKUP_NAME_RULE.fullmatch(name):
        raise InvalidInput(
            f"invalid backup name {name!r}: use 2 to 100 lower-case letters, digits, '.' and '-'"
        )
