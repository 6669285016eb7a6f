"""``describe``'s typed result and its JSON, without a server: ``as_json`` gives the keys, their
order and the values' forms that ``pgpitr cluster describe -o json`` has always printed, and the
table view renders from the typed parts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgpitr.catalog.window import Range
from pgpitr.operations.describe import (
    Description,
    LastDrill,
    Lineage,
    Receiver,
    Recovery,
    RestorePointRow,
    Streaming,
)
from pgpitr.protection import Protection

T0 = datetime(2026, 3, 1, 10, 0, 0, tzinfo=UTC)
T1 = datetime(2026, 3, 1, 11, 30, 5, 250000, tzinfo=UTC)


def description(**changes) -> Description:
    fields = dict(
        name="my-pg",
        platform="local",
        running=True,
        protection=Protection("my-pg", False, "archiving fails", T0, "see the server log"),
        port=5433,
        socket_dir=Path("/home/run"),
        datadir=Path("/home/data"),
        system_identifier="7300000000000000001",
        pg_version=17,
        bindir=Path("/usr/lib/postgresql/17/bin"),
        repository="file:///repo",
        policy="my-pg-postgresql-backup-policy",
        auto_backup=True,
        backup_schedule="0 18 * * 0",
        incremental=True,
        log_backup=True,
        streaming=Streaming(
            "stream",
            Receiver(True, True, 42, 0, None, "pgpitr_walstream", True, True, 2**20, "1GB", "sync"),
            ("a warning",),
        ),
        backup_ttl="7d",
        last_schedule=T0,
        backups=2,
        recoverable_time=((T0, T1),),
        ranges=(Range("b1", T0, T1, "000000010000000000000003"),),
        wal_checked_at=None,
        restore_points=(RestorePointRow("before", T1, "0/3000028", 1, "my-pg", True),),
        lineages=(
            Lineage("b2", ("b1 (full, Completed)", "b2 (incremental, Completed)"), True, None),
        ),
        recovery=Recovery(
            LastDrill("d1", T0, T1, "Failed", None, 12.5, None, "the restore failed"),
            None,
            "no passed drill yet",
            30.0,
            300.0,
        ),
    )
    fields.update(changes)
    return Description(**fields)


def test_as_json_has_the_keys_in_their_order_and_their_values_forms() -> None:
    shown = json.loads(json.dumps(description().as_json(), default=str))
    assert list(shown) == [
        "name", "platform", "status", "protected", "unprotected_since", "unprotected_reason",
        "protection_warning", "port", "socket_dir", "datadir", "system_identifier", "pg_version",
        "bindir", "repository", "policy", "auto_backup", "backup_schedule", "type", "log_backup",
        "log_method", "stream", "stream_warnings", "backup_ttl", "last_schedule", "backups",
        "recoverable_time", "ranges", "wal_checked_at", "restore_points", "lineages",
        "last_drill", "predicted_rto_latest_seconds", "predicted_rto_note",
        "archive_lag_seconds", "rpo_max_seconds", "rpo_exceeded",
    ]  # fmt: skip
    assert shown["status"] == "Running" and shown["type"] == "Full + Incremental + WAL"
    assert shown["unprotected_since"] == T0.isoformat() and not shown["protected"]
    assert shown["socket_dir"] == "/home/run" and shown["last_schedule"] == T0.isoformat()
    assert shown["recoverable_time"] == [[T0.isoformat(), T1.isoformat()]]
    # a range's times as str() gives them, as the JSON always had them
    assert shown["ranges"] == [
        {
            "backup": "b1",
            "start": str(T0),
            "end": str(T1),
            "end_segment": "000000010000000000000003",
        }
    ]
    assert shown["wal_checked_at"] is None
    assert shown["stream"]["receiver_pid"] == 42 and shown["stream_warnings"] == ["a warning"]
    assert shown["restore_points"] == [
        {
            "name": "before",
            "time": T1.isoformat(),
            "lsn": "0/3000028",
            "timeline": 1,
            "cluster": "my-pg",
            "restorable": True,
        }
    ]
    assert shown["lineages"] == [
        {
            "end": "b2",
            "links": ["b1 (full, Completed)", "b2 (incremental, Completed)"],
            "restorable": True,
            "reason": None,
        }
    ]
    assert shown["last_drill"] == {
        "id": "d1",
        "time": T0.isoformat(),
        "target": T1.isoformat(),
        "result": "Failed",
        "rto_seconds": None,
        "predicted_rto_seconds": 12.5,
        "prediction_error_percent": None,
        "error": "the restore failed",
    }
    assert shown["rpo_exceeded"] is False


def test_no_log_backup_no_stream_no_drill() -> None:
    plain = description(
        log_backup=False,
        incremental=False,
        streaming=Streaming("archive", None),
        recovery=Recovery(None, None, "no drill yet", None, 300.0),
    ).as_json()
    assert plain["type"] == "Full" and plain["stream"] is None and plain["stream_warnings"] == []
    assert plain["last_drill"] is None and plain["rpo_exceeded"] is False


@pytest.mark.parametrize(("lag", "exceeded"), [(299.9, False), (300.1, True), (None, False)])
def test_the_rpo_is_exceeded_past_its_max(lag: float | None, exceeded: bool) -> None:
    assert Recovery(None, None, "", lag, 300.0).rpo_exceeded is exceeded


def test_the_table_renders_from_the_typed_parts(capsys: pytest.CaptureFixture[str]) -> None:
    from cli import views

    schedule = {
        "auto_backup": False,
        "backup_schedule": "0 3 * * *",
        "host": "db1",
        "agent": "serving",
        "next_run": None,
        "last_run": None,
        "last_run_state": None,
        "late_runs": 0,
    }
    views.described(description(), schedule, "table")
    out = capsys.readouterr().out
    assert "Name: my-pg" in out and "Status: Running" in out
    assert "NOT PROTECTED" in out and "Disabled" in out and "0 3 * * *" in out
    assert "WAL checked: never" in out and "b1 (full, Completed) <- b2" in out
    assert "LAST DRILL FAILED: the restore failed" in out
    assert "running (pid 42)" in out and "WARNING: a warning" in out
    views.described(description(), schedule, "json")
    shown = json.loads(capsys.readouterr().out)
    assert shown["auto_backup"] is False and shown["backup_schedule"] == "0 3 * * *"
    assert shown["host"] == "db1" and list(shown)[:3] == ["name", "platform", "status"]
