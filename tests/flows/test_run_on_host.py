"""What a run handed to the primary's host (tasks/member_hosts.py ``run_on_host``) raises here
when it fails there: the error it raised, read from the state Prefect gave that run, as only one
of pgpitr's own error types.  tests/fleet/test_ha_hosts.py hands real runs to another host."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prefect.states import exception_to_failed_state
from prefect.utilities.asyncutils import run_coro_as_sync

from pgpitr.errors import ClusterStateError, NotFound, PitrError
from tasks.member_hosts import _raised_there


def _failed_run(error: BaseException) -> SimpleNamespace:
    """A flow run as the API returns it after it raised ERROR (the engine's own wording)."""
    state = run_coro_as_sync(
        exception_to_failed_state(error, message="Flow run encountered an exception:")
    )
    return SimpleNamespace(state=state, name="grant-role-host-b/pgha-nobody")


def test_a_pgpitr_error_there_is_raised_here_as_itself_naming_the_host() -> None:
    there = NotFound("account 'nobody' does not exist in 'pgha'", hint="create it first\nthen")
    raised = _raised_there(_failed_run(there), "host-b", "grant-role", "pgha")
    assert type(raised) is NotFound
    assert raised.exit_code == NotFound.exit_code
    assert raised.message == "host host-b: account 'nobody' does not exist in 'pgha'"
    assert raised.hint == "create it first\nthen"


def test_an_error_there_is_not_retried_here_where_the_run_there_retried_it() -> None:
    there = ClusterStateError("the Patroni cluster 'pgha' has no primary now", transient=True)
    raised = _raised_there(_failed_run(there), "host-b", "grant-role", "pgha")
    assert type(raised) is ClusterStateError and not raised.transient


@pytest.mark.parametrize(
    "error",
    [ValueError("bad value"), PitrError("plain"), RuntimeError("annotations: x")],
    ids=["foreign", "base", "foreign-with-a-module-name"],
)
def test_any_other_failure_is_a_cluster_state_error_naming_the_run(error: Exception) -> None:
    raised = _raised_there(_failed_run(error), "host-b", "grant-role", "pgha")
    if isinstance(error, PitrError):  # the base type is pgpitr's: kept as it is
        assert type(raised) is PitrError and raised.message == "host host-b: plain"
        return
    assert type(raised) is ClusterStateError
    assert raised.message.startswith("grant-role of 'pgha' on host host-b ended ")
    assert str(error) in raised.message
    assert raised.hint == "see the run grant-role-host-b/pgha-nobody in the Prefect UI"


def test_a_name_in_the_errors_module_that_is_no_error_type_is_not_used() -> None:
    run = SimpleNamespace(
        state=SimpleNamespace(
            message="Flow run encountered an exception: annotations: not an error",
            is_completed=lambda: False,
        ),
        name="r",
    )
    raised = _raised_there(run, "host-b", "grant-role", "pgha")
    assert type(raised) is ClusterStateError
