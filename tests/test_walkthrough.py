"""The user's walkthrough end to end through the real command line, on both repository kinds."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgpitr import timeparse
from tests.conftest import cli
from tests.pg import archive_now, commit_now, rows, sql, window


def test_walkthrough_restores_exactly_the_rows_committed_by_the_noted_time(
    home: Path, repo_url: str
) -> None:
    cli("cluster", "create", "my-pg", "--backup-repo", repo_url)
    cli(
        "cluster",
        "edit-backup-policy",
        "my-pg-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=true",
    )
    cli("cluster", "backup", "my-pg")
    listed = cli("cluster", "list-backup", "my-pg").stdout
    assert "Completed" in listed and "backup-default-my-pg-" in listed

    sql("my-pg", "CREATE TABLE msg (id int PRIMARY KEY, at timestamptz DEFAULT now())")
    after_row_1 = commit_now("my-pg", "INSERT INTO msg (id) VALUES (1)")
    noted = (after_row_1 + timedelta(seconds=1)).replace(microsecond=0)
    while datetime.now(UTC) < noted + timedelta(seconds=1):
        time.sleep(0.1)
    commit_now("my-pg", "INSERT INTO msg (id) VALUES (2)")
    archive_now("my-pg")

    ((start, end),) = window("my-pg")
    assert start < noted < end
    described = cli("cluster", "describe", "my-pg").stdout
    assert "RECOVERABLE-TIME" in described and " ~ " in described

    kbcli_time = timeparse.format_kbcli(noted, "Asia/Shanghai")
    assert "UTC+0800" in kbcli_time
    cli(
        "cluster",
        "restore",
        "new-cluster",
        "--restore-to-time",
        kbcli_time,
        "--source-cluster",
        "my-pg",
    )

    assert rows("new-cluster") == [1]
    assert rows("my-pg") == [1, 2]
    # the restored cluster is a full cluster: new timeline, archiving into its own stanza
    assert sql("new-cluster", "SELECT timeline_id FROM pg_control_checkpoint()")[0][0] == 2
    listed = cli("cluster", "list").stdout
    assert "new-cluster" in listed and "Running" in listed


def test_window_ends_at_a_wal_gap_and_restore_past_it_is_refused(home: Path) -> None:
    from pgpitr import cluster_repository
    from pgpitr.postgres.cluster import Cluster
    from pgpitr.wal import archive

    cli("cluster", "create", "gap-pg")
    cli(
        "cluster",
        "edit-backup-policy",
        "gap-pg-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=true",
    )
    cli("cluster", "backup", "gap-pg")
    sql("gap-pg", "CREATE TABLE msg (id int PRIMARY KEY)")
    after_a = commit_now("gap-pg", "INSERT INTO msg VALUES (1)")
    archive_now("gap-pg")
    time.sleep(1.1)
    before_b = datetime.now(UTC)
    commit_now("gap-pg", "INSERT INTO msg VALUES (2)")
    segment_b = archive_now("gap-pg")
    time.sleep(1.1)
    after_c = commit_now("gap-pg", "INSERT INTO msg VALUES (3)")
    archive_now("gap-pg")
    assert window("gap-pg")[0][1] >= after_c - timedelta(seconds=1)

    cluster = Cluster.get("gap-pg")
    repo = cluster_repository.repository(cluster)
    ((key, _sha),) = archive.stored_versions(repo, "gap-pg", segment_b)
    repo.delete(key)

    ((_start, end),) = window("gap-pg")
    assert end < before_b, "the window must end at the last commit before the gap"
    assert end >= after_a - timedelta(seconds=1)

    past_gap = timeparse.format_kbcli(after_c.replace(microsecond=0))
    refused = cli(
        "cluster",
        "restore",
        "past-gap",
        "--restore-to-time",
        past_gap,
        "--source-cluster",
        "gap-pg",
        check=False,
    )
    assert refused.returncode == 9
    assert "outside the recoverable window" in refused.stderr
    assert not (home / "clusters" / "past-gap").exists()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--restore-to-time", "yesterday-ish"], 2, "cannot read the restore time"),
        (["--restore-to-time", "2026-01-01 10:00:00"], 2, "no time zone"),
        (["--restore-to-time", "2001-01-01T00:00:00Z"], 9, "outside the recoverable window"),
        (["--restore-to-time", "2999-01-01T00:00:00Z"], 9, "outside the recoverable window"),
        (["--backup", "backup-nope"], 3, "backup 'backup-nope' of cluster 'src' does not exist"),
    ],
)
def test_bad_restore_requests_are_refused_and_create_nothing(
    restorable_source: Path, args: list[str], code: int, message: str
) -> None:
    result = cli("cluster", "restore", "target", "--source-cluster", "src", *args, check=False)
    assert result.returncode == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert not (restorable_source / "clusters" / "target").exists()


def test_unknown_source_and_taken_name_are_refused(restorable_source: Path) -> None:
    result = cli("cluster", "restore", "target", "--source-cluster", "nope", check=False)
    assert result.returncode == 3 and "cluster 'nope' is unknown" in result.stderr
    result = cli("cluster", "restore", "src", "--source-cluster", "src", check=False)
    assert result.returncode == 4 and "already exists" in result.stderr


@pytest.fixture(scope="module")
def restorable_source():
    """One source cluster with a backup and archived WAL, shared by the refusal tests."""
    from tests.conftest import shared_home

    with shared_home() as home:
        cli("cluster", "create", "src")
        cli(
            "cluster",
            "edit-backup-policy",
            "src-postgresql-backup-policy",
            "--set",
            "schedule.logfile.enable=true",
        )
        cli("cluster", "backup", "src")
        yield home
