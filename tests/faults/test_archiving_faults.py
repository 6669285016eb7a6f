"""The repository goes away while PostgreSQL writes; the source crashes; a segment is damaged."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from pgpitr import cluster_repository
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import PitrError
from pgpitr.postgres import cluster as postgres_cluster
from pgpitr.wal import archive
from tests import engine
from tests.conftest import free_port
from tests.faults.helpers import archived_cluster, now, pgbench, wait_archived
from tests.pg import commit_now, sql


@pytest.fixture
def own_moto(monkeypatch: pytest.MonkeyPatch):
    """A moto server this test may stop and start again (its data lives in this process)."""
    import boto3
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAOUTAGE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "outage-secret")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
        Bucket="outage"
    )

    class Control:
        url = f"s3://outage/pg?endpoint={endpoint}&region=us-east-1"

        def stop(self) -> None:
            server.stop()

        def start(self) -> None:
            nonlocal server
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()

    control = Control()
    yield control
    try:
        server.stop()
    except Exception:  # noqa: S110 - already stopped
        pass


def test_repository_outage_during_archiving_loses_nothing(home: Path, own_moto) -> None:
    cluster = archived_cluster("outage", own_moto.url)
    sql("outage", "CREATE TABLE msg (id int PRIMARY KEY)")
    commit_now("outage", "INSERT INTO msg VALUES (1)")
    own_moto.stop()
    load = pgbench(cluster, "-i", "-s", "3", check=False)  # WAL while the repository is away
    load.wait(timeout=120)
    commit_now("outage", "INSERT INTO msg VALUES (2)")
    time.sleep(1.1)
    inside_outage = now().replace(microsecond=0)  # after row 2's commit, before row 3's
    time.sleep(1.1)
    commit_now("outage", "INSERT INTO msg VALUES (3)")
    switched = sql("outage", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    deadline = time.monotonic() + 30
    while sql("outage", "SELECT failed_count FROM pg_stat_archiver")[0][0] == 0:
        assert time.monotonic() < deadline, "the archiver never reported the outage"
        time.sleep(0.2)
    ready = list((cluster.state.datadir / "pg_wal" / "archive_status").glob("*.ready"))
    assert ready, "PostgreSQL must keep the WAL it could not archive"
    assert (
        "pgpitr: cannot reach the repository s3://outage/pg" in cluster.state.log_file.read_text()
    )

    own_moto.start()
    wait_archived(cluster, switched, timeout=120)
    repo = cluster_repository.repository(cluster)
    (window,) = catalog_window.recoverable_window(repo, "outage", cluster.bindir).periods
    assert window[0] < inside_outage < window[1], "no gap: the window covers the outage"

    result = engine.restore("after-outage", "outage", inside_outage)
    assert [r[0] for r in sql("after-outage", "SELECT id FROM msg ORDER BY id")] == [1, 2]
    assert result.last_commit is not None and result.last_commit <= inside_outage


def test_source_crash_during_writes_keeps_the_window_unbroken(home: Path) -> None:
    cluster = archived_cluster("crashy")
    pgbench(cluster, "-i", "-s", "2")
    load = pgbench(cluster, "-T", "20", "-c", "2", check=False)
    # the crash comes while both clients commit, not before they began
    deadline = time.monotonic() + 30
    while sql("crashy", "SELECT count(*) FROM pgbench_history")[0][0] < 100:
        assert time.monotonic() < deadline and load.poll() is None, "pgbench wrote nothing"
        time.sleep(0.1)
    cluster.stop(mode="immediate")
    load.wait(timeout=60)
    cluster.start()
    cluster.wait_ready()
    sql("crashy", "CREATE TABLE msg (id int)")
    after = commit_now("crashy", "INSERT INTO msg VALUES (1)")
    wait_archived(cluster, sql("crashy", "SELECT pg_walfile_name(pg_switch_wal())")[0][0])
    repo = cluster_repository.repository(cluster)
    periods = catalog_window.recoverable_window(repo, "crashy", cluster.bindir).periods
    assert len(periods) == 1
    assert periods[0][1] >= after - timedelta(seconds=1)


def test_a_damaged_segment_stops_the_restore_and_is_named(home: Path) -> None:
    cluster = archived_cluster("segdmg")
    sql("segdmg", "CREATE TABLE msg (id int)")
    commit_now("segdmg", "INSERT INTO msg VALUES (1)")
    time.sleep(1.1)
    target = now()
    time.sleep(1.1)
    commit_now("segdmg", "INSERT INTO msg VALUES (2)")
    name = sql("segdmg", "SELECT pg_walfile_name(pg_switch_wal())")[0][0]
    wait_archived(cluster, name)
    repo = cluster_repository.repository(cluster)
    ((key, _),) = archive.stored_versions(repo, "segdmg", name)
    path = Path(repo.root, key)
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(PitrError) as info:
        engine.restore("from-segdmg", "segdmg", target.replace(microsecond=0))
    assert key in str(info.value)
    assert not (home / "clusters" / "from-segdmg").exists()


def test_timelines_restore_of_a_restored_cluster(home: Path) -> None:
    cluster = archived_cluster("tl-src")
    sql("tl-src", "CREATE TABLE msg (id int)")
    commit_now("tl-src", "INSERT INTO msg VALUES (1)")
    time.sleep(1.1)
    t1 = now()
    time.sleep(1.1)
    commit_now("tl-src", "INSERT INTO msg VALUES (2)")
    wait_archived(cluster, sql("tl-src", "SELECT pg_walfile_name(pg_switch_wal())")[0][0])

    first = engine.restore("tl-one", "tl-src", t1.replace(microsecond=0))
    assert first.timeline == 2
    restored = postgres_cluster.Cluster.get("tl-one")
    assert [r[0] for r in sql("tl-one", "SELECT id FROM msg ORDER BY id")] == [1]
    # the restored cluster archives into its own stanza: a new timeline and its history file
    engine.backup(restored)
    commit_now("tl-one", "INSERT INTO msg VALUES (10)")
    time.sleep(1.1)
    t2 = now()
    time.sleep(1.1)
    commit_now("tl-one", "INSERT INTO msg VALUES (11)")
    wait_archived(restored, sql("tl-one", "SELECT pg_walfile_name(pg_switch_wal())")[0][0])
    repo = cluster_repository.repository(restored)
    keys = [i.key for i in repo.list("tl-one/wal/")]
    assert any("00000002.history" in k for k in keys)
    assert all("/wal/history/" in k or "/00000002" in k for k in keys if "tl-one/wal/" in k), keys

    second = engine.restore("tl-two", "tl-one", t2.replace(microsecond=0))
    assert second.timeline == 3
    assert [r[0] for r in sql("tl-two", "SELECT id FROM msg ORDER BY id")] == [1, 10]
    # the source's own archive is untouched by the restored clusters
    src_keys = [i.key for i in cluster_repository.repository(cluster).list("tl-src/wal/")]
    assert src_keys and not any(k.rsplit("/", 1)[-1].startswith("00000002") for k in src_keys)
    assert [r[0] for r in sql("tl-src", "SELECT id FROM msg ORDER BY id")] == [1, 2]
