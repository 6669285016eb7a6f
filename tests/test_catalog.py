"""pgpitr/catalog/ without a server: what a stanza holds, backups whose process died, the
window's arithmetic.  (Commit times from real WAL: tests/test_walkthrough.py.)"""

from __future__ import annotations

import os
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgpitr.catalog import backups, walindex
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import NotFound
from pgpitr.manifest import BackupManifest
from pgpitr.repository import open_repository

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path: Path):
    return open_repository(f"file://{tmp_path / 'repo'}")


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_backups_list_oldest_first_and_read_back_as_saved(repo) -> None:
    later = BackupManifest("b-later", "s", "Completed", T0 + timedelta(hours=1))
    first = BackupManifest("b-first", "s", "Completed", T0)
    for m in (later, first):
        backups.save_backup(repo, "s", m)
    assert [b.name for b in backups.list_backups(repo, "s")] == ["b-first", "b-later"]
    assert backups.get_backup(repo, "s", "b-later") == later
    with pytest.raises(NotFound, match="backup 'nope' of cluster 's' does not exist"):
        backups.get_backup(repo, "s", "nope")


def test_an_in_progress_backup_whose_process_died_is_failed(repo) -> None:
    here = socket.gethostname()
    dead = BackupManifest("dead", "s", "InProgress", T0, pid=_dead_pid(), host=here)
    alive = BackupManifest("alive", "s", "InProgress", T0, pid=os.getpid(), host=here)
    elsewhere = BackupManifest("elsewhere", "s", "InProgress", T0, pid=1, host="other-host")
    # the pgpitr host (an agent's PGPITR_HOST) is not the machine: the pid is this machine's
    agents = BackupManifest(
        "agents", "s", "InProgress", T0, pid=_dead_pid(), host="agent-x", machine=here
    )
    for m in (dead, alive, elsewhere, agents):
        backups.save_backup(repo, "s", m)
    status = {b.name: b.status for b in backups.list_backups(repo, "s")}
    # another machine's backup is taken at its word: its pid means nothing here
    assert status == {
        "dead": "Failed",
        "alive": "InProgress",
        "elsewhere": "InProgress",
        "agents": "Failed",
    }


def test_a_leftover_stanza_holds_neither_backup_nor_segment(repo) -> None:
    assert not backups.leftover_stanza(repo, "s")  # nothing at all
    repo.put_json("s/archive.info", {"system_identifier": "1"})
    repo.put_document("s/wal/00000002.history-abc.zst", b"1\t0/3000000\tno reason\n")
    assert backups.leftover_stanza(repo, "s")
    repo.put_document("s/wal/0000000100000000/000000010000000000000003-abc.zst", b"x")
    assert not backups.leftover_stanza(repo, "s")


def test_history_files_are_read_as_parent_and_switch_point() -> None:
    text = "1\t0/3000100\tno recovery target specified\n\n2\t0/5000000\tat restore point\n"
    assert walindex.parse_history(text) == [(1, 0x3000100), (2, 0x5000000)]


def _range(name: str, start: int, end: int) -> catalog_window.Range:
    return catalog_window.Range(
        name, T0 + timedelta(minutes=start), T0 + timedelta(minutes=end), "seg"
    )


def test_the_window_merges_overlapping_ranges_and_keeps_gaps() -> None:
    ranges = [_range("c", 50, 60), _range("a", 0, 10), _range("b", 5, 20)]
    window = catalog_window.Window([], ranges)
    minutes = [((a - T0).seconds // 60, (b - T0).seconds // 60) for a, b in window.periods]
    assert minutes == [(0, 20), (50, 60)]
    assert window.start_backup == "a"
    assert [r.backup for r in window.fitting(T0 + timedelta(minutes=7))] == ["a", "b"]
    assert window.fitting(T0 + timedelta(minutes=30)) == []
    assert (
        catalog_window.Window([], []).start_backup is None
        and catalog_window.Window([], []).periods == []
    )
