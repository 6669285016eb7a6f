"""A new Patroni cluster bootstrapped from a pgpitr restore (Patroni's custom bootstrap method).

Real parts: a plain pgpitr cluster made and backed up with the real ``pgpitr`` command line,
then two Patroni 4.1.5 members (tests/ha/patroni.py) whose ``bootstrap.method: pgpitr`` runs the
installed ``pgpitr cluster bootstrap-patroni``; Patroni passes ``--scope`` and ``--datadir`` and
each key of the section as ``--key=value``, as it would in production.  The truth is the row
order of the source: the leader holds exactly the rows committed before the target, a replica
streams from it, and nothing of the temporary cluster is left (its directory, a stanza)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from pgpitr.repository import open_repository
from pgpitr.state import default_repository_url
from tests.conftest import cli
from tests.ha.patroni import PatroniCluster
from tests.pg import archive_now, sql

SOURCE = "bsrc"
SCOPE = "boot-ha"
#: The installed command, as a Patroni configuration names it (the venv's console script).
PGPITR = Path(sys.executable).with_name("pgpitr")


def _leader_rows(ha: PatroniCluster) -> list[int]:
    with psycopg.connect(ha.leader().socket_conninfo(), autocommit=True) as db:
        return [r[0] for r in db.execute("SELECT id FROM msg ORDER BY id").fetchall()]


def _source_with_rows_around_a_target() -> datetime:
    """Rows 1 (before the backup), 2 and 3 after it, each its own commit, all archived; a
    target time between rows 2 and 3."""
    cli("cluster", "create", SOURCE)
    cli(
        "cluster",
        "edit-backup-policy",
        f"{SOURCE}-postgresql-backup-policy",
        "--set",
        "schedule.logfile.enable=true",
    )
    sql(SOURCE, "CREATE TABLE msg (id int PRIMARY KEY)")
    sql(SOURCE, "INSERT INTO msg VALUES (1)")
    cli("cluster", "backup", SOURCE)
    sql(SOURCE, "INSERT INTO msg VALUES (2)")
    target = datetime.now(UTC)  # after row 2's commit record was written
    time.sleep(0.05)
    sql(SOURCE, "INSERT INTO msg VALUES (3)")
    archive_now(SOURCE)
    return target


@pytest.mark.timeout(300)
def test_a_new_patroni_cluster_starts_from_a_restore_to_a_time(
    prefect_harness: str,
    home: Path,
    tmp_path: Path,
    make_patroni_cluster: Callable[..., PatroniCluster],
) -> None:
    began = time.monotonic()
    target = _source_with_rows_around_a_target()
    print(f"\nsource made, backed up, archived: {time.monotonic() - began:.1f} s")

    # a target outside the window: refused before anything is made, quickly, not by Patroni
    bad = tmp_path / "data"
    refused = cli(
        "cluster",
        "bootstrap-patroni",
        "--scope=bad-boot",
        f"--datadir={bad}",
        f"--source-cluster={SOURCE}",
        "--restore-to-time=2001-01-01T00:00:00Z",
        check=False,
    )
    assert refused.returncode != 0
    assert "is outside the recoverable window" in refused.stderr, refused.stderr
    assert not bad.exists()
    assert not (home / "clusters" / "bad-boot").exists()

    started = time.monotonic()
    ha = make_patroni_cluster(
        scope=SCOPE,
        members=2,
        bootstrap_method={
            "pgpitr": {
                "command": f"{PGPITR} cluster bootstrap-patroni",
                "source-cluster": SOURCE,
                "restore-to-time": target.isoformat(),
            }
        },
    )
    print(f"\nbootstrap from a restore, two members streaming: {time.monotonic() - started:.1f} s")

    assert _leader_rows(ha) == [1, 2]
    leader, (replica,) = ha.leader(), ha.replicas()
    with psycopg.connect(leader.socket_conninfo(), autocommit=True) as db:
        db.execute("INSERT INTO msg VALUES (10)")
        lsn = db.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
    with psycopg.connect(replica.socket_conninfo(), autocommit=True) as db:
        ha.until(
            "the replica replayed the leader's insert",
            lambda: db.execute("SELECT pg_last_wal_replay_lsn() >= %s", (lsn,)).fetchone()[0],
            timeout=30,
        )
        assert [r[0] for r in db.execute("SELECT id FROM msg ORDER BY id")] == [1, 2, 10]

    # nothing of the temporary cluster: its directory, a stanza of its name, pgpitr's files
    assert not (home / "clusters" / SCOPE).exists()
    repo = open_repository(default_repository_url(home))
    assert list(repo.list(f"{SCOPE}/")) == []
    assert not (leader.datadir / "pgpitr.conf").exists()
    assert not (leader.datadir / "pgpitr-recovery.conf").exists()
    assert "include 'pgpitr" not in (leader.datadir / "postgresql.base.conf").read_text()
    assert "bootstrap-patroni" in leader.log_file.read_text()  # it was Patroni that ran it
