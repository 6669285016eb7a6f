"""The drill flow and the RPO event: a report artifact and an event per drill, a failed run for a
failed drill, an event when the archive lag exceeds rpo.max."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime

import pytest

from pgpitr import heartbeat, policy_store
from pgpitr.operations import create, log_backup
from pgpitr.operations.drill import DrillFailed
from tests import engine
from tests.faults.helpers import archived_cluster
from tests.flows import api
from tests.flows.conftest import HOST
from tests.pg import archive_now, sql
from tests.test_drill import flip_a_byte, source_with_heartbeats, target_between


def test_a_drill_run_leaves_a_report_and_an_event_and_a_failed_one_fails(flows_home, api_url):
    from flows.drill import drill

    source, beats, segments = source_with_heartbeats("fdrill")
    target = target_between(beats).isoformat()
    result = drill("fdrill", target)
    assert result.passed, result.error
    resource = f"pgpitr.cluster.{HOST}.fdrill"
    (event, *_) = api.events("pgpitr.drill.passed", resource=resource)
    assert event["payload"]["id"] == result.id and event["payload"]["heartbeat"] == "passed"
    reports = [a.data for a in api.artifacts(f"drill-{HOST}-fdrill")]
    assert any("**Passed**" in r and "| RTO measured |" in r for r in reports)

    key = flip_a_byte(source, segments[0])
    with pytest.raises(DrillFailed, match="damaged WAL object") as failure:
        drill("fdrill", target)
    assert key in failure.value.message
    (event, *_) = api.events("pgpitr.drill.failed", resource=resource)
    assert key in event["payload"]["error"]
    reports = [a.data for a in api.artifacts(f"drill-{HOST}-fdrill")]
    assert any("**Failed**" in r and key in r for r in reports)


def test_an_unchecked_drill_run_completes_reported_as_unchecked_with_its_own_event(
    flows_home, api_url
):
    from flows.drill import drill

    source = archived_cluster("udrill")
    time.sleep(1.2)
    target = datetime.now(UTC)  # no heartbeat at or before it: the first comes after
    time.sleep(1.2)
    heartbeat.beat(source)
    archive_now("udrill")
    result = drill("udrill", target.isoformat())  # completes: no DrillFailed
    assert result.result == "Unchecked", result.error
    resource = f"pgpitr.cluster.{HOST}.udrill"
    (event, *_) = api.events("pgpitr.drill.unchecked", resource=resource)
    assert event["payload"]["id"] == result.id and event["payload"]["heartbeat"] == "unchecked"
    assert api.events("pgpitr.drill.passed", resource=resource, timeout=0) == []
    (report,) = [a.data for a in api.artifacts(f"drill-{HOST}-udrill")]
    assert "**Unchecked**" in report and "nothing proves the restore stopped" in report


def test_an_archive_lag_over_rpo_max_raises_an_event(flows_home, api_url):
    from flows.window import refresh_recoverable_window

    lagging = create.create("lagging")
    log_backup.set_log_backup(lagging, True)
    engine.backup(lagging)
    sql("lagging", "CREATE TABLE t (i int)")
    archive_now("lagging")
    policy = policy_store.load_policy(lagging)
    policy_store.save_policy(lagging, dataclasses.replace(policy, rpo_max="1s"))
    time.sleep(1.5)  # the newest archived commit is now older than rpo.max
    result = refresh_recoverable_window("lagging")
    assert result["rpo_exceeded"] and result["archive_lag_seconds"] > 1
    resource = f"pgpitr.cluster.{HOST}.lagging"
    (event, *_) = api.events("pgpitr.rpo.exceeded", resource=resource)
    assert event["payload"]["rpo_max_seconds"] == 1
    reports = [a.data for a in api.artifacts(f"recoverable-window-{HOST}-lagging")]
    assert any("**more than** rpo.max" in r for r in reports)


def test_retained_wal_over_the_limit_reaches_the_api_as_an_event(flows_home, api_url):
    from deployments import agent

    # what the agent's supervisor calls when a slot holds back more than stream.maxRetained
    agent._retained_event("retaining", 3 * 2**30, 2**30)
    resource = f"pgpitr.cluster.{HOST}.retaining"
    (event, *_) = api.events("pgpitr.stream.retained", resource=resource)
    assert event["payload"]["retained_bytes"] == 3 * 2**30
    assert event["payload"]["max_retained_bytes"] == 2**30
