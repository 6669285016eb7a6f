"""kill -9 in the middle: nothing partial is ever visible as complete; a second run works."""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pgpitr import cluster_repository
from pgpitr.operations.restore import data as restore_data
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import open_repository
from pgpitr.state import ClusterState
from pgpitr.wal import archive
from tests.faults.helpers import archived_cluster, in_child, pgbench, wait_archived
from tests.pg import serverless_cluster, sql

SEGMENT = "000000010000000000000042"


@pytest.fixture
def big_segment_cluster(home: Path, repo_url: str) -> ClusterState:
    """A cluster's state and a 160 MB incompressible 'segment' (slow enough to be killed)."""
    state = serverless_cluster(home, "kill", repo_url, 42)
    (state.datadir / "pg_wal" / SEGMENT).write_bytes(os.urandom(160 * 1024 * 1024))
    return state


def _push(home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-m",
            "pgpitr",
            "--home",
            str(home),
            "wal-push",
            "--cluster",
            "kill",
            f"pg_wal/{SEGMENT}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _wait_lock_free(lock: Path, timeout: float = 120) -> None:
    """Until no spool worker holds ``lock`` (a worker exits a few seconds after it idles)."""
    deadline = time.monotonic() + timeout
    while lock.exists():
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            assert time.monotonic() < deadline, f"a worker still holds {lock}"
        finally:
            os.close(fd)
        time.sleep(0.1)


def _upload_started(state: ClusterState) -> bool:
    url = str(state.repository)
    if url.startswith("file://"):
        root = Path(url[len("file://") :])
        return any(".pgpitr-tmp-" in p.name for p in root.rglob("*"))
    import boto3

    repo = open_repository(url)
    s3 = boto3.client("s3", endpoint_url=repo.endpoint, region_name="us-east-1")
    return bool(s3.list_multipart_uploads(Bucket=repo.bucket).get("Uploads"))


def test_killed_wal_push_leaves_nothing_that_looks_archived(
    big_segment_cluster: ClusterState, home: Path
) -> None:
    state = big_segment_cluster
    process = _push(home)
    deadline = time.monotonic() + 60
    while not _upload_started(state):
        assert process.poll() is None, "wal-push finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    repo = open_repository(state.repository)
    assert archive.stored_versions(repo, "kill", SEGMENT) == []
    assert not (state.spool / "pushed" / SEGMENT).exists()

    again = _push(home)
    assert again.wait(timeout=120) == 0, again.stderr.read().decode()
    ((key, sha),) = archive.stored_versions(repo, "kill", SEGMENT)
    assert repo.get_document(key) == (state.datadir / "pg_wal" / SEGMENT).read_bytes()
    # what the killed writer left (a temporary file, or an unfinished multipart upload) is still
    # there, never listed as an object, and removed by age without touching the stored copy
    assert _upload_started(state)
    assert [i.key for i in repo.list("kill/") if ".pgpitr-tmp-" in i.key] == []
    assert repo.remove_stale_temporaries(older_than=0) == 1
    assert not _upload_started(state)
    assert archive.stored_versions(repo, "kill", SEGMENT) == [(key, sha)]
    assert repo.remove_stale_temporaries(older_than=0) == 0


def _kill_once_its_server_started(home: Path, new_cluster: str, code: str) -> None:
    """Run a restore in a child and SIGKILL it once the new cluster's server has started:
    listening, its status in postmaster.pid (the file comes first, and goes again when the
    port is taken, which the restore would have moved past had it not been killed)."""
    process = in_child(code)
    pidfile = home / "clusters" / new_cluster / "data" / "postmaster.pid"
    deadline = time.monotonic() + 300
    while not _listening(pidfile):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()


def _listening(pidfile: Path) -> bool:
    try:
        lines = pidfile.read_text().splitlines()
    except FileNotFoundError:
        return False
    return len(lines) >= 8 and bool(lines[7].strip())  # LOCK_FILE_LINE_PM_STATUS


def test_killed_restore_leaves_nothing_once_run_again(home: Path) -> None:
    source = archived_cluster("ksrc")
    sql("ksrc", "CREATE TABLE msg (id int)")
    sql("ksrc", "INSERT INTO msg VALUES (1)")
    pgbench(source, "-i", "-s", "25")  # WAL to replay: long enough to be killed during replay
    wait_archived(source, sql("ksrc", "SELECT pg_walfile_name(pg_switch_wal())")[0][0])
    code = "from tests import engine; engine.restore('kdst', 'ksrc', None)"
    _kill_once_its_server_started(home, "kdst", code)
    half = Cluster.get("kdst")
    assert restore_data.interrupted(half)
    # What the killed restore started goes on without it: its server, and the detached worker
    # that fetches WAL ahead into the new cluster's spool.  Both are stopped here, as a crash of
    # the host would stop them, so that the second run meets the same leftovers every time.  Left
    # running, the server may promote and archive into stanza kdst (see the next test), and the
    # worker may write into the directory the second run is removing.
    half.stop(mode="immediate")
    _wait_lock_free(half.state.spool / "fetch.lock")
    assert "kdst" not in [c.name for c in Cluster.all() if not restore_data.interrupted(c)]

    again = in_child(code)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert sql("kdst", "SELECT count(*) FROM msg") == [(1,)]
    assert sql("kdst", "SELECT count(*) FROM pgbench_accounts") == [(2_500_000,)]
    assert not restore_data.interrupted(Cluster.get("kdst"))
    assert (
        cluster_repository.repository(Cluster.get("kdst")).url
        == cluster_repository.repository(source).url
    )


def test_a_killed_restores_server_that_archives_alone_does_not_block_a_second_run(
    home: Path,
) -> None:
    source = archived_cluster("osrc")
    sql("osrc", "CREATE TABLE msg (id int)")
    sql("osrc", "INSERT INTO msg VALUES (1)")
    wait_archived(source, sql("osrc", "SELECT pg_walfile_name(pg_switch_wal())")[0][0])
    code = "from tests import engine; engine.restore('odst', 'osrc', None)"
    _kill_once_its_server_started(home, "odst", code)
    # the orphaned server replays to the end, promotes, and archives as odst
    repo = cluster_repository.repository(source)
    deadline = time.monotonic() + 300
    while not repo.exists(archive.archive_info_key("odst")):
        assert time.monotonic() < deadline, "the orphaned server never archived"
        time.sleep(0.1)
    sql("odst", "CREATE TABLE written_alone (i int)")
    sql("odst", "SELECT pg_switch_wal()")  # what archive_timeout would do a minute later
    while not any("/wal/00000002" in i.key for i in repo.list("odst/wal/")):
        assert time.monotonic() < deadline, "the orphaned server's segment was never archived"
        time.sleep(0.1)
    assert restore_data.interrupted(Cluster.get("odst"))

    again = in_child(code)
    out, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert sql("odst", "SELECT count(*) FROM msg") == [(1,)]
    assert not restore_data.interrupted(Cluster.get("odst"))
