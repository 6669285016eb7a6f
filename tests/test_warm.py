"""The suite's warm start of ``pgpitr`` commands (tests/warm.py) gives what a cold start gives:
the same output and exit code (a failed flow's too), the standard input and working directory,
a kill at the timeout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests import warm
from tests.conftest import PGPITR

pytestmark = pytest.mark.skipif(not warm.enabled(), reason="commands run cold: root, or asked")


def both(*args: str, env: dict[str, str] | None = None) -> tuple[tuple, tuple]:
    child = {**os.environ, **(env or {})}
    shown = [*PGPITR, *args]
    hot = warm.run(list(args), shown, child, None, 120)
    cold = subprocess.run(shown, env=child, capture_output=True, text=True, timeout=120)
    return (hot.returncode, hot.stdout, hot.stderr), (cold.returncode, cold.stdout, cold.stderr)


@pytest.mark.parametrize(
    "args",
    [
        ("cluster", "list", "-o", "json"),
        ("cluster", "describe", "nosuch"),  # an error and its exit code
        ("cluster", "restore", "x", "--restore-to-time", "Apr 31,2023"),  # before any flow
        ("cluster", "create", "Bad_Name"),
        ("no-such-command",),  # click's usage error
    ],
)
def test_a_warm_command_prints_and_exits_as_a_cold_one(home: Path, args: tuple[str, ...]) -> None:
    hot, cold = both(*args)
    assert hot == cold
    assert hot[1] or hot[2]  # it said something


def test_a_warm_command_whose_flow_fails_prints_as_a_cold_one(
    home: Path, prefect_harness: str
) -> None:
    # Prefect, imported before the command quieted its console, would print the engine's
    # traceback (cli/runner.prepare has it read its logging settings again)
    hot, cold = both("cluster", "create", "warm-flow", "--backup-repo", "file:///proc/no-such")
    assert hot == cold
    assert hot[0] != 0 and "cannot make the repository directory /proc/no-such" in hot[2]
    assert "Traceback" not in hot[2]


def test_a_warm_command_gets_its_standard_input_and_working_directory(
    home: Path, tmp_path: Path
) -> None:
    # a URL file given as "-" is read from standard input; a relative one from the directory
    (tmp_path / "url").write_text("not a url\n")
    (tmp_path / "url").chmod(0o600)
    here = os.getcwd()
    os.chdir(tmp_path)
    try:
        by_path = warm.run(
            ["server", "use-postgresql", "--url-file", "url"], [], dict(os.environ), None, 120
        )
    finally:
        os.chdir(here)
    by_stdin = warm.run(
        ["server", "use-postgresql", "--url-file", "-"], [], dict(os.environ), "not a url\n", 120
    )
    assert by_path.returncode == by_stdin.returncode != 0
    assert by_path.stderr == by_stdin.stderr and "postgresql" in by_stdin.stderr.lower()


def test_a_warm_command_past_its_timeout_is_killed(home: Path) -> None:
    # standard input that never ends: the command waits for ever
    reader, writer = os.pipe()
    saved = os.dup(0)
    os.dup2(reader, 0)
    try:
        with pytest.raises(subprocess.TimeoutExpired):
            warm.run(["server", "use-postgresql", "--url-file", "-"], [], dict(os.environ), None, 3)
    finally:
        os.dup2(saved, 0)
        for fd in (reader, writer, saved):
            os.close(fd)
