"""pgpitr/steps.py: steps run in order; inside a transaction, completed steps are undone newest
first when a later one fails, and only then."""

from __future__ import annotations

import pytest

from pgpitr.errors import ClusterStateError
from pgpitr.steps import Steps, undo_of, undone_by

undone: list[str] = []


def _forget(name: str) -> None:
    undone.append(name)


@undone_by(_forget)
def make(name: str) -> str:
    return name


def fail(why: str) -> None:
    raise ClusterStateError(why)


@pytest.fixture(autouse=True)
def _clean() -> None:
    undone.clear()


def test_a_failure_undoes_the_completed_steps_newest_first() -> None:
    steps = Steps()
    with pytest.raises(ClusterStateError, match="third"):
        with steps.transaction():
            steps(make, "first")
            steps(make, "second")
            steps(fail, "third")
    assert undone == ["second", "first"]


def test_success_undoes_nothing_and_returns_each_result() -> None:
    steps = Steps()
    with steps.transaction():
        assert steps(make, "kept") == "kept"
    assert undone == []


def test_steps_outside_a_transaction_are_not_undone() -> None:
    steps = Steps()
    steps(make, "before")
    with pytest.raises(ClusterStateError):
        with steps.transaction():
            steps(make, "inside")
            steps(fail, "boom")
    assert undone == ["inside"]


def test_a_nested_transaction_hands_its_steps_to_the_outer_one() -> None:
    steps = Steps()
    with pytest.raises(ClusterStateError):
        with steps.transaction():
            with steps.transaction():
                steps(make, "inner")
            steps(fail, "later")
    assert undone == ["inner"]


def test_a_failing_undo_does_not_hide_the_failure_nor_stop_the_others() -> None:
    def broken(_: str) -> None:
        raise OSError("cannot undo")

    @undone_by(broken)
    def fragile(name: str) -> str:
        return name

    steps = Steps()
    with pytest.raises(ClusterStateError, match="real cause"):
        with steps.transaction():
            steps(make, "first")
            steps(fragile, "second")
            steps(fail, "real cause")
    assert undone == ["first"]


def test_the_undo_mark_is_readable_and_the_hooks_do_nothing_here() -> None:
    assert undo_of(make) is _forget and undo_of(fail) is None
    assert Steps().sync_schedules("c") == [] and Steps().remove_schedules("c") == []
