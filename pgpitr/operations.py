"""Whole operations as one call each, for the command line: the engine steps in their order.

Prefect flows (flows/) run the same steps as separate tasks; this module is the plain-Python
path and holds no logic of its own beyond the order of the steps.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pgpitr import backup as bk
from pgpitr import catalog, clusters, retention, timeparse, wal
from pgpitr import policy as pol
from pgpitr import restore as rs
from pgpitr import state as st
from pgpitr.errors import ChecksumMismatch, InvalidInput
from pgpitr.postgres.cluster import Cluster, bindir
from pgpitr.postgres.command import check, popen, run

Progress = Callable[[int, int], None]


def backup(cluster: Cluster, name: str | None = None, progress: Progress | None = None) -> dict:
    policy = clusters.load_policy(cluster)
    repo = clusters.repository(cluster)
    result = bk.take_backup(
        cluster,
        repo,
        name=name,
        log_backup=policy.logfile_enabled,
        ttl=timeparse.parse_ttl(policy.ttl),
        compress_level=bk.level_of(policy.compression),
        progress=progress,
    )
    if policy.logfile_enabled:
        clusters.switch_and_confirm(cluster, repo)
    return result.manifest


def describe(cluster: Cluster) -> dict:
    policy = clusters.load_policy(cluster)
    repo = clusters.repository(cluster)
    backups = catalog.list_backups(repo, cluster.state.stanza)
    ranges = catalog.backup_ranges(repo, cluster.state.stanza, cluster.bindir, backups)
    completed = [b for b in backups if b.completed]
    return {
        "name": cluster.name,
        "platform": cluster.state.platform,
        "status": "Running" if cluster.is_running() else "Stopped",
        "port": cluster.state.port,
        "socket_dir": str(cluster.state.socket_dir),
        "datadir": str(cluster.state.datadir),
        "system_identifier": cluster.state.system_identifier,
        "repository": repo.url,
        "policy": policy.name,
        "auto_backup": policy.datafile_enabled,
        "backup_schedule": policy.cron,
        "type": "Full + WAL" if policy.logfile_enabled else "Full",
        "log_backup": policy.logfile_enabled,
        "backup_ttl": policy.ttl,
        "last_schedule": completed[-1].manifest["start_time"] if completed else None,
        "backups": len(backups),
        "recoverable_time": [(a.isoformat(), b.isoformat()) for a, b in catalog.merge(ranges)],
        "ranges": [dataclasses.asdict(r) for r in ranges],
    }


def restore(
    new_name: str,
    source_name: str,
    target: datetime | None,
    *,
    backup_name: str | None = None,
    repository: str | None = None,
    progress: Progress | None = None,
) -> rs.RestoreResult:
    source = rs.resolve_source(source_name, repository)
    plan = rs.plan(source, new_name, target, backup_name)
    return rs.restore(plan, progress)


def delete_backups(
    cluster_name: str, names: list[str] | None, *, force: bool, repository: str | None = None
) -> retention.Removed:
    source = rs.resolve_source(cluster_name, repository)
    repo = source.open()
    if names is None:
        names = [b.name for b in catalog.list_backups(repo, cluster_name)]
    return retention.delete_backups(repo, cluster_name, names, bindir(), force=force)


def update_policy(cluster: Cluster, new: pol.BackupPolicy) -> None:
    """Save a changed policy; switching log backup or the repository takes effect now."""
    current = clusters.load_policy(cluster)
    if new.repository and new.repository != cluster.state.repository:
        from pgpitr.repository import open_repository, validate_url

        url = validate_url(new.repository)
        open_repository(url, cluster.state.credentials_file).check()
        cluster.state.repository = url
        cluster.state.save()
    clusters.save_policy(cluster, new)
    if new.logfile_enabled != current.logfile_enabled:
        clusters.set_log_backup(cluster, new.logfile_enabled)


def verify_backup(cluster: Cluster, name: str) -> str:
    """Read a backup and the WAL it needs in full; run pg_verifybackup on the result."""
    repo = clusters.repository(cluster)
    stanza = cluster.state.stanza
    b = catalog.get_backup(repo, stanza, name)
    if not b.completed:
        raise InvalidInput(
            f"backup {name!r} is {b.status}; only a Completed backup can be verified"
        )
    work = Path(tempfile.mkdtemp(prefix=f"pgpitr-verify-{name}-", dir=_tmp_dir()))
    try:
        data, waldir = work / "data", work / "wal"
        data.mkdir()
        waldir.mkdir()
        argv = ["tar", "--extract", "--file", "-", "--directory", str(data)]
        tar = popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert tar.stdin is not None
        try:
            bk.copy_data(repo, stanza, b.manifest, tar.stdin)
            tar.stdin.close()
        except BaseException:
            tar.kill()
            tar.wait()
            raise
        stderr = tar.stderr.read().decode() if tar.stderr else ""
        tar.wait()
        check(tar, argv, stderr)
        segment_size = int(b.manifest["wal_segment_size"])
        first = wal.segment_of(b.start_lsn, b.timeline, segment_size)
        last = wal.segment_of(b.stop_lsn, b.timeline, segment_size)
        fetched = 0
        if not b.manifest.get("wal_in_backup"):
            segment = first
            while segment.number <= last.number:
                seg_name = segment.name(segment_size)
                wal.fetch_file(repo, stanza, seg_name, waldir / seg_name)
                fetched += 1
                segment = segment.next()
        verify = [str(cluster.bindir / "pg_verifybackup"), "--quiet", str(data)]
        if fetched:
            verify[2:2] = ["--wal-directory", str(waldir)]
        result = run(verify, check=False)
        if result.returncode != 0:
            raise ChecksumMismatch(
                f"backup {name!r} failed pg_verifybackup:\n    "
                + "\n    ".join(result.stderr.strip().splitlines()[-5:])
            )
        return (
            f"backup {name} is intact: {b.manifest['stored_size']} bytes match their "
            f"checksum, pg_verifybackup passed, {fetched} WAL segment(s) verified"
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tmp_dir() -> Path:
    path = st.home() / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path
