"""A reboot ends every process at once; what the docs say a boot runs (`pgpitr agent start`, or
its systemd unit) brings the created clusters back, archiving, with nothing archived lost, and
leaves a cluster the operator stopped stopped."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import uuid
from pathlib import Path

import pytest

from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import open_repository
from tests.conftest import cli
from tests.flows import api
from tests.pg import archive_now, sql

pytestmark = pytest.mark.timeout(600)


def processes_of(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
            todo += [int(p) for p in children]
    return found


def kill_like_a_reboot(home: Path) -> list[int]:
    """SIGKILL to the agent, its serving process and every server of HOME, with their children."""
    roots = [json.loads((home / "agent" / "agent.json").read_text())["pid"]]
    for pidfile in home.glob("clusters/*/data/postmaster.pid"):
        roots.append(int(pidfile.read_text().split("\n", 1)[0]))
    everything = [p for root in roots for p in processes_of(root)]
    for pid in everything:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return everything


def gone(pids: list[int]) -> bool:
    """Dead (a zombie too: after a reboot there is not even that)."""

    def dead(pid: int) -> bool:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return True
        return state == "Z"

    return all(dead(p) for p in pids)


def test_agent_start_after_a_reboot_brings_created_clusters_back_archiving(
    home: Path, monkeypatch: pytest.MonkeyPatch, prefect_harness: str
) -> None:
    monkeypatch.setenv("PGPITR_HOST", f"boot-{uuid.uuid4().hex[:6]}")
    cli("cluster", "create", "boot-pg")
    cli("cluster", "create", "kept-down")
    cli("cluster", "edit-backup-policy", "boot-pg-postgresql-backup-policy", "--set",
        "schedule.logfile.enable=true")  # fmt: skip
    cli("cluster", "backup", "boot-pg")
    sql("boot-pg", "CREATE TABLE msg (id int)")
    sql("boot-pg", "INSERT INTO msg VALUES (1)")
    acknowledged = archive_now("boot-pg")
    cli("cluster", "stop", "kept-down")
    cli("agent", "start")
    try:
        killed = kill_like_a_reboot(home)
        api.wait_for(lambda: gone(killed), 30, "every process killed")
        assert not Cluster.get("boot-pg").is_running()

        said = cli("agent", "start").stderr
        assert "started" in said
        log = lambda: (home / "agent" / "agent.log").read_text()  # noqa: E731
        try:  # its log says so once the start returned
            api.wait_for(lambda: "started cluster boot-pg" in log(), 120, "boot-pg started")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nthe agent's log:\n{log()[-3000:]}") from None
        log = log()
        assert Cluster.get("boot-pg").is_running()
        assert not Cluster.get("kept-down").is_running()  # the operator's stop is kept
        assert "started cluster kept-down" not in log

        state = Cluster.get("boot-pg").state
        repo = open_repository(state.repository)
        archived = {info.key.rsplit("/", 1)[-1][:24] for info in repo.list("boot-pg/wal/")}
        assert acknowledged in archived  # nothing acknowledged before the reboot is lost
        sql("boot-pg", "INSERT INTO msg VALUES (2)")
        after = archive_now("boot-pg", timeout=60)  # archiving again
        assert after > acknowledged
        assert sql("boot-pg", "SELECT id FROM msg ORDER BY id") == [(1,), (2,)]
    finally:
        cli("agent", "stop", check=False)
