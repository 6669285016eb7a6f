"""A Patroni cluster on PostgreSQL 17: a full and an incremental backup, both from a standby,
restored together to a time after the incremental, and to a time after a switchover to that
standby.

Real parts: two Patroni 4.1.5 members with their Raft DCS on the PostgreSQL 17 test wheel
(tests/pgwheels.py: the HA test's version beside Debian's 15), and the real ``pgpitr`` command
line.  ``summarize_wal``, which incrementals need on whichever member they are taken from, goes
through Patroni's dynamic configuration (the policy's incremental switch) and leaves it again on
``unregister``.  The truth is the row order: the restore holds exactly the rows committed before
its target.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgpitr.catalog import backups as catalog_backups
from pgpitr.repository import open_repository
from pgpitr.state import default_repository_url
from tests import pgwheels
from tests.conftest import cli
from tests.ha.patroni import PatroniCluster
from tests.pg import archive_now, sql

NAME = "pgha17"
POLICY = f"{NAME}-postgresql-backup-policy"


def _row(n: int) -> datetime:
    """Commit row N on the primary; a time after its commit and before the next one's."""
    sql(NAME, "INSERT INTO msg VALUES (%s)", (n,))
    after = datetime.now(UTC)
    time.sleep(0.05)
    return after


@pytest.mark.timeout(400)
def test_full_and_incremental_backups_from_a_standby_restore_to_a_time(
    home: Path, make_patroni_cluster: Callable[..., PatroniCluster]
) -> None:
    bindir = str(pgwheels.require(17))
    ha = make_patroni_cluster(
        bindir=bindir, scope=NAME, members=2, parameters={"archive_mode": "on"}
    )
    config_before = ha.dcs_config()
    user, password = ha.rest_auth
    auth = {"PATRONI_RESTAPI_USERNAME": user, "PATRONI_RESTAPI_PASSWORD": password}
    cli("cluster", "register", NAME, "--patroni", ha.rest_url, "--bindir", bindir, env=auth)
    cli("cluster", "edit-backup-policy", POLICY, "--set", "schedule.logfile.enable=true")
    # the incremental schedule asks for WAL summaries: through Patroni, on every member
    cli("cluster", "edit-backup-policy", POLICY, "--set", "schedule.incremental.enable=true")
    assert ha.dcs_config()["postgresql"]["parameters"]["summarize_wal"] == "on"

    sql(NAME, "CREATE TABLE msg (id int PRIMARY KEY)")
    _row(1)
    cli("cluster", "backup", NAME, "--type", "full", "--backup-name", "ha17-full")
    _row(2)
    cli("cluster", "backup", NAME, "--type", "incremental", "--backup-name", "ha17-inc")
    _row(3)
    target = _row(4)
    _row(5)

    repo = open_repository(default_repository_url(home))
    [standby] = ha.replicas()
    full = catalog_backups.get_backup(repo, NAME, "ha17-full")
    incremental = catalog_backups.get_backup(repo, NAME, "ha17-inc")
    assert (full.member, incremental.member) == (standby.name, standby.name)
    assert incremental.parent == "ha17-full"

    # a switchover to that standby: the new primary archives its timeline, and a restore to a
    # time on it starts from the same backups and follows the timeline's history
    ha.switchover(candidate=standby)
    _row(6)
    after_switchover = _row(7)
    _row(8)
    archive_now(NAME)

    restored = cli(
        "cluster",
        "restore",
        "pgha17-at",
        "--restore-to-time",
        target.isoformat(),
        "--source-cluster",
        NAME,
        "--bindir",
        bindir,
    )
    assert "ha17-inc" in restored.stdout + restored.stderr  # the newest backup before the target
    assert [r[0] for r in sql("pgha17-at", "SELECT id FROM msg ORDER BY id")] == [1, 2, 3, 4]
    # rows 6 and 7 exist only on the switchover's timeline
    when = after_switchover.isoformat()
    restore = ["restore", "pgha17-after", "--restore-to-time", when, "--source-cluster", NAME]
    cli("cluster", *restore, "--bindir", bindir)
    assert [r[0] for r in sql("pgha17-after", "SELECT id FROM msg ORDER BY id")] == [*range(1, 8)]

    cli("cluster", "unregister", NAME)
    assert ha.dcs_config() == config_before
