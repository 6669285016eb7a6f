"""The requests of a backup and a drill: their form is checked once, when they are made (by the
CLI before any run, by the flow from its parameters), and their parameters are the flow's."""

from __future__ import annotations

import inspect
from datetime import UTC, datetime

import pytest

from pgpitr.errors import InvalidInput, PitrError, RecoveryTargetError
from pgpitr.operations.backup import BackupRequest, BackupType
from pgpitr.operations.drill import DrillRequest


def test_a_backup_request_parses_its_type_and_reads_empty_names_as_not_given() -> None:
    request = BackupRequest("src", "", " Incremental ", "")
    assert request.backup_type is BackupType.INCREMENTAL
    assert (request.name, request.parent) == (None, None)
    given = BackupRequest("src", "b-1")
    assert given.named() is given  # a name given, or once chosen, stays


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"backup_type": "differential"}, "use full or incremental"),
        ({"parent": "backup-1"}, "--parent is for incremental backups"),
        ({"name": "no/slash"}, "no/slash"),
        ({"backup_type": "incremental", "parent": "Bad Parent"}, "Bad Parent"),
    ],
)
def test_a_malformed_backup_request_is_refused_when_made(fields: dict, says: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        BackupRequest("src", **fields)
    assert says in str(refused.value)


def test_a_backup_request_of_a_malformed_cluster_name_is_refused() -> None:
    with pytest.raises(PitrError):
        BackupRequest("Not A Name")


def test_a_backup_requests_parameters_are_the_backup_flows() -> None:
    from flows.backup import backup

    request = BackupRequest("src", "b-1", "incremental", "b-0", verify_after=True)
    parameters = request.parameters()
    assert set(parameters) <= set(inspect.signature(backup.fn).parameters)
    assert parameters == {
        "cluster": "src",
        "backup_name": "b-1",
        "backup_type": "incremental",
        "parent": "b-0",
        "verify": True,
    }


@pytest.mark.parametrize("at", [None, "", "random", " RANDOM "])
def test_a_drill_request_without_a_time_drills_a_random_one(at: str | None) -> None:
    assert DrillRequest.parse("src", at).at is None


def test_a_drill_request_reads_a_kbcli_time_and_its_parameters_read_back_the_same() -> None:
    request = DrillRequest.parse("src", "Apr 17,2023 19:56:40 UTC+0800")
    assert request.at == datetime(2023, 4, 17, 11, 56, 40, tzinfo=UTC)
    parameters = request.parameters()
    assert DrillRequest.parse(parameters["cluster"], parameters["at"]) == request
    assert DrillRequest.parse("src", DrillRequest("src").parameters()["at"]).at is None

    from flows.drill import drill

    assert set(parameters) <= set(inspect.signature(drill.fn).parameters)


def test_a_drill_request_refuses_latest_a_malformed_time_and_a_naive_one() -> None:
    with pytest.raises(RecoveryTargetError, match="not to latest"):
        DrillRequest.parse("src", "latest")
    with pytest.raises(PitrError):
        DrillRequest.parse("src", "yesterday at noon")
    with pytest.raises(RecoveryTargetError, match="no time zone"):
        DrillRequest("src", datetime(2023, 4, 17, 11, 56, 40))
