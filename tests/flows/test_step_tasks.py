"""Every step an engine operation passes to ``steps(...)`` has its Prefect task in a module
tasks/steps.py lists, and every such task wraps a step some operation runs.

The steps are read from the engine's source (each call ``steps(STEP, ...)``), not from a run: an
operation's rarer branches (a rollback, a policy switch, a failed drill) name steps a test run
would not reach, and a step without its task fails only when its flow reaches it.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import pkgutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import pgpitr
from pgpitr.errors import PitrError
from tasks.steps import STEP_TASK_MODULES, step_tasks, task_of


def _resolve(module: Any, node: ast.expr) -> Callable[..., Any]:
    """The function NODE (``name`` or ``module.name``) names in MODULE."""
    if isinstance(node, ast.Name):
        return getattr(module, node.id)
    if isinstance(node, ast.Attribute):
        return getattr(_resolve(module, node.value), node.attr)
    raise AssertionError(f"{module.__name__}: steps() is given {ast.unparse(node)}, not a name")


def engine_steps() -> dict[Callable[..., Any], str]:
    """Every function the engine passes to ``steps(...)``, with where it does."""
    found: dict[Callable[..., Any], str] = {}
    for info in pkgutil.walk_packages(pgpitr.__path__, "pgpitr."):
        spec = importlib.util.find_spec(info.name)
        assert spec is not None and spec.origin is not None
        tree = ast.parse(Path(spec.origin).read_text())
        calls = [
            node
            for node in ast.walk(tree)
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "steps"
            and node.args
        ]
        if not calls:
            continue
        module = importlib.import_module(info.name)
        for call in calls:
            step = _resolve(module, call.args[0])
            found.setdefault(step, f"{info.name}:{call.lineno}")
    return found


STEPS = engine_steps()


def test_the_engine_has_steps_to_check() -> None:
    # the walk finds the operations' steps at all (a rename of the parameter would hide them)
    modules = {where.partition(":")[0] for where in STEPS.values()}
    assert {"pgpitr.operations.backup", "pgpitr.operations.restore"} <= modules
    assert len(STEPS) >= 50


@pytest.mark.parametrize("step", list(STEPS), ids=lambda s: f"{s.__module__}.{s.__qualname__}")
def test_every_step_of_an_operation_has_its_task(step: Callable[..., Any]) -> None:
    try:
        task = task_of(step)
    except PitrError as exc:
        pytest.fail(f"{STEPS[step]}: {exc}")
    assert task.fn.__wrapped__ is step


def test_every_step_task_wraps_a_step_an_operation_runs() -> None:
    listed = [name for names in STEP_TASK_MODULES.values() for name in names]
    wrapped = {
        step: f"{name}.{task.name}"
        for name in listed
        for step, task in step_tasks(importlib.import_module(name)).items()
    }
    assert set(wrapped) - set(STEPS) == set(), [wrapped[s] for s in set(wrapped) - set(STEPS)]


def test_a_step_without_a_task_is_refused_by_name() -> None:
    def orphan() -> None:
        raise AssertionError("a step without its task must not run")

    with pytest.raises(PitrError, match=r"test_step_tasks.*orphan has no Prefect task"):
        task_of(orphan)
