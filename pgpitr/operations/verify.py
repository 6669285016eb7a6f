"""Verifying a backup: read it and the WAL it needs back in full, then pg_verifybackup; an
incremental with every link of its lineage (pg_verifybackup checks an incremental's own files
against its own backup_manifest, INCREMENTAL.* members included)."""

from __future__ import annotations

import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from pgpitr import cluster_repository
from pgpitr import state as st
from pgpitr.catalog import backups as catalog_backups
from pgpitr.errors import ChecksumMismatch, InvalidInput
from pgpitr.manifest import BackupManifest, clear_damage, copy_data, record_damage
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import check, popen, verifybackup_command
from pgpitr.postgres.command import run as run_command
from pgpitr.repository import Repository
from pgpitr.steps import Steps
from pgpitr.wal import archive

log = logging.getLogger(__name__)


def run(steps: Steps, cluster: str, name: str) -> str:
    """The verify-backup operation: one step, which records the backup's damage when it finds
    some (and clears the record when the backup is intact again)."""
    return steps(verify_backup, cluster, name)


def verify_backup(cluster: str, name: str) -> str:
    """Every byte of backup NAME against its checksum, pg_verifybackup on the result; a report.
    An incremental is verified with its whole lineage: each link the same way, full first."""
    c = Cluster.get(cluster)
    repo = cluster_repository.repository(c)
    stanza = c.state.stanza
    b = catalog_backups.get_backup(repo, stanza, name)
    if not b.completed:
        raise InvalidInput(
            f"backup {name!r} is {b.status}; only a Completed backup can be verified"
        )
    backups = catalog_backups.list_backups(repo, stanza)
    # a damage record is what this verify is to confirm or clear: it does not refuse
    broken = catalog_backups.broken_links(repo, stanza, backups, damage=False)
    if name in broken:
        raise ChecksumMismatch(
            f"backup {name!r} cannot be restored: {broken[name]}",
            hint="take a new full backup; `pgpitr cluster describe` shows what is usable",
        )
    reports = [
        _verify_one(c, repo, stanza, link) for link in catalog_backups.lineage(backups, name)
    ]
    report = (
        reports[0]
        if len(reports) == 1
        else (f"backup {name} and its lineage are intact: " + "; ".join(reports))
    )
    log.info(report)
    return report


def _verify_one(c: Cluster, repo: Repository, stanza: str, b: BackupManifest) -> str:
    name = b.name
    work = Path(tempfile.mkdtemp(prefix=f"pgpitr-verify-{name}-", dir=_tmp_dir()))
    try:
        data, waldir = work / "data", work / "wal"
        data.mkdir()
        waldir.mkdir()
        argv = ["tar", "--extract", "--file", "-", "--directory", str(data)]
        tar = popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
        assert tar.stdin is not None
        try:
            copy_data(repo, stanza, b, tar.stdin)
            tar.stdin.close()
        except BaseException:
            tar.kill()
            tar.wait()
            raise
        stderr = tar.stderr.read().decode() if tar.stderr else ""
        tar.wait()
        check(tar, argv, stderr)
        assert b.timeline is not None
        first = archive.segment_of(b.start_lsn_int, b.timeline, b.wal_segment_size)
        last = archive.segment_of(b.stop_lsn_int, b.timeline, b.wal_segment_size)
        fetched = 0
        if not b.wal_in_backup:
            segment = first
            while segment.number <= last.number:
                seg_name = segment.name(b.wal_segment_size)
                archive.fetch_file(repo, stanza, seg_name, waldir / seg_name)
                fetched += 1
                segment = segment.next()
        verify = verifybackup_command(c.bindir, data, waldir if fetched else None)
        result = run_command(verify, check=False)
        if result.returncode != 0:
            failed = ChecksumMismatch(
                f"backup {name!r} failed pg_verifybackup:\n    "
                + "\n    ".join(result.stderr.strip().splitlines()[-5:])
            )
            record_damage(repo, stanza, name, failed.message)
            raise failed
        cleared = clear_damage(repo, stanza, name)
        return (
            f"backup {name} is intact: {b.stored_size} bytes match their checksum, "
            f"pg_verifybackup passed, {fetched} WAL segment(s) verified"
            + (" (its damage record removed)" if cleared else "")
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tmp_dir() -> Path:
    path = st.home() / "tmp"
    path.mkdir(parents=True, exist_ok=True)
    return path
