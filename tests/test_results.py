"""tasks/results.py: what pgpitr's flows keep in Prefect's result storage is JSON that reads back
as the same values and errors, and a stored name outside pgpitr's packages is never imported."""

from __future__ import annotations

import json
import pickle
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from flows import registry
from pgpitr import errors
from pgpitr.catalog.restore_points import RestorePoint
from pgpitr.kubernetes.errors import ApiUnreachable
from pgpitr.manifest import BackupManifest
from pgpitr.operations.backup import BackupType
from pgpitr.operations.drill import DrillResult
from pgpitr.operations.restore import RestoreResult
from pgpitr.targets import RestoreTarget
from tasks.results import SERIALIZER, TYPE, PitrJSON, RefusedType, decode_record

NOW = datetime(2026, 12, 6, 16, 40, 1, 123456, tzinfo=UTC)

MANIFEST = BackupManifest(
    name="backup-default-src-20261206164001",
    cluster="src",
    status="Completed",
    start_time=NOW,
    system_identifier="7350000000000000001",
    pg_version=15,
    type="Incremental",
    parent="backup-default-src-20261205000000",
    start_lsn="0/3000028",
    stop_lsn="0/3000100",
    timeline=1,
    stored_size=1234,
    stop_time=NOW + timedelta(seconds=3),
    duration_seconds=3.25,
    extra={"future_key": [1, {"nested": None}]},
)
RESULTS = {
    "backup manifest": MANIFEST,
    "restore result": RestoreResult(
        cluster="restored",
        backup=MANIFEST.name,
        target=RestoreTarget(xid=745, inclusive=False),
        last_commit=NOW,
        timeline=2,
        stopped="before transaction 745",
        phases={"plan": 0.1, "replay": 2.5},
    ),
    "restore result to latest": RestoreResult("r", "b", RestoreTarget(), None, 1),
    "drill result": DrillResult(
        id="20261206T164001Z-ab12cd",
        cluster="src",
        scratch="drill-src-ab12cd",
        target=NOW.isoformat(),
        started=NOW.isoformat(),
        passed=True,
        phases={"materialise": 1.5},
        rto_seconds=4.0,
        heartbeat={"status": "ok", "detail": "12 rows"},
    ),
    "restore point": RestorePoint("after-1", NOW, "0/3000158", 1, "src"),
    "recoverable window": {
        "cluster": "src",
        "window": [(NOW.isoformat(), NOW.isoformat())],
        "archiver": None,
        "rpo_exceeded": False,
        "archive_lag_seconds": 1.5,
    },
    "retention": {"removed": ["b1"], "wal_files": 3, "kept": {"b2": "the window needs it"}},
    "policy edit": {"policy": {"retention": {"ttl": "7d"}}, "schedules": ["backup-src"]},
    "log backup switch": "000000010000000000000003",
    "nothing": None,
    "backup type": BackupType.INCREMENTAL,
    "odd keys": {1: "one", (2, 3): {4}, "__pgpitr__": "a key like the tag"},
    "paths and sets": [Path("/var/lib/x"), frozenset({"a"})],
}


@pytest.mark.parametrize("value", RESULTS.values(), ids=RESULTS.keys())
def test_each_kind_of_flow_result_reads_back_as_the_same_value_from_plain_json(value) -> None:
    blob = SERIALIZER.dumps(value)
    json.loads(blob)  # data, not a pickle
    back = SERIALIZER.loads(blob)
    assert back == value and type(back) is type(value)


def test_a_restore_results_target_comes_back_as_its_model() -> None:
    result = SERIALIZER.loads(SERIALIZER.dumps(RESULTS["restore result"]))
    assert type(result.target) is RestoreTarget and result.target.xid == 745
    assert result.last_commit == NOW and result.last_commit.tzinfo is not None


ERRORS = [
    errors.RecoveryTargetError("Jan 01,2001 is outside the window", hint="pick a time"),
    errors.RepositoryError("answered 503", hint="wait", transient=True),
    errors.CommandError(["/usr/bin/pg_basebackup", "-D", "-"], 1, "line1\nline2", hint="h"),
    errors.DeleteIncomplete("2 keys refused", failed=["a", "b"], deleted=3, hint="retry"),
    errors.TamperedObject("swapped"),
    errors.DrillFailed("the drill failed", hint="see its report"),
    errors.PitrError("plain", hint="do this"),
    ApiUnreachable("no API server answered", hint="check the kubeconfig"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_an_engine_error_reads_back_with_its_type_message_hint_exit_code_and_transient(
    error,
) -> None:
    blob = SERIALIZER.dumps(error)
    json.loads(blob)
    back = SERIALIZER.loads(blob)
    assert type(back) is type(error)
    assert (back.message, back.hint, back.exit_code, back.transient) == (
        error.message,
        error.hint,
        error.exit_code,
        error.transient,
    )
    assert str(back) == str(error)
    assert {k: v for k, v in vars(back).items()} == vars(error)


def test_an_error_that_is_not_the_engines_reads_back_as_a_plain_pitr_error_naming_it() -> None:
    back = SERIALIZER.loads(SERIALIZER.dumps(ValueError("two kinds were given together")))
    assert type(back) is errors.PitrError
    assert back.message == "ValueError: two kinds were given together"
    assert back.raised_as == "builtins.ValueError" and back.exit_code == 1


def test_an_error_class_defined_outside_pgpitr_is_kept_as_a_plain_pitr_error() -> None:
    class Outsider(errors.NotFound):
        pass

    back = SERIALIZER.loads(SERIALIZER.dumps(Outsider("gone", hint="look elsewhere")))
    assert type(back) is errors.PitrError and back.message == "Outsider: gone"
    assert back.hint == "look elsewhere" and back.raised_as.endswith("Outsider")


def _payload(tag: str, name: str) -> bytes:
    fields = {"fields": {}, "data": {}, "value": 1, "message": "m", "hint": None}
    return json.dumps({"__pgpitr__": tag, "type": name, **fields}).encode()


@pytest.mark.parametrize("tag", ["dataclass", "model", "enum"])
@pytest.mark.parametrize(
    "name",
    [
        "antigravity.Thing",
        "pgpitr_evil.Thing",
        "subprocess.Popen",
        "builtins.eval",
        "pgpitr..Thing",
        "pgpitr.x.<locals>.Thing",
    ],
)
def test_a_stored_type_outside_pgpitrs_packages_is_refused_and_never_imported(tag, name):
    was_imported = {m for m in sys.modules if m.startswith(("antigravity", "pgpitr_evil"))}
    with pytest.raises(RefusedType, match="not pgpitr's own"):
        SERIALIZER.loads(_payload(tag, name))
    assert {m for m in sys.modules if m.startswith(("antigravity", "pgpitr_evil"))} == was_imported


@pytest.mark.parametrize(
    "tag, name",
    [
        ("dataclass", "pgpitr.errors.PitrError"),  # of pgpitr, but not the kind claimed
        ("model", "pgpitr.manifest.BackupManifest"),
        ("enum", "pgpitr.osutil.os"),  # a module pgpitr imports, reached through pgpitr
        ("dataclass", "pgpitr.manifest.json.JSONDecoder"),
        ("dataclass", "pgpitr.no_such_module.Thing"),
        (
            "enum",
            "pgpitr.operations.backup.StrEnum",
        ),  # an enum, imported into pgpitr from elsewhere
        ("model", "pgpitr.targets.BaseModel"),
    ],
)
def test_a_stored_pgpitr_name_of_the_wrong_kind_is_refused(tag, name) -> None:
    with pytest.raises(RefusedType):
        SERIALIZER.loads(_payload(tag, name))


def test_a_stored_error_outside_pgpitr_reads_back_as_a_plain_pitr_error_naming_its_type():
    back = SERIALIZER.loads(_payload("error", "antigravity.Boom"))
    assert type(back) is errors.PitrError and back.message == "antigravity.Boom: m"
    assert "antigravity" not in sys.modules


def test_a_result_record_of_another_serializer_is_refused_and_never_loaded(tmp_path) -> None:
    class Marker:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "unpickled",))

    pickled = {
        "metadata": {"serializer": {"type": "pickle", "picklelib": "cloudpickle"}},
        "result": pickle.dumps(Marker()).hex(),
    }
    for record in (json.dumps(pickled).encode(), pickle.dumps(Marker()), pickle.dumps([1])):
        with pytest.raises(RefusedType):
            decode_record(record)
    assert not (tmp_path / "unpickled").exists()
    ours = {
        "metadata": {"serializer": {"type": TYPE}},
        "result": SERIALIZER.dumps(MANIFEST).decode(),
    }
    assert decode_record(json.dumps(ours).encode()) == MANIFEST
    assert decode_record(SERIALIZER.dumps(MANIFEST)) == MANIFEST  # a flow's result file


def test_a_value_shaped_like_a_whole_record_reads_back_as_itself() -> None:
    value = {"metadata": {"serializer": {"type": "pickle"}}, "result": "x"}
    assert decode_record(SERIALIZER.dumps(value)) == value


def test_a_value_that_is_not_pgpitrs_is_not_written() -> None:
    with pytest.raises(TypeError, match="cannot hold"):
        SERIALIZER.dumps({"x": object()})


def test_prefect_finds_the_serializer_by_its_type() -> None:
    from prefect.serializers import Serializer

    assert type(Serializer(type=TYPE)) is PitrJSON


def test_every_flow_keeps_its_result_and_failure_as_pgpitrs_json() -> None:
    for entry in registry.FLOWS:
        if entry.kubernetes and not registry.kubernetes_available():
            continue
        flow = registry.load(entry.name)
        assert isinstance(flow.result_serializer, PitrJSON), entry.name
        # the create-account flows keep no result (a password must not be kept); failures JSON
        keeps = not entry.name.startswith("create-account")
        assert flow.persist_result is keeps, entry.name


def _state(kind: str, tmp_path: Path, record: bytes, api_type: str = TYPE) -> Any:
    """A final state as the CLI reads it from the API: metadata naming a stored record."""
    from prefect import states
    from prefect.results import ResultRecordMetadata
    from prefect.serializers import Serializer

    path = tmp_path / "result-record"
    path.write_bytes(record)
    serializer = Serializer(type=api_type)  # what the state in the API says it was written with
    metadata = ResultRecordMetadata(storage_key=str(path), serializer=serializer)
    return getattr(states, kind)(data=metadata)


def _record(value: Any) -> bytes:
    return SERIALIZER.dumps(value)  # what a flow writes: the serializer's output alone


def test_the_cli_reads_a_runs_result_and_its_engine_error_back_from_the_stored_json(tmp_path):
    from cli import runner

    point = RESULTS["restore point"]
    assert runner._result(_state("Completed", tmp_path, _record(point)), "r", "link") == point
    error = errors.RecoveryTargetError("outside the window", hint="pick a time")
    with pytest.raises(errors.RecoveryTargetError) as raised:
        runner._result(_state("Failed", tmp_path, _record(error)), "r", "link")
    assert (raised.value.message, raised.value.hint, raised.value.exit_code) == (
        "outside the window",
        "pick a time",
        9,
    )
    with pytest.raises(errors.PitrError, match="flow run r Failed: ValueError: bad") as raised:
        runner._result(_state("Failed", tmp_path, _record(ValueError("bad"))), "r", "link")
    assert raised.value.hint == "link"


def test_the_cli_never_unpickles_a_runs_stored_result(tmp_path) -> None:
    from cli import runner

    class Marker:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "unpickled",))

    import base64

    pickled = pickle.dumps(Marker())
    for record in (base64.b64encode(pickled), pickled):  # Prefect's pickle serializer; raw
        for api_type in ("pickle", TYPE):  # a state that says so, or a file swapped under it
            completed = _state("Completed", tmp_path, record, api_type)
            assert runner._result(completed, "r", "l") is runner.NO_RESULT
            with pytest.raises(errors.PitrError, match="flow run r Failed"):
                runner._result(_state("Failed", tmp_path, record, api_type), "r", "l")
    assert not (tmp_path / "unpickled").exists()
