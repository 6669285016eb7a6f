"""A Patroni HA cluster protected by pgpitr through a switchover and a kill -9 failover.

Real parts: three Patroni 4.1.5 members with their Raft DCS and Debian's PostgreSQL 15
(tests/ha/patroni.py), synchronous mode turned on before the crash (Patroni's own: an
acknowledged commit survives a failover), a writer committing a numbered row every 100 ms
throughout (tests/ha/writer.py), and the real ``pgpitr`` command line.  pgpitr is registered
with the REST API of one member, with archive_mode off (so through a restart of every member,
by Patroni), backs up from a standby, and must keep archiving from whichever member is
primary.  It also streams WAL (a receiver under a supervisor in this process, as the agent
runs it) on a Patroni permanent slot, from whichever member is primary.  The truth a restore is
checked against is the table the surviving history has: each restore to a time between two rows
holds exactly the rows committed up to it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest

from pgpitr.catalog import backups as catalog_backups
from pgpitr.policy_store import load_policy
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.slots import APPLICATION_NAME, SLOT
from pgpitr.repository import open_repository
from pgpitr.state import default_repository_url
from pgpitr.wal import archive
from pgpitr.wal import stream as wal_stream
from tests.conftest import cli
from tests.ha.patroni import Member, PatroniCluster
from tests.ha.writer import Writer
from tests.pg import archive_now, sql

NAME = "pgha"
POLICY = f"{NAME}-postgresql-backup-policy"


def _table(cluster: str) -> list[tuple[int, datetime]]:
    return [(n, at) for n, at in sql(cluster, "SELECT n, at FROM ha_writes ORDER BY n")]


def _wait_rows(writer: Writer, more: int, timeout: float = 60) -> None:
    """Until the writer has MORE further rows acknowledged (it writes through the events)."""
    start = len(writer.acknowledged())
    deadline = time.monotonic() + timeout
    while len(writer.acknowledged()) < start + more:
        assert time.monotonic() < deadline, f"the writer acknowledged no {more} rows in {timeout} s"
        time.sleep(0.1)


def _backup_member(home: Path, name: str) -> str | None:
    repo = open_repository(default_repository_url(home))
    return catalog_backups.get_backup(repo, NAME, name).member


def _new_timeline_archived(home: Path, ha: PatroniCluster, promoted: str, since: float) -> float:
    """Seconds until the promoted member's timeline history is in the repository (what the
    new primary archives first), counted from SINCE."""
    timeline = next(m["timeline"] for m in ha.cluster_state()["members"] if m["name"] == promoted)
    repo = open_repository(default_repository_url(home))
    deadline = time.monotonic() + 60
    while not archive.stored_versions(repo, NAME, f"{timeline:08X}.history"):
        assert time.monotonic() < deadline, f"timeline {timeline}'s history was not archived"
        time.sleep(0.1)
    return time.monotonic() - since


@pytest.fixture
def receivers(home: Path) -> Iterator[None]:
    """The agent's WAL receivers, in a thread of this process (stopped before Patroni is)."""
    thread, stop, _ = wal_stream.start(tick=0.5, home=home)
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=60)


def _query(ha: PatroniCluster, member: Member, query: str, *args: object) -> list[tuple]:
    with psycopg.connect(ha.member_conninfo(member), autocommit=True) as db:
        return db.execute(query, args).fetchall()


def _receiver_streams_from_leader(ha: PatroniCluster, since: float) -> float:
    """Seconds from SINCE until pgpitr's receiver streams from the member that leads now."""
    leader = ha.leader()
    ha.until(
        f"pgpitr's receiver streams from {leader.name}",
        lambda: _query(
            ha,
            leader,
            "SELECT 1 FROM pg_stat_replication WHERE application_name = %s AND state = 'streaming'",
            APPLICATION_NAME,
        ),
        timeout=60,
    )
    return time.monotonic() - since


def _stored_up_to(home: Path, ha: PatroniCluster) -> str:
    """Wait until the repository holds the leader's WAL up to its position now, as a stored
    segment or a streamed partial that long; the segment's name."""
    ((segment, offset),) = _query(
        ha,
        ha.leader(),
        "SELECT file_name, file_offset FROM pg_walfile_name_offset(pg_current_wal_lsn())",
    )
    repo = open_repository(default_repository_url(home))
    ha.until(
        f"the repository holds {segment} up to {offset}",
        lambda: (
            archive.stored_versions(repo, NAME, segment)
            or any(
                extent >= offset for _, _, extent in archive.streamed_partials(repo, NAME, segment)
            )
        ),
        timeout=30,
    )
    return segment


def _window(name: str) -> list[tuple[datetime, datetime]]:
    info = json.loads(cli("cluster", "describe", name, "-o", "json").stdout)
    return [
        (datetime.fromisoformat(a), datetime.fromisoformat(b)) for a, b in info["recoverable_time"]
    ]


@pytest.mark.timeout(900)  # a Patroni failover waits out its 20 s lock; six restores
def test_archiving_and_restores_span_a_switchover_and_a_failover(
    home: Path, make_patroni_cluster: Callable[..., PatroniCluster], receivers: None
) -> None:
    ha = make_patroni_cluster(scope="pgha")
    first = "ha-first"
    config_before = ha.dcs_config()
    user, password = ha.rest_auth
    auth = {"PATRONI_RESTAPI_USERNAME": user, "PATRONI_RESTAPI_PASSWORD": password}
    # pgpitr is given the API of the member that leads after the switchover and then crashes:
    # from the crash on, the other members' APIs must answer for the cluster
    doomed = ha.replicas()[0]
    with Writer(ha.conninfo()) as writer:
        _wait_rows(writer, 5)

        # wrong credentials: refused when Patroni refuses the first change, nothing left
        wrong = {**auth, "PATRONI_RESTAPI_PASSWORD": "not-" + password}
        refused = cli(
            "cluster",
            "register",
            NAME,
            "--patroni",
            doomed.rest_url,
            "--restart",
            env=wrong,
            check=False,
        )
        assert refused.returncode != 0 and "401" in refused.stderr, refused.stderr
        assert "not-" + password not in refused.stdout + refused.stderr
        assert not (home / "clusters" / NAME).exists()
        assert ha.dcs_config() == config_before

        # register through one member's API; archive_mode is off: Patroni restarts every member
        refused = cli(
            "cluster", "register", NAME, "--patroni", doomed.rest_url, env=auth, check=False
        )
        assert refused.returncode != 0 and "archive_mode is off" in refused.stderr
        assert not (home / "clusters" / NAME).exists()
        done = cli("cluster", "register", NAME, "--patroni", doomed.rest_url, "--restart", env=auth)
        assert password not in done.stdout + done.stderr
        assert "members" in done.stdout + done.stderr
        parameters = ha.dcs_config()["postgresql"]["parameters"]
        assert parameters["archive_mode"] == "on"
        assert "wal-push" not in parameters["archive_command"]  # log backup is off at first
        cli("cluster", "edit-backup-policy", POLICY, "--set", "schedule.logfile.enable=true")
        assert "wal-push" in ha.dcs_config()["postgresql"]["parameters"]["archive_command"]

        # WAL streaming, on a Patroni permanent slot (on every member: it survives a failover);
        # synchronous streaming is refused (synchronous_standby_names is Patroni's)
        cli("cluster", "edit-backup-policy", POLICY, "--set", "schedule.logfile.method=stream")
        assert ha.dcs_config()["slots"] == {SLOT: {"type": "physical"}}
        _receiver_streams_from_leader(ha, time.monotonic())
        ha.until(
            "the permanent slot on every member",
            lambda: all(
                _query(ha, m, "SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", SLOT)
                for m in ha.members
            ),
            timeout=30,
        )
        refused = cli(
            "cluster",
            "edit-backup-policy",
            POLICY,
            "--set",
            "schedule.logfile.synchronous=true",
            check=False,
        )
        assert refused.returncode != 0 and "synchronous mode" in refused.stderr, refused.stderr
        assert not load_policy(Cluster.get(NAME)).logfile_synchronous

        described = json.loads(cli("cluster", "describe", NAME, "-o", "json").stdout)
        roles = sorted(m["role"] for m in described["members"])
        assert len(roles) == 3 and roles.count("primary") + roles.count("leader") == 1
        assert described["port"] == ha.leader().port
        # the primary's log is its logging collector's current file (Patroni's members')
        assert Cluster.get(NAME).state.log_file.is_file()

        cli("cluster", "backup", NAME, "--backup-name", first)
        assert _backup_member(home, first) in {m.name for m in ha.replicas()}
        _wait_rows(writer, 10)

        old = ha.leader()
        ha.switchover(candidate=doomed)
        switched_at = datetime.now(UTC)
        assert ha.leader().name != old.name
        _receiver_streams_from_leader(ha, time.monotonic())
        _wait_rows(writer, 20)

        # only a synchronous standby surely has every acknowledged commit when the primary
        # crashes: Patroni's synchronous mode, on from now
        ha.patch_config({"synchronous_mode": True})
        synchronous = ha.until(
            "a synchronous standby",
            lambda: [
                m["name"]
                for m in ha.cluster_state()["members"]
                if m["role"] == "sync_standby" and m["state"] == "streaming"
            ],
            timeout=30,
        )
        _wait_rows(writer, 5)
        crashed = ha.crash_leader()
        assert crashed.name == doomed.name
        crashed_at, crash_clock = datetime.now(UTC), time.monotonic()
        new = ha.wait_for_leader(not_name=crashed.name)
        assert new.name in synchronous  # Patroni promotes only the synchronous standby
        archived_after = _new_timeline_archived(home, ha, new.name, crash_clock)
        streaming_after = _receiver_streams_from_leader(ha, crash_clock)
        print(
            f"failover: the new timeline's history archived {archived_after:.1f} s and the "
            f"receiver streams from the new primary {streaming_after:.1f} s after the crash"
        )
        _wait_rows(writer, 20)
        ha.restart_member(crashed)
        ha.wait_streaming()
        second = "ha-second"  # on the new timeline, from a standby again
        cli("cluster", "backup", NAME, "--backup-name", second)
        assert _backup_member(home, second) not in (None, new.name)
        _wait_rows(writer, 10)
    acked = writer.acknowledged()
    # streaming alone brings the last commits in, before any switch of their segment: `latest`
    # holds every acknowledged row
    _stored_up_to(home, ha)
    cli("cluster", "restore", "pgha-latest", "--source-cluster", NAME)
    latest = {r[0] for r in sql("pgha-latest", "SELECT n FROM ha_writes")}
    assert {a.n for a in acked} <= latest
    # a copy of a standby's backup never streams from the live cluster (Patroni's
    # primary_conninfo and slot came with it)
    assert sql(
        "pgha-latest", "SELECT current_setting('primary_conninfo'), pg_is_in_recovery()"
    ) == [("", False)]
    archive_now(NAME)
    truth = _table(NAME)
    numbers = [n for n, _ in truth]
    assert numbers == sorted(set(numbers))
    # synchronous mode: no acknowledged commit is lost, across the failover either
    assert {a.n for a in acked} <= set(numbers)
    assert Cluster.get(NAME).state.port == ha.leader().port

    # one window, no gap, from the first backup to the last row
    periods = _window(NAME)
    assert len(periods) == 1, periods
    start, end = periods[0]
    repo = open_repository(default_repository_url(home))
    first_stop = catalog_backups.get_backup(repo, NAME, first).stop_time
    assert first_stop is not None and start <= first_stop
    assert end >= truth[-1][1] - timedelta(seconds=1)

    # restores to times spread across both events: each holds exactly the rows up to it
    inside = [(n, at) for n, at in truth if start < at and at < end - timedelta(seconds=1)]
    spans = [
        [row for row in inside if row[1] < switched_at],
        [row for row in inside if switched_at < row[1] < crashed_at],
        [row for row in inside if row[1] > crashed_at],
    ]
    rng = random.Random(len(truth))
    picks = [row for span in spans for row in rng.sample(span[:-1], 2)]
    for i, (n, at) in enumerate(sorted(picks)):
        following = truth[numbers.index(n) + 1][1]
        target = at + (following - at) / 2
        restored = f"pgha-at-{i}"
        cli(
            "cluster",
            "restore",
            restored,
            "--restore-to-time",
            target.isoformat(),
            "--source-cluster",
            NAME,
        )
        got = [r[0] for r in sql(restored, "SELECT n FROM ha_writes ORDER BY n")]
        assert got == [m for m in numbers if m <= n], f"restore to {target} (after row {n})"

    # a drill of the HA cluster: a time after the failover, restored from the standbys'
    # backups into a scratch cluster, checked (pg_amcheck) and removed
    cli("cluster", "drill", NAME, "--at", max(picks)[1].isoformat())
    drills = json.loads(cli("cluster", "list-drill", NAME, "-o", "json").stdout)
    assert [(d["passed"], d["scratch_removed"]) for d in drills] == [(True, True)], drills
    assert drills[0]["backup"] in (first, second)

    cli("cluster", "unregister", NAME)
    assert ha.dcs_config() == {**config_before, "synchronous_mode": True}
