"""pgpitr/operations/retention.py on a repository of real objects, without a server: which backups
the TTL expires, what a delete refuses, and that WAL is pruned only below every remaining backup."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgpitr.catalog import backups as catalog_backups
from pgpitr.errors import InvalidInput, NotFound, PitrError
from pgpitr.manifest import BackupManifest, data_key, manifest_key
from pgpitr.operations import delete_backup, retention
from pgpitr.repository import open_repository
from pgpitr.wal import archive

T0 = datetime(2026, 1, 1, tzinfo=UTC)
SEG = 16 * 1024 * 1024


@pytest.fixture
def repo(tmp_path: Path):
    return open_repository(f"file://{tmp_path / 'repo'}")


def _backup(repo, name: str, hours: int, status: str = "Completed", **fields) -> BackupManifest:
    m = BackupManifest(
        name, "s", status, T0 + timedelta(hours=hours), timeline=1, wal_segment_size=SEG, **fields
    )
    catalog_backups.save_backup(repo, "s", m)
    repo.put_document(data_key("s", name), b"data")
    return m


def test_expired_takes_failed_and_past_ttl_but_keeps_the_newest_completed(repo) -> None:
    now = T0 + timedelta(days=10)
    _backup(repo, "old", 0, expiration=T0 + timedelta(days=1))
    _backup(repo, "failed", 1, status="Failed")
    _backup(repo, "newest", 2, expiration=T0 + timedelta(days=2))
    assert retention.expired(repo, "s", now) == ["failed", "old"]
    _backup(repo, "fresh", 3, expiration=now + timedelta(days=1))
    assert retention.expired(repo, "s", now) == ["failed", "old", "newest"]


def test_deleting_everything_must_be_asked_for() -> None:
    with pytest.raises(InvalidInput, match="--force"):
        delete_backup.require_names_or_force(None, False)
    delete_backup.require_names_or_force(None, True)
    delete_backup.require_names_or_force(["b"], False)


def test_a_delete_refuses_unknown_and_running_backups_and_removes_what_it_names(repo) -> None:
    _backup(repo, "done", 0, start_lsn="0/2000028")
    here = socket.gethostname()
    _backup(repo, "running", 1, status="InProgress", pid=os.getpid(), host=here)
    with pytest.raises(NotFound, match="'nope'"):
        retention.delete_backups(repo, "s", ["nope"])
    with pytest.raises(PitrError, match="still running"):
        retention.delete_backups(repo, "s", ["running"])
    removed = retention.delete_backups(repo, "s", ["done"], force=True)
    assert removed.backups == ["done"]
    assert not repo.exists(manifest_key("s", "done")) and not repo.exists(data_key("s", "done"))
    assert repo.exists(manifest_key("s", "running"))


def test_wal_is_pruned_below_the_oldest_remaining_backup_and_history_stays(repo) -> None:
    repo.put_json(
        archive.archive_info_key("s"), {"wal_segment_size": SEG, "system_identifier": "1"}
    )
    for number in range(1, 7):
        name = archive.Segment(1, number).name(SEG)
        repo.put_document(f"s/wal/{name[:16]}/{name}-{number:064x}.zst", b"seg")
    repo.put_document("s/wal/00000002.history-" + "0" * 64 + ".zst", b"1\t0/4000000\tx\n")
    _backup(repo, "b4", 0, start_lsn="0/4000028")
    assert retention.prune_wal(repo, "s") == 3  # segments 1, 2, 3
    left = sorted(archive.split_object_key(i.key)[0] for i in repo.list("s/wal/"))
    assert left == sorted(
        ["00000002.history"] + [archive.Segment(1, n).name(SEG) for n in (4, 5, 6)]
    )


def test_a_running_backup_whose_start_is_unknown_keeps_all_wal(repo) -> None:
    repo.put_json(
        archive.archive_info_key("s"), {"wal_segment_size": SEG, "system_identifier": "1"}
    )
    name = archive.Segment(1, 1).name(SEG)
    repo.put_document(f"s/wal/{name[:16]}/{name}-{0:064x}.zst", b"seg")
    _backup(repo, "starting", 0, status="InProgress", pid=os.getpid(), host=socket.gethostname())
    assert retention.prune_wal(repo, "s") == 0


# -- lineages: a backup goes only with the backups that depend on it ----------------------------


def _lineage(repo) -> None:
    """full-a <- inc-a1 <- inc-a2, then full-b <- inc-b1 (all expired but inc-b1)."""
    lsn = "0/2000028"
    _backup(repo, "full-a", 0, start_lsn=lsn, expiration=T0)
    _backup(repo, "inc-a1", 1, start_lsn=lsn, type="Incremental", parent="full-a", expiration=T0)
    _backup(repo, "inc-a2", 2, start_lsn=lsn, type="Incremental", parent="inc-a1", expiration=T0)
    _backup(repo, "full-b", 3, start_lsn=lsn, expiration=T0)
    _backup(repo, "inc-b1", 4, start_lsn=lsn, type="Incremental", parent="full-b")


def test_dependents_are_every_backup_whose_lineage_runs_through_one_newest_first(repo) -> None:
    _lineage(repo)
    backups = catalog_backups.list_backups(repo, "s")
    assert catalog_backups.dependents(backups, "full-a") == ["inc-a2", "inc-a1"]
    assert catalog_backups.dependents(backups, "inc-a1") == ["inc-a2"]
    assert catalog_backups.dependents(backups, "inc-a2") == []
    assert [b.name for b in catalog_backups.lineage(backups, "inc-a2")] == [
        "full-a",
        "inc-a1",
        "inc-a2",
    ]


def test_ttl_expires_a_lineage_only_as_a_whole(repo) -> None:
    _lineage(repo)
    now = T0 + timedelta(days=1)
    # full-b expired, but inc-b1 (not expired) needs it; full-a's lineage goes whole
    assert retention.expired(repo, "s", now) == ["full-a", "inc-a1", "inc-a2"]
    # an expired incremental with a live dependent stays too
    _backup(repo, "inc-a3", 5, start_lsn="0/2000028", type="Incremental", parent="inc-a2")
    assert retention.expired(repo, "s", now) == []


def test_a_parent_is_deleted_only_with_its_dependents_and_force_says_which(repo) -> None:
    _lineage(repo)
    with pytest.raises(PitrError, match=r"inc-a2 \(on full-a\), inc-a1 \(on full-a\)") as refused:
        retention.delete_backups(repo, "s", ["full-a"])
    assert "--force" in (refused.value.hint or "")
    assert {b.name for b in catalog_backups.list_backups(repo, "s")} >= {
        "full-a",
        "inc-a1",
        "inc-a2",
    }
    # named together, they go without --force (nothing is left depending on a deleted one)
    removed = retention.delete_backups(repo, "s", ["inc-a1", "inc-a2"])
    assert removed.backups == ["inc-a2", "inc-a1"] and removed.dependents == {}
    removed = retention.delete_backups(repo, "s", ["full-b"], force=True)
    assert removed.backups == ["inc-b1", "full-b"]  # the dependent first: never an orphan
    assert removed.dependents == {"inc-b1": "full-b"}
    assert "inc-b1 because it depended on full-b" in removed.describe()


def test_force_never_deletes_a_running_incremental_however_far_down(repo) -> None:
    _lineage(repo)
    here = socket.gethostname()
    lsn = "0/2000028"
    # taken against inc-a2 by a live process (this one): full-a's grandchild's child
    _backup(
        repo,
        "inc-a3",
        5,
        "InProgress",
        start_lsn=lsn,
        type="Incremental",
        parent="inc-a2",
        pid=os.getpid(),
        host=here,
    )
    with pytest.raises(PitrError, match="'inc-a3' is being taken against it"):
        retention.delete_backups(repo, "s", ["full-a"], force=True)
    assert {b.name for b in catalog_backups.list_backups(repo, "s")} >= {
        "full-a",
        "inc-a1",
        "inc-a2",
    }


def test_a_broken_link_makes_every_dependent_unusable_and_says_why(repo) -> None:
    _lineage(repo)
    _backup(repo, "failed", 5, status="Failed")
    _backup(repo, "orphan", 6, type="Incremental", parent="gone")
    _backup(repo, "on-failed", 7, type="Incremental", parent="failed")
    repo.delete(data_key("s", "inc-a1"))
    broken = catalog_backups.broken_links(repo, "s", catalog_backups.list_backups(repo, "s"))
    assert broken == {
        "inc-a1": "its data is missing from the repository",
        "inc-a2": "its parent inc-a1 has no data in the repository",
        "orphan": "its parent gone is missing",
        "on-failed": "its parent failed is Failed",
    }
