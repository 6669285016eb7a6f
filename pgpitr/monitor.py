"""Is WAL archiving keeping up?  Read from PostgreSQL itself, for an alert to act on.

Archiving is behind when the archiver reports a failure newer than its last success, or when a
finished segment has waited for the archiver longer than twice ``archive_timeout`` (PostgreSQL
marks each finished segment with an ``archive_status/*.ready`` file until it is archived).  The
age of the newest archived segment alone would cry wolf: an idle server finishes no segment and
so archives nothing, which is fine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pgpitr.postgres.cluster import Cluster


@dataclass(frozen=True)
class ArchiverStatus:
    cluster: str
    behind: bool
    reason: str
    archive_timeout: int  # seconds
    archived_count: int
    failed_count: int
    last_archived_wal: str | None
    last_archived_time: datetime | None
    last_failed_wal: str | None
    last_failed_time: datetime | None
    waiting: int  # finished segments not archived yet
    oldest_waiting_since: datetime | None

    def as_payload(self) -> dict:
        """JSON-ready fields, for an event or an artifact."""
        return {
            key: value.isoformat() if isinstance(value, datetime) else value
            for key, value in self.__dict__.items()
        }


_QUERY = """
SELECT a.archived_count, a.last_archived_wal, a.last_archived_time,
       a.failed_count, a.last_failed_wal, a.last_failed_time,
       (SELECT setting::int FROM pg_settings WHERE name = 'archive_timeout'),
       r.waiting, r.oldest
FROM pg_stat_archiver a,
     (SELECT count(*) AS waiting, min(modification) AS oldest
      FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready') r
"""


def archiver_status(cluster: Cluster, now: datetime | None = None) -> ArchiverStatus:
    """The archiver's state of a running cluster, and whether it is behind."""
    now = now or datetime.now(UTC)
    with cluster.connect() as db:
        row = db.execute(_QUERY).fetchone()
    assert row is not None
    archived, last_wal, last_time, failed, failed_wal, failed_time, timeout, waiting, oldest = row
    timeout = int(timeout or 0)
    reasons = []
    if failed_time is not None and (last_time is None or failed_time > last_time):
        reasons.append(
            f"the archiver fails: {failed} failure(s), the last on {failed_wal} at "
            f"{failed_time.isoformat(timespec='seconds')}"
        )
    limit = timedelta(seconds=2 * timeout) if timeout > 0 else timedelta(minutes=10)
    if oldest is not None and now - oldest > limit:
        waited = int((now - oldest).total_seconds())
        reasons.append(
            f"{waiting} finished WAL segment(s) wait for the archiver, the oldest for {waited} s "
            f"(more than twice archive_timeout, {timeout} s)"
        )
    return ArchiverStatus(
        cluster=cluster.name,
        behind=bool(reasons),
        reason="; ".join(reasons) or "archiving keeps up",
        archive_timeout=timeout,
        archived_count=int(archived or 0),
        failed_count=int(failed or 0),
        last_archived_wal=last_wal,
        last_archived_time=last_time,
        last_failed_wal=failed_wal,
        last_failed_time=failed_time,
        waiting=int(waiting or 0),
        oldest_waiting_since=oldest,
    )
