"""`pgpitr info` and the backups of a deleted cluster, on a file repository and on S3 (moto).

One module-wide home per repository kind: a live cluster and a deleted one, each with a backup
and archived WAL, made with the engine (no flow: they are setup, not what is tested); the
commands under test run through the real command line."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from pgpitr import policy_store, timeparse
from pgpitr.operations import create, delete, log_backup
from pgpitr.postgres.cluster import Cluster
from pgpitr.wal import archive
from tests import engine
from tests.conftest import S3_KEY, S3_SECRET, cli, free_port, reachable_tempdir, shared_home
from tests.pg import rows, rows_either_side_of_a_second


@dataclass(frozen=True)
class Repo:
    url: str
    home: Path
    #: the backup of each cluster, and a time between its two rows (row 1 before, row 2 after)
    backups: dict[str, str]
    noted: dict[str, datetime]


def _make(name: str, url: str) -> tuple[str, datetime]:
    cluster = create.create(name, repository_url=url)
    log_backup.set_log_backup(cluster, True)
    backup = engine.backup(cluster).name
    noted = rows_either_side_of_a_second(name)
    return backup, noted


@pytest.fixture(scope="module", params=["file", "s3"])
def repo(request: pytest.FixtureRequest) -> Iterator[Repo]:
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "TZ")}
    os.environ["TZ"] = "UTC"
    scratch = reachable_tempdir("pgpitr-info-")
    if request.param == "s3":
        import boto3

        endpoint = request.getfixturevalue("moto_endpoint")
        os.environ.update(AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET)
        bucket = f"pgpitr-info-{uuid.uuid4().hex[:10]}"
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(
            Bucket=bucket
        )
        url = f"s3://{bucket}/fleet?endpoint={endpoint}&region=us-east-1"
    else:
        url = f"file://{scratch / 'repo'}"
    try:
        with shared_home() as home:
            made = {name: _make(name, url) for name in ("live-pg", "gone-pg")}
            delete.delete(Cluster.get("gone-pg"))
            yield Repo(
                url,
                home,
                {name: backup for name, (backup, _) in made.items()},
                {name: noted for name, (_, noted) in made.items()},
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _stanzas(output: str) -> dict[str, dict]:
    (repository,) = json.loads(output)
    assert repository["error"] is None
    return {s["stanza"]: s for s in repository["stanzas"]}


def test_info_shows_live_and_deleted_clusters_backups_wal_and_windows(repo: Repo) -> None:
    found = _stanzas(cli("info", "--backup-repo", repo.url, "-o", "json").stdout)
    assert found["live-pg"]["known"] is True
    assert found["gone-pg"]["known"] is False  # deleted: this home no longer knows it
    for name in ("live-pg", "gone-pg"):
        stanza = found[name]
        (backup,) = stanza["backups"]
        assert (backup["name"], backup["type"], backup["status"]) == (
            repo.backups[name],
            "Full",
            "Completed",
        )
        assert backup["parent"] is None and backup["unusable"] is None
        assert backup["repository_bytes"] > 0 and backup["total_size"] > 0
        assert stanza["stored_bytes"] == backup["repository_bytes"]
        assert stanza["pg_version"] == 15 and stanza["system_identifier"]
        ((start, end),) = stanza["recoverable_time"]
        noted = repo.noted[name]
        assert datetime.fromisoformat(start) < noted < datetime.fromisoformat(end)
        assert datetime.fromisoformat(start) == datetime.fromisoformat(backup["completion_time"])
        (timeline,) = stanza["wal"]
        assert timeline["timeline"] == 1 and timeline["first"] < timeline["last"]
        start_segment = archive.segment_of(backup["start_lsn"], 1, 16 << 20).name(16 << 20)
        assert timeline["first"] <= start_segment < timeline["last"]
    # each cluster's own archive: two system identifiers, two sets of segments
    assert found["live-pg"]["system_identifier"] != found["gone-pg"]["system_identifier"]

    table = cli("info", "--backup-repo", repo.url).stdout
    gone = table[table.index("stanza: gone-pg") :]
    gone = gone[: gone.index("stanza: live-pg")] if "stanza: live-pg" in gone else gone
    assert "cluster: not in this home" in gone
    assert repo.backups["gone-pg"] in gone and "Completed" in gone
    window = found["gone-pg"]["recoverable_time"][0]
    shown = timeparse.format_window(*(datetime.fromisoformat(t) for t in window))
    assert f"recoverable: {shown}" in gone
    assert "timeline 1: " + found["gone-pg"]["wal"][0]["first"] in gone
    assert " MiB" in gone or " KiB" in gone  # sizes human in the table
    live = table[table.index("stanza: live-pg") :]
    assert "cluster: this home" in live and repo.backups["live-pg"] in live


def test_info_without_a_repository_reads_the_ones_of_this_homes_clusters(repo: Repo) -> None:
    found = json.loads(cli("info", "-o", "json").stdout)
    # the default repository was never written to here: only the clusters' one is shown
    (repository,) = found
    assert {"live-pg", "gone-pg"} <= {s["stanza"] for s in repository["stanzas"]}


def test_list_backup_and_describe_read_a_deleted_clusters_backups(repo: Repo) -> None:
    refused = cli("cluster", "list-backup", "gone-pg", check=False)
    assert refused.returncode == 3 and "cluster 'gone-pg' does not exist" in refused.stderr
    assert "--backup-repo" in refused.stderr and "pgpitr info" in refused.stderr
    refused = cli("cluster", "describe", "gone-pg", check=False)
    assert refused.returncode == 3 and "--backup-repo" in refused.stderr

    listed = json.loads(
        cli("cluster", "list-backup", "gone-pg", "--backup-repo", repo.url, "-o", "json").stdout
    )
    assert [(r["name"], r["cluster"], r["status"]) for r in listed] == [
        (repo.backups["gone-pg"], "gone-pg", "Completed")
    ]
    everything = json.loads(
        cli("cluster", "list-backup", "--backup-repo", repo.url, "-o", "json").stdout
    )
    assert {r["name"] for r in everything} >= set(repo.backups.values())

    described = json.loads(
        cli("cluster", "describe", "gone-pg", "--backup-repo", repo.url, "-o", "json").stdout
    )
    assert described["status"] == "Not in this home" and described["backups"] == 1
    ((start, end),) = described["recoverable_time"]
    assert datetime.fromisoformat(start) < repo.noted["gone-pg"] < datetime.fromisoformat(end)
    assert described["lineages"][0]["restorable"] is True
    text = cli("cluster", "describe", "gone-pg", "--backup-repo", repo.url).stdout
    assert "not in this home" in text and "RECOVERABLE-TIME" in text and " ~ " in text


def test_a_deleted_cluster_restores_from_its_repository(repo: Repo) -> None:
    target = timeparse.format_kbcli(repo.noted["gone-pg"])
    cli(
        "cluster",
        "restore",
        "back-pg",
        "--source-cluster",
        "gone-pg",
        "--backup-repo",
        repo.url,
        "--restore-to-time",
        target,
    )
    try:
        assert rows("back-pg") == [1]  # row 2 was committed after the target
        restored = Cluster.get("back-pg")
        if repo.url.startswith("s3://"):
            # the archiver of the new cluster keeps the keys: the deleted source left none
            creds = restored.state.credentials_file
            assert creds.exists() and oct(creds.stat().st_mode & 0o777) == "0o600"
            assert creds.stat().st_uid == restored.user.uid
            assert S3_KEY in creds.read_text()
    finally:
        delete.delete(Cluster.get("back-pg"))


def test_an_unreachable_repository_is_a_clear_error(home: Path) -> None:
    missing = cli("info", "--backup-repo", f"file://{home / 'no-such-repo'}", check=False)
    assert missing.returncode == 6 and "does not exist" in missing.stderr
    closed = f"s3://bucket/x?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1"
    env = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    down = cli("info", "--backup-repo", closed, env=env, check=False)
    assert down.returncode == 6 and "cannot reach the repository" in down.stderr
    assert "Traceback" not in down.stderr and S3_SECRET not in down.stderr + down.stdout
    listed = cli("cluster", "list-backup", "x", "--backup-repo", closed, env=env, check=False)
    assert listed.returncode == 6 and "cannot reach the repository" in listed.stderr
    bad = cli("info", "--backup-repo", "ftp://x/y", check=False)
    assert bad.returncode == 2 and "unsupported repository URL" in bad.stderr


def test_stanzas_are_found_one_level_down_without_listing_the_wal(repo_url: str) -> None:
    from pgpitr.operations import info
    from pgpitr.repository import open_repository

    store = open_repository(repo_url)
    for key in (
        "a/archive.info",
        "a/wal/0000000100000000/000000010000000000000001-x.zst",
        "b/backups/full-1/backup.json",
        "c/drills/old.json",  # a folder with neither archive info nor a backup
        "top-level-file",
    ):
        store.put_document(key, b"{}")
    assert store.children("") == ["a", "b", "c", "top-level-file"]
    assert store.children("a/") == ["archive.info", "wal"]
    assert store.children("a/wal/0000000100000000/") == ["000000010000000000000001-x.zst"]
    assert store.children("nothing/") == []
    assert info.stanzas(store) == ["a", "b"]


def test_info_of_this_home_shows_each_repository_and_the_one_it_cannot_read(home: Path) -> None:
    """Stanzas written by hand (no server): a name reused by another system, a backup of a
    major with no binaries here, a repository that is gone; an unknown stanza's refusal."""
    from pgpitr.repository import open_repository
    from tests.pg import serverless_cluster

    shared = f"file://{home / 'shared'}"
    # a cluster of this home named like a stanza of another system: not this home's
    serverless_cluster(home, "same-pg", shared, 1111)
    open_repository(shared).put_json(
        "same-pg/archive.info", {"system_identifier": "2222", "pg_version": 15}
    )
    open_repository(shared).put_json(
        "other-pg/archive.info", {"system_identifier": "3333", "pg_version": 15}
    )
    # a backup of a major this host has no binaries of: shown, its window unknown and why
    shared_repo = open_repository(shared)
    shared_repo.put_json(
        "old-pg/backups/full-1/backup.json",
        {
            "name": "full-1",
            "cluster": "old-pg",
            "status": "Completed",
            "start_time": "2026-12-01T10:00:00+00:00",
            "stop_time": "2026-12-01T10:00:05+00:00",
            "pg_version": 13,
            "start_lsn": "0/2000028",
            "stop_lsn": "0/2000100",
            "timeline": 1,
            "stored_size": 3,
            "sha256": "0" * 64,
        },
    )
    shared_repo.put_document("old-pg/backups/full-1/base.tar.zst", b"tar")
    serverless_cluster(home, "lost-pg", f"file://{home / 'unmounted'}", 4444)
    result = cli("info", "-o", "json", check=False)
    assert result.returncode == 6 and "1 of 2 repositories could not be read" in result.stderr
    found = {r["repository"]: r for r in json.loads(result.stdout)}
    assert found[shared]["error"] is None
    stanzas = {s["stanza"]: s for s in found[shared]["stanzas"]}
    assert sorted(stanzas) == ["old-pg", "other-pg", "same-pg"]
    (old,) = stanzas["old-pg"]["backups"]
    assert old["name"] == "full-1" and stanzas["old-pg"]["recoverable_time"] == []
    assert "no PostgreSQL 13 binaries on this host" in stanzas["old-pg"]["window_error"]
    assert (
        stanzas["same-pg"]["known"] is False and stanzas["same-pg"]["system_identifier"] == "2222"
    )
    assert stanzas["other-pg"]["backups"] == [] and stanzas["other-pg"]["recoverable_time"] == []
    unread = found[f"file://{home / 'unmounted'}"]
    assert unread["stanzas"] == [] and "does not exist" in unread["error"]
    table = cli("info", check=False)
    assert table.returncode == 6 and "error: the repository" in table.stdout
    for command in (["list-backup"], ["describe"]):
        result = cli("cluster", *command, "nope", "--backup-repo", shared, check=False)
        assert result.returncode == 3, result.stderr
        assert "holds no backups of cluster 'nope'" in result.stderr
        assert "pgpitr info --backup-repo" in result.stderr and "Traceback" not in result.stderr
        hostile = cli("cluster", *command, "x'; --", "--backup-repo", shared, check=False)
        assert hostile.returncode == 2 and "invalid cluster name" in hostile.stderr
    listed = cli("cluster", "list-backup", "old-pg", "--backup-repo", shared).stdout
    assert "full-1" in listed and "old-pg" in listed
    assert "stanza: other-pg" in table.stdout and "wal archive: none" in table.stdout
    assert "recoverable: unknown (no PostgreSQL 13 binaries" in table.stdout


def test_the_repositories_of_this_home_are_each_read_once(home: Path) -> None:
    from pgpitr import policy as pol
    from pgpitr.operations import info
    from tests.pg import serverless_cluster

    serverless_cluster(home, "one-pg", f"file://{home / 'r1'}", 1)
    serverless_cluster(home, "two-pg", f"file://localhost{home / 'r1'}", 2)  # the same URL
    # a policy naming another repository (its backups go there from the next one on)
    policy_store.save_policy(
        Cluster.get("two-pg"),
        pol.BackupPolicy(cluster="two-pg", repository=f"file://{home / 'r2'}", create_time=""),
    )
    assert [str(n.url) for n in info.repositories_of_home()] == [
        f"file://{home / 'repo'}",  # the default one first
        f"file://{home / 'r1'}",
        f"file://{home / 'r2'}",
    ]
