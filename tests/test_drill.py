"""Drills on real PostgreSQL 15 servers (pgpitr/operations/drill/ through the plain ``Steps``,
and once
through the CLI): a healthy archive passes, a flipped byte in a WAL segment inside the window
fails and is named, and no scratch cluster outlives a pass, a failure or a kill -9."""

from __future__ import annotations

import json
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pgpitr import cluster_repository, heartbeat, metrics, rto, scratch
from pgpitr.errors import NotFound, RecoveryTargetError
from pgpitr.operations import create, drill, log_backup
from pgpitr.operations import describe as w
from pgpitr.operations.drill import checks as drill_checks
from pgpitr.operations.drill import plan as drill_plan
from pgpitr.operations.drill import records as drill_records
from pgpitr.operations.drill import scratch_cluster
from pgpitr.operations.restore import data as restore_data
from pgpitr.postgres.cluster import Cluster
from pgpitr.steps import Steps
from pgpitr.wal import archive
from tests import engine
from tests.conftest import cli
from tests.faults.helpers import archived_cluster, in_child, pgbench
from tests.pg import archive_now, sql


def source_with_heartbeats(name: str) -> tuple[Cluster, list[heartbeat.Beat], list[str]]:
    """A backed-up cluster with three heartbeats after the backup, each in its own archived
    segment, more than SLACK apart."""
    cluster = archived_cluster(name)
    beats, segments = [], []
    for _ in range(3):
        beats.append(heartbeat.beat(cluster))
        segments.append(archive_now(name))
        time.sleep(1.2)
    return cluster, beats, segments


def target_between(beats: list[heartbeat.Beat]) -> datetime:
    """A target after the second heartbeat (beyond SLACK) and before the third."""
    target = beats[1].beat_at + drill_checks.SLACK + timedelta(milliseconds=100)
    assert beats[1].beat_at <= target - drill_checks.SLACK < target < beats[2].beat_at
    return target


def _scratch_gone(name: str, source: Cluster) -> None:
    with pytest.raises(NotFound):
        Cluster.get(name)
    assert not scratch.is_scratch(name)
    assert list(cluster_repository.repository(source).list(f"{name}/")) == []


def flip_a_byte(source: Cluster, segment: str) -> str:
    ((key, _sha),) = archive.stored_versions(
        cluster_repository.repository(source), source.name, segment
    )
    path = Path(str(source.state.repository).removeprefix("file://")) / key
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    return key


def test_a_drill_passes_on_a_healthy_archive_and_predicts_the_next(home: Path) -> None:
    source, beats, _ = source_with_heartbeats("dsrc")
    target = target_between(beats)

    first = drill.run(Steps(), drill.DrillRequest("dsrc", target))
    assert first.passed, first.error
    assert first.heartbeat["status"] == "passed"
    assert first.heartbeat["expected"] == beats[1].beat_at.isoformat()
    assert first.heartbeat["after_target"] == 0
    assert first.amcheck["status"] == "passed" and "postgres" in first.amcheck["databases"]
    assert set(first.phases) >= {"plan", "materialise", "replay", "promote", "amcheck"}
    assert first.rto_seconds == pytest.approx(
        sum(first.phases[p] for p in ("plan", "materialise", "replay", "promote")), abs=0.01
    )
    assert first.predicted_rto_seconds is None  # no drill before it: nothing to predict from
    assert first.replayed_bytes and first.materialised_bytes
    assert first.scratch_removed
    _scratch_gone(first.scratch, source)

    second = drill.run(Steps(), drill.DrillRequest("dsrc"))  # a random target
    assert second.passed, second.error
    assert second.predicted_rto_seconds is not None
    assert second.prediction_error_percent is not None
    print(
        f"\nRTO measured {second.rto_seconds:.2f} s, predicted "
        f"{second.predicted_rto_seconds:.2f} s, error {second.prediction_error_percent:+.1f} %"
    )
    _scratch_gone(second.scratch, source)

    listed = drill.list_drills(source)
    assert [d.id for d in listed] == [second.id, first.id]
    assert listed[1] == first

    info = w.describe(source).as_json()
    # its random target may come before the first heartbeat: then nothing could be checked
    shown = "Passed" if second.checked else "Unchecked"
    assert info["last_drill"]["id"] == second.id and info["last_drill"]["result"] == shown
    assert info["predicted_rto_latest_seconds"] > 0
    assert info["predicted_rto_note"] == f"from {1 + second.checked} passed drill(s)"
    assert info["archive_lag_seconds"] is not None and info["rpo_max_seconds"] == 300


def test_a_drill_with_no_heartbeat_before_its_target_is_unchecked_and_proves_nothing(
    home: Path,
) -> None:
    cluster = archived_cluster("usrc")
    time.sleep(1.2)
    target = datetime.now(UTC)  # inside the window: after the backup, before the beat below
    time.sleep(1.2)
    heartbeat.beat(cluster)  # the first heartbeat, after the target: a commit to reach it by
    archive_now("usrc")

    result = drill.run(Steps(), drill.DrillRequest("usrc", target))
    assert result.heartbeat["status"] == "unchecked", result.heartbeat
    assert result.amcheck["status"] == "passed" and result.error is None
    assert result.result == "Unchecked" and not result.checked
    assert ": Unchecked, RTO " in result.summary() and "Passed" not in result.summary()
    (recorded,) = drill.list_drills(cluster)
    assert recorded == result
    # a record stored before drills said whether they were checked: its oracle's status decides
    old = {k: v for k, v in result.as_dict().items() if k != "checked"}
    assert drill.DrillResult.from_dict(old).result == "Unchecked"
    assert drill.DrillResult.from_dict({**old, "heartbeat": {"status": "passed"}}).checked

    # no proof: describe says Unchecked and predicts no RTO from it, the metrics say -1
    info = w.describe(cluster).as_json()
    assert info["last_drill"]["result"] == "Unchecked"
    assert info["predicted_rto_latest_seconds"] is None
    assert info["predicted_rto_note"] == "no passed drill yet"
    repo = cluster_repository.repository(cluster)
    assert drill_records.history(repo, cluster.state.stanza) == []
    snapshot = metrics.read_cluster(cluster)
    values = {
        s.name: s.value
        for family in metrics.metric_families([snapshot], "h", None, now=0.0)
        for s in family.samples
    }
    assert values["pgpitr_last_drill_result"] == -1.0
    assert "pgpitr_predicted_rto_seconds" not in values

    table = cli("cluster", "list-drill", "usrc").stdout
    assert "Unchecked" in table and "Passed" not in table
    shown = cli("cluster", "describe", "usrc").stdout
    assert "LAST DRILL UNCHECKED" in shown and "Passed" not in shown


def test_a_target_outside_the_window_is_refused_before_anything_is_made(home: Path) -> None:
    source, beats, _ = source_with_heartbeats("osrc")
    with pytest.raises(RecoveryTargetError, match="outside the recoverable window"):
        drill.run(Steps(), drill.DrillRequest("osrc", beats[0].beat_at - timedelta(days=1)))
    assert [c.name for c in Cluster.all()] == ["osrc"]
    assert drill.list_drills(source) == []
    assert w.describe(source).as_json()["predicted_rto_note"] == "no drill yet"


def test_a_flipped_byte_inside_the_window_fails_the_drill_and_names_the_object(
    home: Path,
) -> None:
    source, beats, segments = source_with_heartbeats("fsrc")
    target = target_between(beats)
    key = flip_a_byte(source, segments[0])  # holds the first heartbeat: replayed before target

    result = drill.run(Steps(), drill.DrillRequest("fsrc", target))
    assert not result.passed
    assert result.error is not None and key in result.error
    assert result.error.startswith("the restore failed")
    assert result.scratch_removed
    _scratch_gone(result.scratch, source)
    (recorded,) = drill.list_drills(source)
    assert recorded.id == result.id and recorded.result == "Failed" and key in recorded.error
    info = w.describe(source).as_json()
    assert info["last_drill"]["result"] == "Failed"
    assert info["predicted_rto_note"] == "no passed drill yet"


def test_a_heartbeat_restored_past_the_target_fails_the_drill(home: Path) -> None:
    cluster = archived_cluster("osrc")
    heartbeat.beat(cluster)  # the table
    # a row dated a day ahead, committed before the target: the restored cluster holds a
    # heartbeat "after" its target, as one whose recovery overshot would
    sql(
        "osrc",
        "INSERT INTO pgpitr.heartbeat (beat_at, lsn, host) "
        "VALUES (now() + interval '1 day', pg_current_wal_lsn(), 'skewed')",
    )
    beats = []
    for _ in range(3):
        beats.append(heartbeat.beat(cluster))
        archive_now("osrc")
        time.sleep(1.2)

    result = drill.run(Steps(), drill.DrillRequest("osrc", target_between(beats)))
    assert not result.passed
    assert result.heartbeat["status"] == "failed"
    assert "after the target restored" in result.heartbeat["detail"], result.heartbeat
    assert "recovery went past the target" in (result.error or "")
    _scratch_gone(result.scratch, cluster)


def test_the_scratch_cluster_of_a_killed_drill_goes_with_the_next_drill(home: Path) -> None:
    source, beats, _ = source_with_heartbeats("ksrc")
    pgbench(source, "-i", "-s", "5")  # WAL to replay: the drill is killed during replay
    archive_now("ksrc")
    process = in_child(
        "from pgpitr.operations import drill; from pgpitr.steps import Steps; "
        "drill.run(Steps(), drill.DrillRequest('ksrc'))"
    )
    deadline = time.monotonic() + 300
    while not list(home.glob("clusters/ksrc-drill-*/data/postmaster.pid")):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    (left,) = [c for c in Cluster.all() if c.name.startswith("ksrc-drill-")]
    assert scratch.is_scratch(left.name) and not heartbeat.wanted(left)
    assert restore_data.interrupted(left)

    following = drill.run(Steps(), drill.DrillRequest("ksrc", target_between(beats)))
    assert following.passed, following.error
    _scratch_gone(left.name, source)
    _scratch_gone(following.scratch, source)
    assert [c.name for c in Cluster.all()] == ["ksrc"]


def test_drill_and_list_drill_on_the_command_line(home: Path) -> None:
    source, beats, segments = source_with_heartbeats("csrc")
    target = target_between(beats).isoformat()
    passed = cli("cluster", "drill", "csrc", "--at", target, timeout=600)
    assert ": Passed, RTO " in passed.stderr + passed.stdout

    flip_a_byte(source, segments[0])
    failed = cli("cluster", "drill", "csrc", "--at", target, check=False, timeout=600)
    assert failed.returncode == drill.DrillFailed.exit_code, failed.stderr
    assert "Failed" in failed.stderr and "damaged WAL object" in failed.stderr

    listed = json.loads(cli("cluster", "list-drill", "csrc", "-o", "json").stdout)
    assert [d["passed"] for d in listed] == [False, True]
    table = cli("cluster", "list-drill", "csrc").stdout
    assert "Failed" in table and "Passed" in table
    shown = cli("cluster", "describe", "csrc").stdout
    assert "LAST-DRILL" in shown and "LAST DRILL FAILED" in shown and "ARCHIVE-LAG" in shown
    assert [c.name for c in Cluster.all()] == ["csrc"]
    bad = cli("cluster", "drill", "csrc", "--at", "latest", check=False)
    assert bad.returncode != 0 and "not to latest" in bad.stderr


# -- the parts that need no server -------------------------------------------------------------


def test_a_random_target_lies_inside_one_of_the_periods() -> None:
    base = datetime(2026, 12, 1, tzinfo=UTC)
    periods = [
        (base + timedelta(seconds=0.3), base + timedelta(seconds=0.7)),  # no whole second in it
        (base + timedelta(hours=1), base + timedelta(hours=1, seconds=1)),
    ]
    drawn = [drill_plan.random_time(periods) for _ in range(500)]
    assert all(any(a <= t <= b for a, b in periods) for t in drawn)
    # both periods are drawn from (each is 29 % or 71 % of the total: 500 draws always reach
    # both); the second one on its whole second
    assert {t for t in drawn if t >= periods[1][0]} == {periods[1][0]}
    assert any(t < periods[1][0] for t in drawn)


def test_the_rto_model_is_volume_weighted_and_silent_without_drills() -> None:
    def done(size: int, wal_bytes: int, **phases: float) -> drill.DrillResult:
        return drill.DrillResult(
            "id",
            "c",
            "c-drill-000000",
            "",
            "",
            passed=True,
            phases=phases,
            rto_seconds=1.0,
            materialised_bytes=size,
            replayed_bytes=wal_bytes,
        )

    assert rto.predict([], 10, 10) is None
    history = [
        done(100, 1000, plan=1.0, materialise=1.0, replay=1.0, promote=1.0),
        done(300, 3000, plan=3.0, materialise=3.0, replay=1.0, promote=1.0),
    ]
    # 400 B over 4 s, 4000 B over 2 s, (1 + 1 + 3 + 1) / 2 fixed seconds
    assert rto.predict(history, 200, 4000) == pytest.approx(3.0 + 2.0 + 2.0)


def test_a_scratch_name_is_a_valid_cluster_name_however_long_the_source() -> None:
    from pgpitr.postgres.cluster import validate_name

    for source in ("a", "my-pg", "x" * 48):
        name = drill_plan.scratch_name(source)
        validate_name(name)
        assert scratch_cluster._SCRATCH.search(name) and name.startswith(source[:34])


def test_a_check_that_cannot_run_fails_the_drill_and_is_recorded(home: Path) -> None:
    # binaries without pg_amcheck, as a partial install has them (symlinks to the real ones)
    bindir = home / "bin-without-amcheck"
    bindir.mkdir()
    for program in Path("/usr/lib/postgresql/15/bin").iterdir():
        if program.name != "pg_amcheck":
            (bindir / program.name).symlink_to(program)
    cluster = create.create("nsrc", bindir=bindir)
    log_backup.set_log_backup(cluster, True)
    engine.backup(cluster)
    heartbeat.beat(cluster)
    archive_now("nsrc")

    result = drill.run(Steps(), drill.DrillRequest("nsrc"))
    assert not result.passed
    assert result.error is not None and "could not be checked" in result.error
    assert "pg_amcheck" in result.error and result.backup
    assert result.scratch_removed
    _scratch_gone(result.scratch, cluster)
    assert [d.id for d in drill.list_drills(cluster)] == [result.id]
