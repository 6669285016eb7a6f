"""A Patroni cluster on PostgreSQL 17: a full and an incremental backup, both from a standby,
restored together to a time after the incremental, to a time after a switchover to that
standby, and to a time after the new primary was killed (kill -9, Patroni and PostgreSQL) and
the last member took over: three timelines, one lineage.

Real parts: three Patroni 4.1.5 members with their Raft DCS on the PostgreSQL 17 test wheel
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

import psycopg
import pytest

from pgpitr.catalog import backups as catalog_backups
from pgpitr.errors import ClusterStateError
from pgpitr.repository import open_repository
from pgpitr.state import default_repository_url
from tests import pgwheels
from tests.conftest import cli
from tests.ha.patroni import Member, PatroniCluster
from tests.pg import archive_now, sql

NAME = "pgha17"
POLICY = f"{NAME}-postgresql-backup-policy"


def _row(n: int) -> datetime:
    """Commit row N on the primary; a time after its commit and before the next one's."""
    sql(NAME, "INSERT INTO msg VALUES (%s)", (n,))
    after = datetime.now(UTC)
    time.sleep(0.05)
    return after


def _replayed(ha: PatroniCluster, member: Member, row: int) -> bool:
    with psycopg.connect(ha.member_conninfo(member), connect_timeout=2, autocommit=True) as db:
        return db.execute("SELECT count(*) FROM msg WHERE id = %s", (row,)).fetchone()[0] == 1


@pytest.mark.timeout(500)
def test_full_and_incremental_backups_from_a_standby_restore_to_a_time(
    home: Path, make_patroni_cluster: Callable[..., PatroniCluster]
) -> None:
    bindir = str(pgwheels.require(17))
    ha = make_patroni_cluster(
        bindir=bindir, scope=NAME, members=3, parameters={"archive_mode": "on"}
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
    full = catalog_backups.get_backup(repo, NAME, "ha17-full")
    incremental = catalog_backups.get_backup(repo, NAME, "ha17-inc")
    assert full.member in {m.name for m in ha.replicas()}
    assert incremental.member == full.member  # the lineage stays on the standby it began on
    assert incremental.parent == "ha17-full"
    standby = ha.member(full.member)

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

    # kill -9 of that new primary, once the others hold row 8: one of them takes over, archives
    # a third timeline, and a restore from the same backups follows both switches
    others = ha.replicas()
    ha.until("row 8 on every standby", lambda: all(_replayed(ha, m, 8) for m in others), 30)
    crashed = ha.crash_leader()
    assert crashed.name == standby.name
    assert ha.wait_for_leader(not_name=crashed.name).name in {m.name for m in others}
    ha.until("pgpitr on the new primary", lambda: _committed(9), 60)
    after_failover = _row(10)
    _row(11)
    archive_now(NAME)
    restore = ["restore", "pgha17-failover", "--restore-to-time", after_failover.isoformat()]
    cli("cluster", *restore, "--source-cluster", NAME, "--bindir", bindir)
    assert [r[0] for r in sql("pgha17-failover", "SELECT id FROM msg ORDER BY id")] == [
        *range(1, 11)
    ]

    cli("cluster", "unregister", NAME)
    assert ha.dcs_config() == config_before


def _committed(n: int) -> bool:
    """Row N committed through pgpitr's view of the primary; False while that view still
    points at the member that is gone."""
    try:
        _row(n)
    except (ClusterStateError, psycopg.errors.ReadOnlySqlTransaction):
        return False
    return True
