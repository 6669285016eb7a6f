"""scripts/layout.py: the layers' sizes, and the limit on the engine's modules (`make test` runs
it before the suite)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "layout.py"
sys.path.insert(0, str(SCRIPT.parent))
import layout  # noqa: E402  (a script, not a package)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60
    )


def test_this_checkout_keeps_the_limit_and_shows_every_layer() -> None:
    result = run()
    assert result.returncode == 0, result.stderr
    for layer in ("cli", "deployments", "flows", "tasks", "pgpitr/operations", "tests"):
        assert f"  {layer} " in result.stdout
    assert "the 15 largest modules:" in result.stdout


def _module(root: Path, path: str, n: int) -> None:
    (root / path).parent.mkdir(parents=True, exist_ok=True)
    (root / path).write_text("x = 1\n" * n)


def test_a_long_engine_module_fails(tmp_path: Path) -> None:
    _module(tmp_path, "pgpitr/wal/huge.py", layout.LIMIT + 1)
    _module(tmp_path, "cli/long_but_not_engine.py", layout.LIMIT * 2)

    result = run("--root", str(tmp_path))
    assert result.returncode == 1
    assert f"pgpitr/wal/huge.py: {layout.LIMIT + 1} lines, more than {layout.LIMIT}" in (
        result.stderr
    )
    assert "long_but_not_engine" not in result.stderr


def test_an_exception_holds_only_while_the_module_is_long(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(layout.EXCEPTIONS, "pgpitr/known.py", "a reason")
    _module(tmp_path, "pgpitr/known.py", layout.LIMIT + 1)
    assert layout.report(tmp_path)[1] == []  # long, and excepted
    _module(tmp_path, "pgpitr/known.py", layout.LIMIT)  # within the limit now: its entry must go
    (problem,) = layout.report(tmp_path)[1]
    assert f"pgpitr/known.py is listed in scripts/layout.py EXCEPTIONS but has {layout.LIMIT}" in (
        problem
    )
