"""The served `restore` deployment offers every kind of target as a typed, described field, and
a run started through the API with each kind restores exactly the right rows.  Cheap on purpose:
one source cluster (`src` of tests/flows/conftest.py, one backup), several restores; those to a
time, an LSN, a restore point and the latest are in tests/flows/test_restore_targets_api.py, on
a source of its own, which another worker restores from meanwhile."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pgpitr.postgres.cluster import Cluster
from tests.conftest import cli
from tests.flows import api
from tests.flows.conftest import HOST, wait_served
from tests.pg import archive_now, rows, sql

pytestmark = pytest.mark.timeout(600)

KINDS = ("time", "lsn", "xid", "name", "immediate")


def deployment(flow_name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(f"{flow_name}/pgpitr-{HOST}")


@dataclass(frozen=True)
class History:
    lsn_after_row_1: str
    xid_row_2: int
    after_row_3: datetime  # between row 3's commit and row 4's


@pytest.fixture(scope="module")
def history(source: str, served, flows_home) -> Iterator[History]:
    """On `src` after its backup: rows 1 to 4, each in its own transaction, a restore point
    `after-1` made through the CLI's flow between rows 1 and 2, everything archived."""
    wait_served(served, flows_home)
    sql("src", "CREATE TABLE msg (id int PRIMARY KEY)")
    sql("src", "INSERT INTO msg VALUES (1)")
    lsn = sql("src", "SELECT pg_current_wal_lsn()::text")[0][0]
    made = cli("cluster", "create-restore-point", "src", "--name", "after-1", "--wait")
    assert "restore point after-1 of src created at LSN" in made.stderr + made.stdout
    (xid,) = sql("src", "INSERT INTO msg VALUES (2) RETURNING txid_current()")[0]
    sql("src", "INSERT INTO msg VALUES (3)")
    after_3 = datetime.now(UTC)  # the commit's time was taken before the client got its answer
    while datetime.now(UTC) <= after_3:
        time.sleep(0.001)
    sql("src", "INSERT INTO msg VALUES (4)")
    archive_now("src")
    yield History(lsn, int(xid), after_3)


def test_the_restore_form_offers_each_kind_of_target_typed_and_described(history) -> None:
    schema = deployment("restore").parameter_openapi_schema
    target = schema["properties"]["target"]
    assert target["description"]
    (model,) = [
        d for name, d in schema["definitions"].items() if target["$ref"].endswith(f"/{name}")
    ]
    fields = model["properties"]
    types = {k: [b.get("type") for b in f.get("anyOf", [f])] for k, f in fields.items()}
    # a text field taking the CLI's formats (a date-time format would give a date picker
    # with no time of day); the kind a dropdown: tests/test_targets.py, tests/ui/
    assert types["time"] == ["string"] and "format" not in fields["time"]
    assert types["kind"] == ["string"] and "latest" in fields["kind"]["enum"]
    assert types["lsn"] == ["string", "null"] and "pattern" in fields["lsn"]["anyOf"][0]
    assert types["xid"] == ["integer", "null"] and fields["xid"]["anyOf"][0]["minimum"] == 3
    assert types["name"] == ["string", "null"]
    assert types["immediate"] == ["boolean"] and types["inclusive"] == ["boolean"]
    for kind in (*KINDS, "inclusive", "kind"):
        assert len(fields[kind]["description"]) > 40, kind
    assert model["additionalProperties"] is False


def restore_through_the_api(new_name: str, target: dict, home: Path) -> list[int] | None:
    """Run the served deployment as the UI's form would; the restored rows (None: no table)."""
    from prefect.deployments import run_deployment

    parameters = {"new_name": new_name, "source_cluster": "src", "target": target}
    run = run_deployment(
        f"restore/pgpitr-{HOST}", parameters=parameters, timeout=300, poll_interval=1
    )
    served_log = (home / "serve.log").read_text(errors="replace").splitlines()[-40:]
    assert run.state.is_completed(), api.explain(run) + "\nserve.log:\n" + "\n".join(served_log)
    assert run.deployment_id == deployment("restore").id
    try:
        if sql(new_name, "SELECT to_regclass('msg') IS NULL")[0][0]:
            return None
        return rows(new_name)
    finally:
        Cluster.get(new_name).stop()


def expected_restores(history: History) -> dict[str, tuple[dict, list[int] | None]]:
    """Each kind of target: the new cluster's name, the target, exactly the rows it has."""
    return {
        "api-latest": ({}, [1, 2, 3, 4]),
        "api-time": ({"time": history.after_row_3.isoformat()}, [1, 2, 3]),
        "api-lsn": ({"lsn": history.lsn_after_row_1}, [1]),
        "api-name": ({"name": "after-1"}, [1]),
        "api-xid": ({"xid": history.xid_row_2}, [1, 2]),
        "api-xid-ex": ({"xid": history.xid_row_2, "inclusive": False}, [1]),
        # the backup was taken before the table was created: its content has no table
        "api-immediate": ({"immediate": True}, None),
    }


#: The kinds restored here; the others, in tests/flows/test_restore_targets_api.py, where a
#: second worker restores them at the same time (one source allows one restore at a time).
HERE = ("api-xid", "api-xid-ex", "api-immediate")


def check_restores_through_the_api(names: tuple[str, ...], history: History, home: Path) -> None:
    expected = {name: expected_restores(history)[name] for name in names}
    got = {
        name: restore_through_the_api(name, target, home) for name, (target, _) in expected.items()
    }
    assert got == {name: rows for name, (_, rows) in expected.items()}


def test_every_kind_of_target_is_restored_by_one_of_the_two_modules() -> None:
    from tests.flows.test_restore_targets_api import THERE

    kinds = expected_restores(History("0/0", 3, datetime.now(UTC)))
    assert sorted(HERE + THERE) == sorted(kinds) and not set(HERE) & set(THERE)


def test_a_restore_to_an_xid_or_the_backup_through_the_api_has_exactly_the_right_rows(
    history, flows_home: Path
) -> None:
    check_restores_through_the_api(HERE, history, flows_home)


def test_the_cli_sends_the_target_through_the_deployment_as_json(history) -> None:
    done = cli(
        "cluster",
        "restore",
        "cli-xid",
        "--source-cluster",
        "src",
        "--restore-to-xid",
        str(history.xid_row_2),
        "--exclusive",
        "--wait",
    )
    assert f"recovery stopped before transaction {history.xid_row_2}" in done.stderr
    try:
        assert rows("cli-xid") == [1]
    finally:
        Cluster.get("cli-xid").stop()
    (run,) = api.flow_runs(f"restore-{HOST}/cli-xid-from-src")
    # the kind said outright: the run's parameters read as what was meant
    expected = {"kind": "xid", "xid": history.xid_row_2, "inclusive": False}
    assert run.parameters["target"] == expected
    # its result kept as pgpitr's JSON, with its typed target
    kept = api.stored_result(run)[2]
    assert kept["type"] == "pgpitr.operations.restore.recovery.RestoreResult"
    assert kept["fields"]["target"]["type"] == "pgpitr.targets.RestoreTarget"
    assert kept["fields"]["target"]["data"]["xid"] == history.xid_row_2
    described = cli("cluster", "describe", "src", "-o", "json").stdout
    assert '"name": "after-1"' in described and '"restorable": true' in described


def test_a_bad_target_from_the_api_is_refused_and_creates_nothing(history) -> None:
    from prefect.deployments import run_deployment
    from prefect.exceptions import PrefectHTTPStatusError

    def start(new_name: str, target: dict, timeout: float):
        parameters = {"new_name": new_name, "source_cluster": "src", "target": target}
        return run_deployment(
            f"restore/pgpitr-{HOST}", parameters=parameters, timeout=timeout, poll_interval=1
        )

    # what the schema can say (an LSN's form) the API itself refuses: no run is created
    with pytest.raises(PrefectHTTPStatusError, match="target.lsn"):
        start("api-bad-lsn", {"lsn": "0/XYZ"}, 0)
    # what it cannot (one kind at most) fails the run before any step, saying why
    run = start("api-two", {"lsn": "0/1", "xid": 745}, 120)
    assert run.state.is_failed()
    assert "were given together" in run.state.message, run.state.message
    assert not api.task_runs(run.id)
    assert {"api-bad-lsn", "api-two"}.isdisjoint(c.name for c in Cluster.all())


def test_a_result_read_back_through_the_deployment_is_json_not_a_pickle(history) -> None:
    made = cli("cluster", "create-restore-point", "src", "--name", "json-1", "--wait")
    printed = re.search(r"restore point json-1 of src created at LSN (\S+) \(timeline", made.stderr)
    assert printed, made.stderr
    (run,) = api.flow_runs(f"create-restore-point-{HOST}/src-json-1")
    serializer, blob, kept = api.stored_result(run)
    assert serializer == "pgpitr-json"
    assert b"pickle" not in blob and not blob.startswith(b"\x80")
    assert kept["__pgpitr__"] == "dataclass"
    assert kept["type"] == "pgpitr.catalog.restore_points.RestorePoint"
    assert kept["fields"]["name"] == "json-1" and kept["fields"]["lsn"] == printed.group(1)


def test_an_engine_error_through_the_deployment_keeps_its_message_hint_and_exit_code(history):
    refused = cli(
        "cluster",
        "restore",
        "json-too-early",
        "--source-cluster",
        "src",
        "--restore-to-time",
        "2001-01-01T00:00:00Z",
        "--wait",
        check=False,
    )
    assert refused.returncode == 9, refused.stderr
    assert refused.stderr.startswith(
        "error: Jan 01,2001 00:00:00 UTC+0000 is outside the recoverable window of 'src'"
    ), refused.stderr
    assert "hint: pick a time inside the window (`pgpitr cluster describe src`)" in (
        " ".join(refused.stderr.split())
    ), refused.stderr
    assert "Traceback" not in refused.stderr and "flow run" not in refused.stderr
    (run,) = api.flow_runs(f"restore-{HOST}/json-too-early-from-src")
    assert run.state.is_failed()
    serializer, blob, kept = api.stored_result(run)
    assert serializer == "pgpitr-json" and b"pickle" not in blob
    assert (kept["__pgpitr__"], kept["type"]) == ("error", "pgpitr.errors.RecoveryTargetError")
    assert kept["exit_code"] == 9 and kept["hint"].startswith("pick a time inside the window")
