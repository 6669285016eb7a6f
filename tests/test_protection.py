"""Loud when unprotected: a cluster whose server is stopped (killed as a reboot kills it, or
stopped cleanly) or whose archiving fails is shown NOT PROTECTED, with since when, by describe,
list and list-backup-policy, and the agent's watch raises pgpitr.cluster.unprotected in the
Prefect API.  Real servers, the CLI; no flow runs for any of it."""

from __future__ import annotations

import json
import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgpitr import protection
from pgpitr.postgres.cluster import Cluster
from tests.conftest import cli
from tests.flows import api
from tests.pg import archive_now, sql

pytestmark = pytest.mark.timeout(300)

COMMANDS = (("list",), ("list-backup-policy",))


def _archiving(name: str) -> Cluster:
    cli("cluster", "create", name)
    policy = f"{name}-postgresql-backup-policy"
    cli("cluster", "edit-backup-policy", policy, "--set", "schedule.logfile.enable=true")
    return Cluster.get(name)


def _until(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _outputs(name: str) -> list[str]:
    return [cli("cluster", "describe", name).stdout] + [
        cli("cluster", *command).stdout for command in COMMANDS
    ]


def _since(name: str) -> datetime:
    info = json.loads(cli("cluster", "describe", name, "-o", "json").stdout)
    assert info["protected"] is False
    return datetime.fromisoformat(info["unprotected_since"])


def test_a_cluster_killed_as_a_reboot_kills_it_is_shown_not_protected_since_its_last_archive(
    home: Path,
) -> None:
    cluster = _archiving("killed")
    before = datetime.now(UTC).replace(microsecond=0)
    sql("killed", "CREATE TABLE written (i int)")  # a segment to finish and archive now
    archive_now("killed")
    pid = cluster.pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed = datetime.now(UTC)
    _until(lambda: not cluster.is_running(), "the postmaster to be gone")
    for output in _outputs("killed"):
        assert "WARNING: cluster killed is NOT PROTECTED since " in output, output
        assert "stopped without a shutdown (killed, crashed" in output
        assert "start it with `pgpitr cluster start killed`" in output
    assert before <= _since("killed") <= killed
    for command in COMMANDS:  # the JSON outputs carry it too
        (row,) = json.loads(cli("cluster", *command, "-o", "json").stdout)
        assert row["protected"] is False and row["protection_warning"]


def test_a_cleanly_stopped_cluster_is_shown_not_protected_since_its_stop(home: Path) -> None:
    _archiving("stopped")
    before = datetime.now(UTC).replace(microsecond=0)
    cli("cluster", "stop", "stopped")
    after = datetime.now(UTC)
    for output in _outputs("stopped"):
        assert "WARNING: cluster stopped is NOT PROTECTED since " in output, output
        assert "its server is stopped (shut down)" in output
    assert before <= _since("stopped") <= after


def test_a_running_archiving_cluster_has_no_warning(home: Path) -> None:
    _archiving("fine")
    archive_now("fine")
    for output in _outputs("fine"):
        assert "NOT PROTECTED" not in output, output
    info = json.loads(cli("cluster", "describe", "fine", "-o", "json").stdout)
    assert info["protected"] is True and info["protection_warning"] is None


def test_a_running_cluster_whose_archiving_fails_is_shown_not_protected(home: Path) -> None:
    cluster = _archiving("failing")
    archive_now("failing")
    repo = Path(str(cluster.state.repository).removeprefix("file://"))
    directories = [repo, *(p for p in repo.rglob("*") if p.is_dir())]
    modes = {d: d.stat().st_mode for d in directories}
    for directory in directories:  # the server's OS user can no longer write into it
        directory.chmod(0o555)
    try:
        sql("failing", "CREATE TABLE written (i int)")
        sql("failing", "SELECT pg_switch_wal()")
        _until(
            lambda: sql("failing", "SELECT failed_count FROM pg_stat_archiver")[0][0] > 0,
            "the archiver to fail",
        )
        for output in _outputs("failing"):
            assert "WARNING: cluster failing is NOT PROTECTED since " in output, output
            assert "WAL archiving is not keeping up (the archiver fails" in output
    finally:
        for directory, mode in modes.items():
            directory.chmod(mode)


def test_the_agents_watch_raises_pgpitr_cluster_unprotected_once_in_the_prefect_api(
    home: Path, prefect_harness: str
) -> None:
    from deployments import agent

    cluster = _archiving("watched")
    cli("cluster", "stop", "watched")
    seen: set[str] = set()
    (found,) = [p for p in protection.newly_unprotected(seen) if p.cluster == "watched"]
    assert protection.newly_unprotected(seen) == []  # once, not at every look
    agent._unprotected_event(found)
    resource = f"pgpitr.cluster.{cluster.state.host}.watched"
    (event, *_) = api.events("pgpitr.cluster.unprotected", resource=resource)
    assert event["payload"]["reason"] == "its server is stopped (shut down)"
    since = datetime.fromisoformat(event["payload"]["since"])
    assert datetime.now(UTC) - since < timedelta(minutes=5)
