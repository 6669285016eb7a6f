"""The agent's Prometheus metrics (pgpitr/metrics.py) on a real PostgreSQL 15 cluster: served over
HTTP by the server the agent starts, scraped with urllib, parsed with prometheus_client's own
parser, and compared with the truth (the backup's manifest, describe, pg_stat_archiver, a drill)."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgpitr import metrics, state
from pgpitr.errors import InvalidInput
from pgpitr.operations import create, drill, log_backup
from pgpitr.operations import describe as w
from pgpitr.steps import Steps
from tests import engine
from tests.pg import archive_now, sql
from tests.test_drill import source_with_heartbeats, target_between

Scraped = dict[str, dict[str | None, float]]


def scrape(url: str, host: str | None = None) -> Scraped:
    """Every sample by name, then by its cluster label (None for the host's own); each sample
    labelled with HOST (this host by default)."""
    with urllib.request.urlopen(url, timeout=10) as response:
        assert response.status == 200
        text = response.read().decode()
    found: Scraped = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels["host"] == (host or state.this_host()), sample
            found.setdefault(sample.name, {})[sample.labels.get("cluster")] = sample.value
    return found


def test_a_scrape_reports_the_window_backup_archiving_and_drill_as_they_are(home: Path) -> None:
    source, beats, _ = source_with_heartbeats("msrc")
    (manifest,) = _completed("msrc")
    passed = drill.run(Steps(), drill.DrillRequest("msrc", target_between(beats)))
    assert passed.result == "Passed", passed.error
    create.create("mbare")  # running, never backed up: no window to report, not a zero one

    server = metrics.serve(state.this_host(), 0, interval=3600)
    try:
        assert server.exporter.refreshed.wait(60), "the first refresh did not end"
        found = scrape(server.url)
        truth = w.describe(source)
    finally:
        server.stop()

    assert found["pgpitr_cluster_running"] == {"msrc": 1.0, "mbare": 1.0}
    assert found["pgpitr_log_backup_enabled"] == {"msrc": 1.0, "mbare": 0.0}
    start, end = truth.recoverable_time[0][0], truth.recoverable_time[-1][1]
    assert found["pgpitr_window_start_timestamp_seconds"] == {"msrc": start.timestamp()}
    assert found["pgpitr_window_end_timestamp_seconds"] == {"msrc": end.timestamp()}
    assert found["pgpitr_last_backup_timestamp_seconds"] == {"msrc": manifest.stop_time.timestamp()}
    assert found["pgpitr_last_backup_size_bytes"] == {"msrc": manifest.database_size}
    assert found["pgpitr_last_backup_stored_bytes"] == {"msrc": manifest.stored_size}
    lag = found["pgpitr_archive_lag_seconds"]["msrc"]
    assert set(found["pgpitr_archive_lag_seconds"]) == {"msrc"}  # mbare: log backup off
    assert 0 <= lag <= (datetime.now(UTC) - end).total_seconds() + 0.01 and lag < 60
    assert found["pgpitr_rpo_max_seconds"]["msrc"] == 300
    archived = sql("msrc", "SELECT archived_count FROM pg_stat_archiver")[0][0]
    assert 3 <= found["pgpitr_wal_archived_total"]["msrc"] <= archived
    assert found["pgpitr_wal_archive_failed_total"] == {"msrc": 0.0}
    assert found["pgpitr_last_drill_result"] == {"msrc": 1.0}
    assert found["pgpitr_last_drill_rto_seconds"] == {"msrc": passed.rto_seconds}
    assert found["pgpitr_last_drill_timestamp_seconds"]["msrc"] == pytest.approx(
        datetime.fromisoformat(passed.started).timestamp()
    )
    predicted = truth.recovery.predicted_rto_latest_seconds
    assert predicted and found["pgpitr_predicted_rto_seconds"] == {"msrc": predicted}
    assert found["pgpitr_metrics_refresh_error"] == {"msrc": 0.0, "mbare": 0.0}
    assert "pgpitr_runs_late" not in found  # no Prefect API was given to count them

    with pytest.raises(urllib.error.URLError):  # stopped: the port is closed
        urllib.request.urlopen(server.url, timeout=2)


def _completed(name: str) -> list:
    from pgpitr import cluster_repository
    from pgpitr.catalog import backups
    from pgpitr.postgres.cluster import Cluster

    c = Cluster.get(name)
    return [b for b in backups.list_backups(cluster_repository.repository(c), name) if b.completed]


def test_a_refresh_follows_new_wal_and_keeps_a_failing_clusters_last_values(home: Path) -> None:
    cluster = create.create("mlive")
    log_backup.set_log_backup(cluster, True)
    engine.backup(cluster)
    sql("mlive", "CREATE TABLE t (i int)")
    archive_now("mlive")
    exporter = metrics.Exporter(state.this_host())
    exporter.refresh()
    (first,) = exporter.snapshots()
    assert first.window_end is not None and first.archived

    time.sleep(1.1)
    sql("mlive", "INSERT INTO t VALUES (1)")
    archive_now("mlive")
    exporter.refresh()
    (second,) = exporter.snapshots()
    assert second.window_end is not None and second.window_end > first.window_end
    assert second.archived is not None and second.archived > first.archived

    # the repository cannot be read: the cluster keeps its last values, flagged, the lag grows
    repository = Path(str(cluster.state.repository).removeprefix("file://"))
    mode = repository.stat().st_mode & 0o777
    repository.chmod(0)
    try:
        exporter.refresh()
    finally:
        repository.chmod(mode)
    (third,) = exporter.snapshots()
    assert third.failed and third.window_end == second.window_end
    assert third.refreshed == second.refreshed
    assert third.archive_lag(time.time() + 10) == pytest.approx(
        time.time() + 10 - second.window_end, abs=0.5
    )


# -- without a server ----------------------------------------------------------------------------


def test_the_port_setting_defaults_turns_off_and_refuses_what_is_not_a_port() -> None:
    assert metrics.port_setting(None) == metrics.port_setting("") == metrics.DEFAULT_PORT
    assert metrics.port_setting(" 9999 ") == 9999
    for off in ("0", "off", "OFF", "false"):
        assert metrics.port_setting(off) is None
    for bad in ("70000", "-1", "http", "12.5"):
        with pytest.raises(InvalidInput, match=metrics.PORT_ENV):
            metrics.port_setting(bad)
    assert metrics.refresh_setting("15") == 15.0
    assert metrics.refresh_setting("soon") == metrics.refresh_setting(None) == 60.0


def test_metric_names_follow_prometheus_conventions_and_unknown_values_are_absent() -> None:
    snapshots = [
        metrics.Snapshot("a", "h", 100.0, log_backup=True, window_end=40.0, drill_result="Failed"),
        metrics.Snapshot("b", "h", 100.0, drill_result="Unchecked", archived=5),
    ]
    families = list(metrics.metric_families(snapshots, "h", metrics.HostRuns(2, 1), now=100.0))
    values = {(s.name, s.labels.get("cluster")): s.value for f in families for s in f.samples}
    assert values[("pgpitr_last_drill_result", "a")] == 0.0
    assert values[("pgpitr_last_drill_result", "b")] == -1.0
    assert values[("pgpitr_archive_lag_seconds", "a")] == 60.0
    assert ("pgpitr_archive_lag_seconds", "b") not in values  # log backup off
    assert ("pgpitr_window_end_timestamp_seconds", "b") not in values
    assert values[("pgpitr_wal_archived_total", "b")] == 5.0
    assert values[("pgpitr_runs_late", None)] == 2.0
    assert values[("pgpitr_runs_running", None)] == 1.0
    for family in families:
        assert family.name.startswith("pgpitr_") and family.documentation
        assert not family.name.endswith("_total")  # the suffix comes with the type
        if family.type == "counter":
            assert all(s.name.endswith("_total") for s in family.samples)
        unit = ("_seconds", "_bytes", "_timestamp_seconds")
        if "time" in family.name or "lag" in family.name or "rto" in family.name:
            assert family.name.endswith(unit), family.name
