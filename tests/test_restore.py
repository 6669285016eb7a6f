"""pgpitr/restore.py's request and target: read and checked once, at the edge, before any step.
(The restore itself, on real servers: tests/test_walkthrough.py and tests/faults/.)"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pgpitr.errors import InvalidInput
from pgpitr.restore import RestoreRequest, RestoreTarget


def test_a_request_reads_its_target_once_and_normalises_empty_options() -> None:
    request = RestoreRequest.parse("new-pg", "my-pg", "Apr 17,2023 19:56:40 UTC+0800", "", "")
    assert request.target.time == datetime(2023, 4, 17, 11, 56, 40, tzinfo=UTC)
    assert (request.backup_name, request.backup_repo) == (None, None)
    assert str(request.target) == "2023-04-17T11:56:40+00:00"
    assert RestoreTarget.parse(str(request.target)) == request.target  # the flow's form


def test_latest_is_the_end_of_the_archived_wal() -> None:
    target = RestoreTarget.parse(" LATEST ")
    assert target.latest and str(target) == "latest"
    assert target.describe() == "the end of the archived WAL"
    assert RestoreTarget.parse(str(target)) == target


@pytest.mark.parametrize(
    ("new", "source", "when", "message"),
    [
        ("Bad Name", "my-pg", "latest", "invalid cluster name 'Bad Name'"),
        ("new-pg", "my pg", "latest", "invalid cluster name 'my pg'"),
        ("new-pg", "my-pg", "2023-04-17 19:56:40", "has no time zone"),
        ("new-pg", "my-pg", "yesterday", "cannot read the restore time 'yesterday'"),
    ],
)
def test_a_bad_request_is_refused_before_anything_runs(new, source, when, message) -> None:
    with pytest.raises(InvalidInput, match=message):
        RestoreRequest.parse(new, source, when)
