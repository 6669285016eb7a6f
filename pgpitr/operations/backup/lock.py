"""The backup lock: one backup of a cluster at a time, the holder's pid and start in the lock
file."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from pgpitr.errors import Busy
from pgpitr.osutil import open_private
from pgpitr.postgres.cluster import Cluster


@contextmanager
def backup_lock(cluster: Cluster) -> Iterator[None]:
    """One backup per cluster at a time; a second one is refused, not queued (the flow's backup
    slot is where a second backup waits its turn: tasks/_slots.py)."""
    path = cluster.state.dir / "backup.lock"
    fd = _open_lock(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            raise Busy(
                f"a backup of cluster {cluster.name!r} is already running ({holder or 'pid ?'})",
                hint="wait for it to finish; `pgpitr cluster list-backup` shows its progress",
            ) from None
        os.ftruncate(fd, 0)
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        os.pwrite(fd, f"pid {os.getpid()}, started {stamp}".encode(), 0)
        yield
    finally:
        os.close(fd)


def _open_lock(path: Path) -> int:
    """The lock file, opened so that one planted in its place is refused: a symlink there (to a
    file of this account that the truncation below would empty) is never followed, and a file
    of another account, or a hard link, is not this home's lock."""
    return open_private(path, os.O_RDWR | os.O_CREAT, 0o644)
