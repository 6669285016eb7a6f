"""pgpitr/manifest.py: a backup's manifest is read and written in one place; manifests written by
earlier versions still read; nothing a later version adds is lost on a rewrite."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgpitr.errors import ChecksumMismatch
from pgpitr.manifest import BackupManifest, backup_row, copy_data, data_key, data_keys
from pgpitr.repository import open_repository

START = datetime(2026, 4, 17, 11, 55, 47, tzinfo=UTC)

#: What session-1 code wrote for a completed backup (no type, no compression key).
OLD = {
    "name": "backup-default-my-pg-20260417115547",
    "cluster": "my-pg",
    "status": "Completed",
    "system_identifier": "7300000000000000001",
    "pg_version": 15,
    "wal_segment_size": 16777216,
    "start_time": START.isoformat(),
    "stop_time": (START + timedelta(seconds=9)).isoformat(),
    "host": "db1",
    "wal_in_backup": False,
    "repository": "file:///var/lib/pgpitr/repo",
    "start_lsn": "0/2000028",
    "stop_lsn": "0/2000100",
    "timeline": 1,
    "database_size": 23000000,
    "stored_size": 3000000,
    "sha256": "ab" * 32,
    "duration_seconds": 9.2,
}


def test_an_old_manifest_reads_with_the_defaults_of_its_time() -> None:
    m = BackupManifest.from_dict(OLD)
    assert (m.type, m.compression, m.data_compression) == ("Full", "zstd", "zstd")
    assert m.start_time == START and m.stop_time == START + timedelta(seconds=9)
    assert (m.start_lsn_int, m.stop_lsn_int) == (0x2000028, 0x2000100)
    assert m.completed and m.expiration is None and m.extra == {}


def test_a_manifest_round_trips_and_keeps_keys_it_does_not_know() -> None:
    later = {**OLD, "compression": "zstd:9", "lineage_note": "x", "chain": ["a", "b"]}
    m = BackupManifest.from_dict(later)
    assert m.extra == {"lineage_note": "x", "chain": ["a", "b"]}
    assert m.data_compression == "zstd"
    assert m.to_dict() == {**later, "type": "Full"}  # the old default, written out now
    assert BackupManifest.from_dict(m.to_dict()) == m


def test_replace_gives_a_new_manifest_and_none_values_are_not_written() -> None:
    running = BackupManifest("b1", "c", "InProgress", START, pid=42)
    done = running.replace(status="Completed", pid=None, stop_time=START + timedelta(seconds=1))
    assert running.status == "InProgress" and running.to_dict()["pid"] == 42
    assert "pid" not in done.to_dict() and done.to_dict()["status"] == "Completed"


def test_backup_row_is_what_list_backup_shows() -> None:
    row = backup_row(BackupManifest.from_dict({**OLD, "status": "Failed"}))
    assert row["status"] == "Failed" and row["completion_time"] is None
    assert row["create_time"] == START.isoformat() and row["type"] == "Full"
    assert backup_row(BackupManifest.from_dict(OLD))["completion_time"] == OLD["stop_time"]


def test_data_keys_name_both_layouts() -> None:
    assert data_key("s", "b") == "s/backups/b/base.tar.zst"
    assert data_key("s", "b", "none") == "s/backups/b/base.tar"
    assert data_keys("s", "b") == [
        "s/backups/b/base.tar.zst",
        "s/backups/b/base.tar",
        "s/backups/b/backup_manifest",
        "s/backups/b/damaged.json",  # a damage record goes with the backup
    ]


def test_an_old_manifest_is_full_with_no_parent_and_an_incremental_names_its_parent() -> None:
    old = BackupManifest.from_dict(OLD)
    assert (old.type, old.parent, old.incremental, old.backup_manifest_sha256) == (
        "Full",
        None,
        False,
        None,
    )
    inc = old.replace(name="b2", type="Incremental", parent=old.name)
    again = BackupManifest.from_dict(inc.to_dict())
    assert again == inc and again.incremental and again.extra == {}
    assert backup_row(again)["parent"] == old.name and backup_row(again)["type"] == "Incremental"


def test_copy_data_checks_the_stored_bytes(tmp_path: Path) -> None:
    repo = open_repository(f"file://{tmp_path}")
    stored = repo.put_stream(data_key("s", "b", "none"), io.BytesIO(b"tar bytes" * 1000))
    m = BackupManifest(
        "b",
        "s",
        "Completed",
        START,
        compression="none",
        stored_size=stored.size,
        sha256=stored.sha256,
    )
    out = io.BytesIO()
    copy_data(repo, "s", m, out)
    assert out.getvalue() == b"tar bytes" * 1000
    with pytest.raises(ChecksumMismatch):
        copy_data(repo, "s", m.replace(sha256="00" * 32), io.BytesIO())


@pytest.mark.parametrize(
    ("next_xid", "xid32", "full"),
    [
        ("0:745", 700, 700),  # assigned before the backup's checkpoint
        ("0:745", 800, 800),  # after it
        ("1:5", 4294967290, 4294967290),  # epoch 0, just before the wraparound
        ("1:5", 9, 2**32 + 9),
        ("2:4294967290", 3, 3 * 2**32 + 3),  # past the next wraparound
        (None, 745, None),  # a backup that did not keep it
    ],
)
def test_a_32_bit_xid_after_a_backup_gets_the_epoch_nearest_its_next_xid(
    next_xid: str | None, xid32: int, full: int | None
) -> None:
    backup = BackupManifest("b", "c", "Completed", datetime(2026, 1, 1, tzinfo=UTC))
    assert backup.replace(next_xid=next_xid).full_xid(xid32) == full


def test_a_standby_backups_wal_range_comes_from_its_backup_manifest() -> None:
    from pgpitr.operations.backup.basebackup import range_from_manifest

    manifest = (
        b'{"PostgreSQL-Backup-Manifest-Version": 1, "Files": [], "WAL-Ranges": ['
        b'{ "Timeline": 2, "Start-LSN": "0/5000100", "End-LSN": "0/6000060" },'
        b'{ "Timeline": 1, "Start-LSN": "0/4000028", "End-LSN": "0/5000100" }]}'
    )
    assert range_from_manifest(manifest) == ("0/4000028", "0/6000060", 1)
