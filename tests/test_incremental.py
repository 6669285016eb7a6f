"""Incremental backups (PostgreSQL 17+, issue 14) on real servers of the 17 and 18 test wheels
(tests/pgwheels.py): a lineage full -> incremental -> incremental restores the exact rows of a
point after each link, on a file repository (17, 18) and on S3 (moto, 17); with log backup off
each link restores to its own end (the WAL in its tar) with the exact rows; a parent goes only
with its dependents; a lost or damaged link makes its dependents unrestorable and the window
shrinks to what is left; a killed incremental is Failed and never a parent; WAL summaries that
do not cover the parent are refused with the way out; PostgreSQL 15 refuses --type incremental
before anything is written.  The scheduled incremental (a served deployment's run) is in
tests/flows/test_incremental_schedule.py, beside the agent tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from pgpitr import cluster_repository, policy_store, rto
from pgpitr.catalog import backups
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import ChecksumMismatch, InvalidInput, PitrError, RecoveryTargetError
from pgpitr.manifest import backup_manifest_key, data_key, manifest_key
from pgpitr.operations import create, log_backup, verify
from pgpitr.operations.restore import data as restore_data
from pgpitr.postgres.cluster import Cluster
from pgpitr.targets import RestoreTarget
from tests import engine, pgwheels
from tests.conftest import S3_KEY, S3_SECRET, cli, shared_home
from tests.pg import archive_now, commit_now, rows, sql

ROOT = Path(__file__).resolve().parents[1]


def _bindir(major: int) -> Path:
    if major == 15:
        path = Path("/usr/lib/postgresql/15/bin")
        if not (path / "postgres").exists():
            pytest.skip("PostgreSQL 15 is not installed (apt-get install postgresql-15)")
        return path
    return pgwheels.require(major)


def _source(name: str, major: int = 17, repository_url: str | None = None) -> Cluster:
    cluster = create.create(name, bindir=_bindir(major), repository_url=repository_url)
    log_backup.set_log_backup(cluster, True)
    sql(name, "CREATE TABLE msg (id int PRIMARY KEY)")
    # ballast, so that an incremental is visibly smaller than a full backup
    sql(
        name,
        "CREATE TABLE ballast AS SELECT g AS id, repeat('x', 200) AS pad "
        "FROM generate_series(1, 20000) g",
    )
    return cluster


@dataclass(frozen=True)
class Lineage:
    cluster: str
    major: int
    full: str
    inc1: str
    inc2: str
    #: a time after each link (and before the next one), with the rows committed by then
    points: list[tuple[datetime, list[int], str]]


@contextmanager
def _s3_bucket(endpoint: str) -> Iterator[str]:
    """A new bucket on the session's moto server, its keys in the environment (``cluster
    create`` keeps them for the archiver); the repository URL."""
    import boto3

    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
    bucket = f"pgpitr-inc-{uuid.uuid4().hex[:10]}"
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        yield f"s3://{bucket}/backups?endpoint={endpoint}&region=us-east-1"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(
    scope="module", params=[(17, "file"), (18, "file"), (17, "s3")], ids=["17", "18", "17-s3"]
)
def lineage(request: pytest.FixtureRequest) -> Iterator[Lineage]:
    major, kind = request.param
    with ExitStack() as stack:
        url = None
        if kind == "s3":
            url = stack.enter_context(_s3_bucket(request.getfixturevalue("moto_endpoint")))
        stack.enter_context(shared_home())
        name = f"inc{major}" + ("-s3" if kind == "s3" else "")
        c = _source(name, major, url)
        assert str(c.state.repository).startswith("s3://") == (kind == "s3")
        full = engine.backup(name)
        after_full = commit_now(name, "INSERT INTO msg VALUES (1)")
        time.sleep(0.05)
        sql(name, "UPDATE ballast SET pad = repeat('y', 200) WHERE id %% 10 = 0")
        inc1 = engine.backup(name, incremental=True)
        after_inc1 = commit_now(name, "INSERT INTO msg VALUES (2)")
        time.sleep(0.05)
        inc2 = engine.backup(name, incremental=True)
        after_inc2 = commit_now(name, "INSERT INTO msg VALUES (3)")
        time.sleep(0.05)
        commit_now(name, "INSERT INTO msg VALUES (4)")  # after every target: never restored
        archive_now(name)
        yield Lineage(
            name,
            major,
            full.name,
            inc1.name,
            inc2.name,
            [
                (after_full, [1], full.name),
                (after_inc1, [1, 2], inc1.name),
                (after_inc2, [1, 2, 3], inc2.name),
            ],
        )


def test_each_incremental_names_its_parent_and_is_smaller_than_the_full(lineage: Lineage) -> None:
    name = lineage.cluster
    repo = cluster_repository.repository(Cluster.get(name))
    full, inc1, inc2 = (
        backups.get_backup(repo, name, b) for b in (lineage.full, lineage.inc1, lineage.inc2)
    )
    assert (full.type, full.parent) == ("Full", None)
    assert (inc1.type, inc1.parent) == ("Incremental", full.name)
    assert (inc2.type, inc2.parent) == ("Incremental", inc1.name)
    assert inc1.stored_size < full.stored_size and inc2.stored_size < full.stored_size
    for b in (full, inc1, inc2):  # each can be the next one's parent
        assert b.backup_manifest_sha256 and repo.exists(backup_manifest_key(name, b.name))
    assert [b.name for b in backups.lineage(backups.list_backups(repo, name), inc2.name)] == [
        full.name,
        inc1.name,
        inc2.name,
    ]


def test_a_restore_after_each_link_has_exactly_the_rows_of_its_time(lineage: Lineage) -> None:
    name = lineage.cluster
    for i, (when, expected, backup) in enumerate(lineage.points):
        new = f"{name}-at{i}"
        result = engine.restore(new, name, when)
        assert result.backup == backup  # the newest link before the target: less WAL to replay
        assert rows(new) == expected
        Cluster.get(new).stop(mode="immediate")


def test_verify_backup_of_an_incremental_checks_every_link(lineage: Lineage) -> None:
    report = verify.verify_backup(lineage.cluster, lineage.inc2)
    for link in (lineage.full, lineage.inc1, lineage.inc2):
        assert f"backup {link} is intact" in report


def test_the_manifest_tap_passes_a_tar_through_and_keeps_backup_manifest() -> None:
    import io
    import os
    import random
    import tarfile

    from pgpitr.operations.backup.basebackup import ManifestTap

    raw = io.BytesIO()
    manifest = json.dumps({"PostgreSQL-Backup-Manifest-Version": 2, "Files": []}).encode() * 40
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [
            ("PG_VERSION", b"17\n"),
            ("base/1/1259", os.urandom(70000)),
            ("pg_wal/", b""),
            ("backup_manifest", manifest),
        ]:
            info = tarfile.TarInfo(name.rstrip("/"))
            info.type = tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    stream = raw.getvalue()

    class Chunks(io.RawIOBase):  # a pipe hands out odd-sized pieces
        def __init__(self) -> None:
            self.at = 0

        def read(self, size: int = -1) -> bytes:
            piece = stream[self.at : self.at + random.randint(1, 1500)]
            self.at += len(piece)
            return piece

    tap = ManifestTap(Chunks())  # type: ignore[arg-type]
    passed = b"".join(iter(lambda: tap.read(4096), b""))
    assert passed == stream and bytes(tap.manifest) == manifest


def test_incrementals_with_log_backup_off_restore_to_their_own_end(home: Path) -> None:
    # log backup stays off (a new cluster's default): each link's tar carries the WAL that
    # makes it consistent, and --restore-to-immediate needs nothing else
    c = create.create("nolog", bindir=_bindir(17))
    assert not policy_store.load_policy(c).logfile_enabled
    sql("nolog", "CREATE TABLE msg (id int PRIMARY KEY)")
    full = engine.backup("nolog")
    sql("nolog", "INSERT INTO msg VALUES (1)")
    inc1 = engine.backup("nolog", incremental=True)
    sql("nolog", "INSERT INTO msg VALUES (2)")
    inc2 = engine.backup("nolog", incremental=True)
    sql("nolog", "INSERT INTO msg VALUES (3)")  # in no backup: never restored
    assert (inc1.parent, inc2.parent) == (full.name, inc1.name)
    for link, expected in ((inc1, [1]), (inc2, [1, 2])):
        new = f"nolog-{link.name}"
        result = engine.restore(new, "nolog", RestoreTarget(immediate=True), backup_name=link.name)
        assert result.backup == link.name
        assert rows(new) == expected
        Cluster.get(new).stop(mode="immediate")


# -- what breaks a lineage -------------------------------------------------------------------


@pytest.mark.parametrize("major", [17, 18])
def test_a_lost_or_damaged_link_makes_its_dependents_unrestorable(home: Path, major: int) -> None:
    _source("lost", major)
    a = engine.backup("lost")
    a1 = engine.backup("lost", incremental=True)
    sql("lost", "INSERT INTO msg VALUES (1)")
    b = engine.backup("lost")
    b1 = engine.backup("lost", incremental=True)
    assert b1.parent == b.name
    after_b1 = commit_now("lost", "INSERT INTO msg VALUES (2)")
    time.sleep(0.05)
    commit_now("lost", "INSERT INTO msg VALUES (3)")
    archive_now("lost")
    c = Cluster.get("lost")
    repo = cluster_repository.repository(c)
    before = catalog_window.recoverable_window(repo, "lost", c.bindir)
    assert before.start_backup == a.name and before.unusable == {}

    repo.delete(data_key("lost", a.name, a.data_compression))  # the oldest full is lost
    window = catalog_window.recoverable_window(repo, "lost", c.bindir)
    assert window.unusable == {
        a.name: "its data is missing from the repository",
        a1.name: f"its parent {a.name} has no data in the repository",
    }
    assert window.start_backup == b.name  # the window shrinks to what is left
    assert window.periods[0][0] == b.stop_time
    with pytest.raises(RecoveryTargetError, match="outside the recoverable window"):
        engine.restore("lost-early", "lost", a1.stop_time)
    with pytest.raises(RecoveryTargetError, match=f"its parent {a.name} has no data"):
        engine.restore("lost-named", "lost", None, backup_name=a1.name)
    listed = {
        r["name"]: r for r in json.loads(cli("cluster", "list-backup", "lost", "-o", "json").stdout)
    }
    assert listed[a1.name]["unusable"] == f"its parent {a.name} has no data in the repository"
    described = json.loads(cli("cluster", "describe", "lost", "-o", "json").stdout)
    ends = {row["end"]: row for row in described["lineages"]}
    assert not ends[a1.name]["restorable"] and ends[b1.name]["restorable"]

    # a damaged link: the restore that needs it stops, names it, and leaves nothing; the read
    # is recorded, so the window stops counting the link (and a restore goes around it) until
    # a verify finds it intact again
    key = data_key("lost", b1.name, b1.data_compression)
    path = Path(repo.url.removeprefix("file://")) / key
    intact = path.read_bytes()
    damaged = bytearray(intact)
    damaged[len(damaged) // 2] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ChecksumMismatch, match=b1.name):
        engine.restore("lost-damaged", "lost", after_b1)
    assert not (home / "clusters" / "lost-damaged").exists()
    assert not list((home / "clusters").glob(f"*/{restore_data.LINK_DIR_PREFIX}*"))
    window = catalog_window.recoverable_window(repo, "lost", c.bindir)
    assert window.unusable[b1.name].startswith("its data was found damaged"), window.unusable
    assert b.name not in window.unusable
    assert window.latest_backup.name == b.name and rto.latest_volumes(window)[2] == b.name
    described = json.loads(cli("cluster", "describe", "lost", "-o", "json").stdout)
    ends = {row["end"]: row for row in described["lineages"]}
    assert not ends[b1.name]["restorable"]
    assert ends[b1.name]["reason"].startswith("its data was found damaged")
    around = engine.restore("lost-around", "lost", after_b1)
    assert around.backup == b.name and rows("lost-around") == [1, 2]
    with pytest.raises(ChecksumMismatch):
        verify.verify_backup("lost", b1.name)

    path.write_bytes(intact)  # the object put back (from a copy, say): a verify clears it
    assert "its damage record removed" in verify.verify_backup("lost", b1.name)
    assert b1.name not in catalog_window.recoverable_window(repo, "lost", c.bindir).unusable


@pytest.mark.parametrize("major", [17, 18])
def test_a_killed_incremental_is_failed_and_never_a_parent(home: Path, major: int) -> None:
    c = _source("killed-inc", major)
    full = engine.backup("killed-inc")
    # the server cannot finish a backup while its last segment is not archived: hold archiving
    block = home / "hold-archiving"
    block.touch()
    command = sql("killed-inc", "SHOW archive_command")[0][0]
    c.change_settings({"archive_command": f"test ! -e {block} && {{ {command}; }}"})
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tests import engine; engine.backup('killed-inc', 'doomed', incremental=True)",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    repo = cluster_repository.repository(c)
    deadline = time.monotonic() + 60
    while not repo.exists(manifest_key("killed-inc", "doomed")):
        assert time.monotonic() < deadline and child.poll() is None
        time.sleep(0.02)
    time.sleep(0.5)
    child.kill()
    child.wait()
    block.unlink()
    c.change_settings({"archive_command": None})
    sql("killed-inc", "INSERT INTO msg VALUES (1)")
    archive_now("killed-inc")
    doomed = backups.get_backup(repo, "killed-inc", "doomed")
    assert (doomed.status, doomed.type, doomed.parent) == ("Failed", "Incremental", full.name)
    again = engine.backup("killed-inc", incremental=True)
    assert again.parent == full.name  # never the failed one
    with pytest.raises(InvalidInput, match="'doomed' cannot be a parent: it is Failed"):
        engine.backup("killed-inc", "refused", incremental=True, parent="doomed")
    assert not repo.exists(manifest_key("killed-inc", "refused"))


def test_summaries_that_do_not_cover_the_parent_are_refused_with_the_way_out(home: Path) -> None:
    c = _source("unsummarised")
    c.change_settings({"summarize_wal": "off"})
    full = engine.backup("unsummarised")
    sql("unsummarised", "INSERT INTO msg VALUES (0)")
    sql("unsummarised", "CHECKPOINT")  # summaries begin at a redo point after the full's start
    c.change_settings({"summarize_wal": "on"})
    sql("unsummarised", "INSERT INTO msg VALUES (1)")
    with pytest.raises(PitrError, match="do not cover the parent") as refused:
        engine.backup("unsummarised", "inc", incremental=True)
    assert "take a full backup" in (refused.value.hint or "")
    assert (
        backups.get_backup(cluster_repository.repository(c), "unsummarised", "inc").status
        == "Failed"
    )
    fresh = engine.backup("unsummarised")  # the way out: a full backup, then incrementals
    assert engine.backup("unsummarised", incremental=True).parent == fresh.name != full.name


def test_postgresql_15_refuses_an_incremental_before_anything_is_written(home: Path) -> None:
    c = create.create("old15", bindir=_bindir(15))
    repo = cluster_repository.repository(c)
    with pytest.raises(InvalidInput) as refused:
        engine.backup("old15", "nope", incremental=True)
    assert refused.value.message == (
        "incremental backups need PostgreSQL 17 or later; old15 runs 15"
    )
    assert not repo.exists(manifest_key("old15", "nope"))
    by_cli = cli("cluster", "backup", "old15", "--type", "incremental", check=False)
    assert by_cli.returncode == InvalidInput.exit_code
    assert "incremental backups need PostgreSQL 17 or later; old15 runs 15" in by_cli.stderr
    assert "Traceback" not in by_cli.stderr
    assert backups.list_backups(repo, "old15") == []
    # nor is a schedule of incrementals taken, to fail at every run
    scheduled = cli(
        "cluster",
        "edit-backup-policy",
        "old15-postgresql-backup-policy",
        "--set",
        "schedule.incremental.enable=true",
        check=False,
    )
    assert scheduled.returncode == InvalidInput.exit_code, scheduled.stderr
    assert "incremental backups need PostgreSQL 17 or later; old15 runs 15" in scheduled.stderr
    assert "flow" not in scheduled.stderr.lower(), "refused before any flow ran"
    assert not policy_store.load_policy(c).incremental_enabled


# -- the command line --------------------------------------------------------------------------


def test_the_cli_takes_lists_and_deletes_a_lineage_whole(home: Path) -> None:
    _source("clinc")
    full = engine.backup("clinc")
    cli("cluster", "backup", "clinc", "--type", "incremental", "--backup-name", "clinc-i1")
    table = cli("cluster", "list-backup", "clinc").stdout
    assert "PARENT" in table and "Incremental" in table
    rows = {
        r["name"]: r
        for r in json.loads(cli("cluster", "list-backup", "clinc", "-o", "json").stdout)
    }
    assert (rows["clinc-i1"]["type"], rows["clinc-i1"]["parent"]) == ("Incremental", full.name)
    assert (rows[full.name]["type"], rows[full.name]["parent"]) == ("Full", None)

    bad = cli("cluster", "backup", "clinc", "--type", "differential", check=False)
    assert bad.returncode == InvalidInput.exit_code and "use full or incremental" in bad.stderr
    refused = cli("cluster", "delete-backup", "clinc", "--name", full.name, check=False)
    assert refused.returncode != 0 and "clinc-i1" in refused.stderr
    assert "--force" in refused.stderr
    assert set(rows) == {
        r["name"] for r in json.loads(cli("cluster", "list-backup", "clinc", "-o", "json").stdout)
    }
    forced = cli("cluster", "delete-backup", "clinc", "--name", full.name, "--force")
    assert f"also removed clinc-i1: it depended on {full.name}" in forced.stdout + forced.stderr
    assert json.loads(cli("cluster", "list-backup", "clinc", "-o", "json").stdout) == []
