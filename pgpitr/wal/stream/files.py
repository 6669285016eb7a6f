"""A streaming cluster's files under its spool: the directory pg_receivewal writes into, the
receiver's status file (what it did last, for describe and the next agent), the streamed files
set aside on a conflict; and whether a policy streams at all."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pgpitr import policy as pol
from pgpitr.postgres import conf
from pgpitr.postgres.cluster import Cluster
from pgpitr.wal import archive

STATUS_FILE = "stream.json"  # under spool/: what the receiver did last, for describe


def spool_dir(cluster: Cluster) -> Path:
    return conf.stream_spool_dir(Path(cluster.state.home), cluster.name)


def status_path(cluster: Cluster) -> Path:
    return cluster.state.spool / STATUS_FILE


def streaming(policy: pol.BackupPolicy) -> bool:
    """Whether the policy streams WAL (log backup on, method stream)."""
    return policy.logfile_enabled and policy.logfile_method == "stream"


def read_status(cluster: Cluster) -> dict[str, Any] | None:
    try:
        return json.loads(status_path(cluster).read_text())
    except (OSError, ValueError):
        return None


def conflict_dir(cluster: Cluster) -> Path:
    """Where a streamed file whose name the repository holds with other bytes is kept, beside
    the stored copy that stays (the same rule as wal-push: never overwrite)."""
    return cluster.state.spool / "stream-conflict"


def clear_spool(cluster: Cluster) -> None:
    """Streaming turned off: empty the receiver's spool.  Its files are archive_command's now
    (the server keeps each segment until it is archived), and a partial left there would be
    uploaded after ``set_streaming`` removed the partials, or make the receiver of a later
    stream-on start at that old segment, which the server may have recycled by then."""
    try:
        entries = list(os.scandir(conf.stream_spool_dir(Path(cluster.state.home), cluster.name)))
    except FileNotFoundError:
        return
    for entry in entries:
        if archive.WAL_FILE_RE.match(entry.name):
            Path(entry.path).unlink(missing_ok=True)
