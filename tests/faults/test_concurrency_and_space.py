"""Operations that overlap, and a repository that runs out of space."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from pgpitr import cluster_repository
from pgpitr.catalog import backups as catalog_backups
from pgpitr.errors import Busy, PitrError
from pgpitr.manifest import manifest_key
from pgpitr.operations import create, log_backup, retention
from pgpitr.postgres.cluster import Cluster
from tests import engine
from tests.faults.helpers import archived_cluster, in_child, now, pgbench, wait_archived
from tests.pg import commit_now, sql


def _backup_in_child(name: str, backup_name: str) -> subprocess.Popen:
    return in_child(f"from tests import engine; engine.backup({name!r}, {backup_name!r})")


def _wait_in_progress(cluster: Cluster, backup_name: str, child: subprocess.Popen) -> None:
    repo = cluster_repository.repository(cluster)
    deadline = time.monotonic() + 60
    while not repo.exists(manifest_key(cluster.name, backup_name)):
        assert child.poll() is None, child.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_overlapping_backup_retention_and_restore(home: Path) -> None:
    cluster = archived_cluster("busy")
    first = catalog_backups.list_backups(cluster_repository.repository(cluster), "busy")[0].name
    pgbench(cluster, "-i", "-s", "20")
    sql("busy", "CREATE TABLE msg (id int)")
    commit_now("busy", "INSERT INTO msg VALUES (1)")
    time.sleep(1.1)
    target = now().replace(microsecond=0)
    time.sleep(1.1)
    commit_now("busy", "INSERT INTO msg VALUES (2)")
    wait_archived(cluster, sql("busy", "SELECT pg_walfile_name(pg_switch_wal())")[0][0])

    child = _backup_in_child("busy", "running")
    _wait_in_progress(cluster, "running", child)
    with pytest.raises(Busy):  # two backups of one cluster: the second is refused
        engine.backup(cluster, "second")
    repo = cluster_repository.repository(cluster)
    wal_before = len(list(repo.list("busy/wal/")))
    assert retention.prune_wal(repo, "busy") == 0, "a running backup's WAL must be kept"
    # a restore while the source is being backed up uses the completed backup
    result = engine.restore("busy-copy", "busy", target)
    assert result.backup == first
    assert [r[0] for r in sql("busy-copy", "SELECT id FROM msg")] == [1]
    assert child.wait(timeout=300) == 0, child.stderr.read()
    statuses = {b.name: b.status for b in catalog_backups.list_backups(repo, "busy")}
    assert statuses == {first: "Completed", "running": "Completed"}
    assert len(list(repo.list("busy/wal/"))) >= wal_before - 1


@pytest.fixture
def small_repository(home: Path):
    """A 6 MB tmpfs as the repository, owned by the server's OS user; grown on demand."""
    from pgpitr.postgres.osuser import server_user

    mount = home / "small-repo"
    mount.mkdir()
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m,mode=0750", "tmpfs", str(mount)], check=True
    )
    user = server_user()
    import os

    os.chown(mount, user.uid, user.gid)

    def grow() -> None:
        subprocess.run(["mount", "-o", "remount,size=512m", str(mount)], check=True)

    yield mount, grow
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.root  # mounts a tmpfs
def test_a_full_repository_fails_the_backup_and_archiving_loudly(
    home: Path, small_repository
) -> None:
    mount, grow = small_repository
    cluster = create.create("full", repository_url=f"file://{mount}")
    log_backup.set_log_backup(cluster, True)
    pgbench(cluster, "-i", "-s", "15")  # ~250 MB of WAL: more than the repository holds
    switched = sql("full", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + 60
    while sql("full", "SELECT failed_count FROM pg_stat_archiver")[0][0] == 0:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert "No space left on device" in cluster.state.log_file.read_text()
    ready = list((cluster.state.datadir / "pg_wal" / "archive_status").glob("*.ready"))
    assert ready, "WAL that could not be archived stays in pg_wal"

    with pytest.raises(PitrError) as info:
        engine.backup(cluster, "no-room")
    assert "WAL archiving of cluster 'full' is failing" in str(info.value)
    statuses = json.dumps(
        [
            b.status
            for b in catalog_backups.list_backups(cluster_repository.repository(cluster), "full")
        ]
    )
    assert "Completed" not in statuses

    grow()
    wait_archived(cluster, switched, timeout=180)
    engine.backup(cluster, "with-room")
    backups = {
        b.name: b.status
        for b in catalog_backups.list_backups(cluster_repository.repository(cluster), "full")
    }
    assert backups["with-room"] == "Completed"
    assert backups.get("no-room", "Failed") == "Failed"
