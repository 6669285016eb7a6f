"""The restores through the `restore` deployment's API to a time, an LSN, a restore point and
the latest, each with exactly the right rows: tests/flows/test_restore_targets.py's others, in a
module of their own (its own source cluster, served deployments and history) so that two
workers restore at the same time; one source allows one restore at a time."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.flows.test_restore_targets import (  # noqa: F401 (the module's own history)
    check_restores_through_the_api,
    history,
)

pytestmark = pytest.mark.timeout(600)

THERE = ("api-latest", "api-time", "api-lsn", "api-name")


def test_a_restore_to_a_time_an_lsn_a_name_or_the_latest_has_exactly_the_right_rows(
    history,  # noqa: F811
    flows_home: Path,
) -> None:
    check_restores_through_the_api(THERE, history, flows_home)
