"""pgpitr/operations/restore/ and pgpitr/targets.py: the target is read and checked once, at the
edge;
each kind of target restores exactly the right rows; a target that cannot be reached is refused
before anything is created.

One source cluster for the module (`tsrc`, one backup): row 1 before the backup, then rows 2 to
5 after it, each in its own transaction, a restore point between rows 2 and 3, everything
archived.  Each test restores into its own new cluster, so that the tests pass in any order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from pgpitr import cluster_repository, policy_store
from pgpitr.catalog import backups, records, restore_points, walindex
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import AlreadyExists, InvalidInput, NotFound, RecoveryTargetError
from pgpitr.operations import create as operations_create
from pgpitr.operations import log_backup
from pgpitr.operations import restore as rs
from pgpitr.operations.restore import RestoreRequest, RestoreTarget, handover
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import run
from pgpitr.postgres.ports import free_port
from pgpitr.steps import Steps
from pgpitr.wal.lsn import Lsn
from tests import engine
from tests.conftest import cli, shared_home
from tests.faults.helpers import archived_cluster
from tests.pg import archive_now, rows, sql

# -- the target, read once -------------------------------------------------------------------


def test_a_request_takes_a_checked_target_and_normalises_empty_options() -> None:
    target = RestoreTarget.of(time="Apr 17,2023 19:56:40 UTC+0800")
    request = RestoreRequest("new-pg", "my-pg", target, "", "")
    assert request.target.time == datetime(2023, 4, 17, 11, 56, 40, tzinfo=UTC)
    assert (request.backup_name, request.backup_repo, request.bindir) == (None, None, None)
    assert target.as_parameter() == {"kind": "time", "time": "2023-04-17T11:56:40Z"}
    assert RestoreTarget.model_validate(target.as_parameter()) == target  # a flow run's JSON


@pytest.mark.parametrize(
    ("fields", "kind", "shown"),
    [
        ({}, "latest", "the end of the archived WAL"),
        ({"time": " LATEST "}, "latest", "the end of the archived WAL"),
        ({"time": "2023-04-17 19:56:40 Asia/Shanghai"}, "time", "time Apr 17,2023 11:56:40"),
        ({"lsn": "0/3000a28"}, "lsn", "LSN 0/3000A28"),
        ({"lsn": "00000001/00000028", "inclusive": False}, "lsn", "LSN 1/28, stopping just"),
        ({"xid": "745"}, "xid", "transaction 745"),
        ({"xid": 745, "inclusive": False}, "xid", "transaction 745, stopping just before it"),
        ({"name": "before-upgrade"}, "name", "restore point 'before-upgrade'"),
        ({"immediate": True}, "immediate", "the end of the backup (immediate)"),
    ],
)
def test_each_kind_of_target_is_read_and_round_trips_as_json(fields, kind, shown) -> None:
    target = RestoreTarget.of(**fields)
    assert target.kind == kind
    assert target.describe().startswith(shown)
    assert RestoreTarget.model_validate(target.as_parameter()) == target


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"lsn": "0/XYZ"}, "cannot read the LSN '0/XYZ'"),
        ({"lsn": "3000028"}, "cannot read the LSN '3000028'"),
        ({"lsn": "0/123456789"}, "cannot read the LSN"),
        ({"xid": "12a"}, "cannot read the transaction id '12a'"),
        ({"xid": "-5"}, "cannot read the transaction id '-5'"),
        ({"xid": 2}, "transaction id 2 is out of range"),
        ({"xid": 2**32 + 1}, "transaction id 4294967297 is out of range"),
        ({"xid": 2**64}, "transaction id 18446744073709551616 is out of range"),
        ({"name": "two words"}, "invalid restore point name 'two words'"),
        ({"name": "x" * 64}, "invalid restore point name"),
        ({"time": "yesterday"}, "cannot read the restore time 'yesterday'"),
        ({"time": "2023-04-17 19:56:40"}, "has no time zone"),
        ({"time": "2023-04-17T19:56:40+15:00"}, "beyond ±14:00"),
        ({"time": datetime(2023, 4, 17)}, "has no time zone"),
        ({"lsn": "0/1", "xid": 745}, "--restore-to-lsn (lsn) and --restore-to-xid (xid)"),
        ({"time": "latest", "immediate": True, "name": "p"}, "--restore-to-name (name) and"),
        ({"time": "Latest", "lsn": "0/1"}, "--restore-to-time latest and --restore-to-lsn"),
        ({"inclusive": False}, "a target of kind latest has nothing to stop before"),
        ({"name": "p", "inclusive": False}, "a target of kind name"),
        ({"when": "latest"}, "when: Extra inputs are not permitted"),
    ],
)
def test_a_malformed_target_is_refused_with_what_was_expected(fields, message) -> None:
    with pytest.raises(InvalidInput) as info:
        RestoreTarget.of(**fields)
    assert message in str(info.value)
    assert "--restore-to-time" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("new", "source", "message"),
    [
        ("Bad Name", "my-pg", "invalid cluster name 'Bad Name'"),
        ("new-pg", "my pg", "invalid cluster name 'my pg'"),
    ],
)
def test_a_request_with_a_bad_name_is_refused(new, source, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        RestoreRequest(new, source)


# -- each kind of target on a real server ----------------------------------------------------


@dataclass(frozen=True)
class Source:
    home: Path
    backup: str
    lsn_before_backup: str
    lsn_after_row_2: str
    xid_row_3: int
    xid_aborted: int
    commit_time_row_4: datetime
    xid_row_4: int


@pytest.fixture(scope="module")
def source() -> Iterator[Source]:
    with shared_home() as home:
        cluster = operations_create.create("tsrc")
        log_backup.set_log_backup(cluster, True)
        sql("tsrc", "CREATE TABLE msg (id int PRIMARY KEY)")
        sql("tsrc", "INSERT INTO msg VALUES (1)")
        lsn_before = sql("tsrc", "SELECT pg_current_wal_lsn()::text")[0][0]
        backup = engine.backup(cluster)
        sql("tsrc", "INSERT INTO msg VALUES (2)")
        lsn_after_2 = sql("tsrc", "SELECT pg_current_wal_lsn()::text")[0][0]
        engine.create_restore_point("tsrc", "between-2-and-3")
        (xid_3,) = sql("tsrc", "INSERT INTO msg VALUES (3) RETURNING txid_current()")[0]
        with Cluster.get("tsrc").connect() as db:
            with db.transaction(force_rollback=True):
                (xid_aborted,) = db.execute(
                    "INSERT INTO msg VALUES (99) RETURNING txid_current()"
                ).fetchone()
        (xid_4,) = sql("tsrc", "INSERT INTO msg VALUES (4) RETURNING txid_current()")[0]
        sql("tsrc", "INSERT INTO msg VALUES (5)")  # a commit after row 4's: its time is reachable
        archive_now("tsrc")
        yield Source(
            home,
            backup.name,
            lsn_before,
            lsn_after_2,
            int(xid_3),
            int(xid_aborted),
            _commit_time(cluster, int(xid_4)),
            int(xid_4),
        )


def _commit_time(cluster: Cluster, xid: int) -> datetime:
    """The commit time of ``xid`` exactly as its WAL record has it (what recovery compares)."""
    repo = cluster_repository.repository(cluster)
    (b,) = backups.list_backups(repo, "tsrc")
    index = walindex.wal_index(repo, "tsrc", b.wal_segment_size)
    (chain,) = catalog_window.backup_chains(index, [b])
    found = records.find_transaction(repo, index, cluster.bindir, chain.end, 0, xid)
    assert found.record is not None and found.record.committed
    return found.record.time


def restored_rows(new_name: str, **target: object) -> list[int]:
    result = engine.restore(new_name, "tsrc", RestoreTarget.of(**target))
    try:
        assert result.cluster == new_name
        return rows(new_name)
    finally:
        Cluster.get(new_name).stop()


def test_latest_restores_every_row(source: Source) -> None:
    assert restored_rows("t-latest") == [1, 2, 3, 4, 5]
    # the source's policy, its backups at another minute of the same hours and days
    mine = policy_store.load_policy(Cluster.get("t-latest"))
    theirs = policy_store.load_policy(Cluster.get("tsrc"))
    assert (mine.logfile_enabled, mine.ttl) == (theirs.logfile_enabled, theirs.ttl)
    for attr in ("cron", "incremental_cron", "drill_cron"):
        minute, *when = getattr(mine, attr).split()
        their_minute, *their_when = getattr(theirs, attr).split()
        assert when == their_when and minute != their_minute, (attr, mine, theirs)


def test_immediate_restores_the_backups_content_only(source: Source) -> None:
    assert restored_rows("t-immediate", immediate=True) == [1]


def test_an_lsn_taken_after_the_first_insert_restores_up_to_it(source: Source) -> None:
    assert restored_rows("t-lsn", lsn=source.lsn_after_row_2) == [1, 2]


def test_a_restore_point_between_two_inserts(source: Source) -> None:
    assert restored_rows("t-point", name="between-2-and-3") == [1, 2]


def test_a_committed_transaction_id_inclusive_and_exclusive(source: Source) -> None:
    assert restored_rows("t-xid-in", xid=source.xid_row_3) == [1, 2, 3]
    assert restored_rows("t-xid-ex", xid=source.xid_row_3, inclusive=False) == [1, 2]


def test_a_commits_own_time_inclusive_and_exclusive(source: Source) -> None:
    at = source.commit_time_row_4
    assert restored_rows("t-time-in", time=at) == [1, 2, 3, 4]
    assert restored_rows("t-time-ex", time=at, inclusive=False) == [1, 2, 3]


def test_the_stop_is_checked_against_what_postgresql_recorded(source: Source) -> None:
    result = engine.restore("t-stopped", "tsrc", RestoreTarget(xid=source.xid_row_4))
    Cluster.get("t-stopped").stop()
    assert result.stopped == f"after transaction {source.xid_row_4}"
    assert result.backup == source.backup and result.timeline == 2


@pytest.mark.parametrize(
    ("target", "error", "message"),
    [
        ({"lsn": "lsn_before_backup"}, RecoveryTargetError, "before the consistency point"),
        ({"lsn": "FF/0"}, RecoveryTargetError, "past the end of the archived WAL"),
        ({"name": "no-such-point"}, NotFound, "has no restore point 'no-such-point'"),
        ({"xid": "xid_aborted"}, RecoveryTargetError, "aborted at LSN"),
        ({"xid": "future"}, RecoveryTargetError, "never committed in the archived WAL"),
    ],
)
def test_an_unreachable_target_is_refused_before_anything_is_created(
    source: Source, target: dict, error: type, message: str
) -> None:
    ((kind, value),) = target.items()
    if value == "future":
        value = source.xid_row_4 + 1000
    elif value in ("lsn_before_backup", "xid_aborted"):
        value = getattr(source, value)
    with pytest.raises(error) as info:
        engine.restore("t-refused", "tsrc", RestoreTarget.of(**{kind: value}))
    assert message in str(info.value)
    assert info.value.hint
    assert not (source.home / "clusters" / "t-refused").exists()


def test_restore_points_are_recorded_once_with_a_checked_name(source: Source) -> None:
    repo = cluster_repository.repository(Cluster.get("tsrc"))
    point = restore_points.get_point(repo, "tsrc", "between-2-and-3")
    assert point.timeline == 1 and point.cluster == "tsrc"
    assert Lsn.parse(source.lsn_after_row_2) < point.lsn_int
    assert "between-2-and-3" in [p.name for p in restore_points.list_points(repo, "tsrc")]
    with pytest.raises(AlreadyExists, match="already has a restore point 'between-2-and-3'"):
        engine.create_restore_point("tsrc", "between-2-and-3")
    with pytest.raises(InvalidInput, match="invalid restore point name 'a/b'"):
        engine.create_restore_point("tsrc", "a/b")
    assert not repo.exists("tsrc/restore_points/a/b.json")
    described = cli("cluster", "describe", "tsrc").stdout
    (line,) = [row for row in described.splitlines() if "between-2-and-3" in row]
    assert "Restore Points:" in described and str(point.lsn) in line
    assert line.rstrip().endswith("yes")


def test_two_points_of_one_name_at_once_record_one_and_refuse_the_other(source: Source) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def create(_: int) -> restore_points.RestorePoint | str:
        try:
            return engine.create_restore_point("tsrc", "at-once")
        except AlreadyExists as exc:
            return str(exc)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(create, range(4)))
    (made,) = [r for r in results if isinstance(r, restore_points.RestorePoint)]
    refused = [r for r in results if isinstance(r, str)]
    assert len(refused) == 3 and all("already has a restore point 'at-once'" in r for r in refused)
    recorded = restore_points.get_point(
        cluster_repository.repository(Cluster.get("tsrc")), "tsrc", "at-once"
    )
    assert recorded == made


def test_a_restore_point_not_archived_yet_is_refused(home: Path) -> None:
    archived_cluster("unarch")
    sql("unarch", "ALTER SYSTEM SET archive_timeout = 0")
    sql("unarch", "SELECT pg_reload_conf()")
    engine.create_restore_point("unarch", "too-soon")
    with pytest.raises(RecoveryTargetError, match="past the end of the archived WAL"):
        engine.restore("t-too-soon", "unarch", RestoreTarget(name="too-soon"))
    assert not (home / "clusters" / "t-too-soon").exists()


def test_waiting_for_promotion_fails_at_once_when_the_login_is_refused(source: Source) -> None:
    from pgpitr.errors import ClusterStateError
    from pgpitr.operations import restore as rs

    engine.restore("t-login", "tsrc", RestoreTarget(immediate=True))
    cluster = Cluster.get("t-login")
    cluster.state.superuser = "no-such-role"  # what a backup without pgpitr's superuser gives
    cluster.state.save()
    try:
        with pytest.raises(ClusterStateError, match="cannot log in") as info:
            rs.wait_promoted("t-login")  # the 6 h bound: only failing fast ends this test
        assert 'authentication failed for user "no-such-role"' in str(info.value)
        assert info.value.hint and not info.value.transient
    finally:
        cluster.stop()


def test_a_backup_carrying_its_own_wal_restores_to_latest_and_immediate(home: Path) -> None:
    cluster = operations_create.create(
        "selfwal"
    )  # log backup off: the backup's WAL goes into its tar
    sql("selfwal", "CREATE TABLE msg (id int); INSERT INTO msg VALUES (1)")
    assert engine.backup(cluster).wal_in_backup
    for name, target in (("t-self-latest", {}), ("t-self-immediate", {"immediate": True})):
        engine.restore(name, "selfwal", RestoreTarget.of(**target))
        assert rows(name) == [1]
        Cluster.get(name).stop()
    with pytest.raises(RecoveryTargetError, match="has all of its own WAL archived"):
        engine.restore("t-self-lsn", "selfwal", RestoreTarget(lsn="0/1"))


def test_the_last_commits_own_time_is_refused_inclusive(source: Source) -> None:
    repo = cluster_repository.repository(Cluster.get("tsrc"))
    (last,) = [r.end for r in catalog_window.recoverable_window(repo, "tsrc").ranges]
    with pytest.raises(RecoveryTargetError, match="is the time of the last archived commit"):
        engine.restore("t-at-end", "tsrc", RestoreTarget(time=last))
    assert not (source.home / "clusters" / "t-at-end").exists()


def test_a_bounded_xid_search_says_what_it_could_not_check(
    source: Source, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(records, "XID_SEARCH_DEPTH", 1)  # the newest segment only
    with pytest.raises(RecoveryTargetError) as info:
        engine.restore("t-bounded", "tsrc", RestoreTarget(xid=source.xid_row_4 + 1000))
    assert "was not found in the newest 1 archived WAL segments" in str(info.value)
    assert "could not be checked" in str(info.value)
    assert "--restore-to-time" in (info.value.hint or "")
    assert not (source.home / "clusters" / "t-bounded").exists()


def test_a_64_bit_transaction_id_is_checked_for_its_epoch(home: Path) -> None:
    """Past a wraparound, txid_current() carries an epoch (pg_resetwal -e gives the server
    one): the 64-bit id restores, the 32-bit one (a row's xmin) too, and the same 32 bits in
    another epoch are refused before anything is created."""
    cluster = operations_create.create("epoch1")
    cluster.stop()
    run([cluster.bindir / "pg_resetwal", "-e", "1", cluster.state.datadir], user=cluster.user)
    cluster.start()
    log_backup.set_log_backup(cluster, True)
    sql("epoch1", "CREATE TABLE msg (id int PRIMARY KEY); INSERT INTO msg VALUES (1)")
    backup = engine.backup(cluster)
    assert backup.next_xid is not None and backup.next_xid.startswith("1:")
    (xid,) = sql("epoch1", "INSERT INTO msg VALUES (2) RETURNING txid_current()")[0]
    sql("epoch1", "INSERT INTO msg VALUES (3)")
    archive_now("epoch1")
    assert xid // 2**32 == 1
    for name, given in (("t-ep-full", xid), ("t-ep-low", xid % 2**32)):
        result = engine.restore(name, "epoch1", RestoreTarget(xid=given))
        assert result.stopped == f"after transaction {xid % 2**32}"
        assert rows(name) == [1, 2]
        Cluster.get(name).stop()
    with pytest.raises(RecoveryTargetError, match=f"committed at .* is {xid}, of epoch 1"):
        engine.restore("t-ep-other", "epoch1", RestoreTarget(xid=xid + 2**32))
    assert not (home / "clusters" / "t-ep-other").exists()


def test_each_kind_of_target_takes_the_newest_backup_consistent_before_it(home: Path) -> None:
    from pgpitr import cluster_repository
    from pgpitr.catalog import reach
    from pgpitr.catalog import window as catalog_window
    from pgpitr.operations import create as operations_create
    from pgpitr.operations import log_backup

    cluster = operations_create.create("two")
    log_backup.set_log_backup(cluster, True)
    sql("two", "CREATE TABLE msg (id int PRIMARY KEY)")
    first = engine.backup(cluster)
    (xid_1,) = sql("two", "INSERT INTO msg VALUES (1) RETURNING txid_current()")[0]
    lsn_1 = sql("two", "SELECT pg_current_wal_lsn()::text")[0][0]
    engine.create_restore_point("two", "before-second")
    second = engine.backup(cluster)
    (xid_2,) = sql("two", "INSERT INTO msg VALUES (2) RETURNING txid_current()")[0]
    lsn_2 = sql("two", "SELECT pg_current_wal_lsn()::text")[0][0]
    engine.create_restore_point("two", "after-second")
    sql("two", "INSERT INTO msg VALUES (3)")  # a commit after the last target's
    archive_now("two")
    repo = cluster_repository.repository(cluster)
    window = catalog_window.recoverable_window(repo, "two", cluster.bindir)

    def chosen(**target: object) -> str:
        backup, _ = reach.backup_for(
            repo, "two", cluster.bindir, window, RestoreTarget.of(**target)
        )
        return backup.name

    # before the second backup's end: only the first reaches it; after: the second, the newer
    assert chosen(lsn=lsn_1) == first.name and chosen(lsn=lsn_2) == second.name
    assert chosen(xid=int(xid_1)) == first.name and chosen(xid=int(xid_2)) == second.name
    assert chosen(name="before-second") == first.name
    assert chosen(name="after-second") == second.name
    assert chosen(immediate=True) == second.name and chosen() == second.name  # latest


# -- a restore handed over to another manager's data directory (Patroni's custom bootstrap) ----


def _restore_into(new_name: str, into: Path, steps: Steps | None = None, **target: object):
    request = RestoreRequest(new_name, "tsrc", RestoreTarget.of(**target), into_datadir=str(into))
    return rs.run(steps or Steps(), request)


def test_a_handed_over_restore_starts_where_it_was_put_with_nothing_of_pgpitr(
    source: Source, tmp_path: Path
) -> None:
    into = tmp_path / "data"
    result = _restore_into("t-handed", into, xid=source.xid_row_3)
    assert result.into_datadir == str(into) and result.stopped.startswith("after transaction")
    assert "hand-over" in result.phases
    assert not (source.home / "clusters" / "t-handed").exists()
    repo = cluster_repository.repository(Cluster.get("tsrc"))
    assert list(repo.list("t-handed/")) == []  # its log backup was off: nothing archived
    assert not (into / "pgpitr.conf").exists() and not (into / "pgpitr-recovery.conf").exists()
    assert "pgpitr" not in (into / "postgresql.conf").read_text()
    # another manager starts it as it likes: here pg_ctl with its own port and socket
    bindir = Cluster.get("tsrc").bindir
    port = free_port({c.state.port for c in Cluster.all()})
    options = f"-p {port} -k {tmp_path} -c listen_addresses=''"
    run([bindir / "pg_ctl", "start", "-w", "-D", into, "-l", tmp_path / "log", "-o", options])
    try:
        conninfo = f"host={tmp_path} port={port} user=postgres dbname=postgres"
        with psycopg.connect(conninfo, autocommit=True) as db:
            assert not db.execute("SELECT pg_is_in_recovery()").fetchone()[0]
            assert [r[0] for r in db.execute("SELECT id FROM msg ORDER BY id")] == [1, 2, 3]
    finally:
        run([bindir / "pg_ctl", "stop", "-m", "immediate", "-D", into])


class _WriteIntoBeforeHandOver(Steps):
    """Someone writes into the destination between the plan and the hand-over."""

    def __init__(self, into: Path) -> None:
        super().__init__()
        self.into = into

    def __call__(self, step, *args, **kwargs):  # type: ignore[override]
        if step is handover.hand_over:
            (self.into / "PG_VERSION").write_text("16\n")
        return super().__call__(step, *args, **kwargs)


def test_a_hand_over_that_fails_leaves_neither_the_cluster_nor_the_data(
    source: Source, tmp_path: Path
) -> None:
    into = tmp_path / "data"
    into.mkdir()
    with pytest.raises(AlreadyExists, match="is not empty"):
        _restore_into("t-unhanded", into, _WriteIntoBeforeHandOver(into), immediate=True)
    assert not (source.home / "clusters" / "t-unhanded").exists()
    assert [p.name for p in into.iterdir()] == ["PG_VERSION"]  # only what the other one wrote
