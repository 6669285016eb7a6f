"""How long an operator waits for a command, with pgpitr's local Prefect server running
(issue 25 item 5; DESIGN's targets, ``TARGET_SECONDS``: a changing command within 2 s,
`cluster create` within 4 s, `describe` and `list-*` within 0.3 s; medians).

``python -m bench commands [RUNS]`` as pgpitr's service account (or any account but root);
JSON in bench/results/.

How. A home of its own, with pgpitr's local Prefect server (SQLite, the embedded default)
started on a free port by `server start` and the agent not running; one cluster (PostgreSQL 15,
a hundred rows) with its default policy. Each command is a new process of the installed
``pgpitr`` script (beside this interpreter: run `make install` first), as an operator runs it,
timed from its start to its exit, RUNS times
(default 5) after one run that is not counted; the figure is the median, the spread is shown.
A changing command changes something each time: the policy's retention, a new account (its
password on standard input), that account's role, a full backup of the small cluster, a new
cluster (deleted after its timing, untimed).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.proc import home_with_local_server, say
from bench.results import save, stamp

CLUSTER = "cmd-pg"
RUNS = 5
#: the installed command (its modules compiled at install), not this checkout's sources
PGPITR = str(Path(sys.executable).with_name("pgpitr"))
#: DESIGN's targets for a command's median, by kind
TARGET_SECONDS = {"read": 0.3, "change": 2.0, "create": 4.0}


def _timed(env: dict[str, str], args: list[str], stdin: str | None = None) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [PGPITR, *args], env=env, input=stdin, capture_output=True, text=True, timeout=600, cwd="/"
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"pgpitr {' '.join(args)} failed: {done.stderr[-2000:]}")
    return seconds


def _commands() -> list[tuple[str, str, Callable[[int], tuple[list[str], str | None]]]]:
    """(label, kind, run number -> argv and standard input)."""
    policy = f"{CLUSTER}-postgresql-backup-policy"
    return [
        ("cluster describe", "read", lambda n: (["cluster", "describe", CLUSTER], None)),
        ("cluster list", "read", lambda n: (["cluster", "list"], None)),
        ("cluster list-backup", "read", lambda n: (["cluster", "list-backup", CLUSTER], None)),
        ("cluster list-backup-policy", "read", lambda n: (["cluster", "list-backup-policy"], None)),
        (
            "cluster edit-backup-policy",
            "change",
            lambda n: (
                ["cluster", "edit-backup-policy", policy, "--set", f"retention.ttl={7 + n}d"],
                None,
            ),
        ),
        (
            "cluster create-account",
            "change",
            lambda n: (
                [
                    "cluster",
                    "create-account",
                    CLUSTER,
                    "--username",
                    f"bench{n}",
                    "--password-stdin",
                ],
                f"bench-password-{n}\n",
            ),
        ),
        (
            "cluster grant-role",
            "change",
            lambda n: (
                [
                    "cluster",
                    "grant-role",
                    CLUSTER,
                    "--username",
                    f"bench{n}",
                    "--role",
                    "READWRITE",
                ],
                None,
            ),
        ),
        ("cluster backup", "change", lambda n: (["cluster", "backup", CLUSTER], None)),
        ("cluster create", "create", lambda n: (["cluster", "create", f"cmd-new-{n}"], None)),
    ]


def run(runs: int = RUNS) -> dict[str, Any]:
    home, env = home_with_local_server("pgpitr-bench-commands-")
    out: dict[str, Any] = {
        **stamp(),
        "postgresql": 15,
        "runs": runs,
        "method": __doc__.split("How.")[1].strip(),
        "commands": {},
    }
    try:
        _timed(env, ["server", "start"])
        _timed(env, ["cluster", "create", CLUSTER])
        from tests.pg import sql

        sql(CLUSTER, "CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 100) g")
        for label, kind, argv_of in _commands():
            seconds = []
            for n in range(runs + 1):
                argv, stdin = argv_of(n)
                took = _timed(env, argv, stdin)
                if n:
                    seconds.append(took)
                if kind == "create":
                    _timed(env, ["cluster", "delete", argv[-1]])
            median = statistics.median(seconds)
            out["commands"][label] = {
                "kind": kind,
                "median_seconds": round(median, 3),
                "min_seconds": round(min(seconds), 3),
                "max_seconds": round(max(seconds), 3),
                "target_seconds": TARGET_SECONDS[kind],
                "holds": median <= TARGET_SECONDS[kind],
            }
            say(f"{label}: median {median:.2f} s (target {TARGET_SECONDS[kind]} s)")
    finally:
        subprocess.run([PGPITR, "server", "stop"], env=env, cwd="/", check=False)
        from tests.conftest import stop_everything_under

        stop_everything_under(home)
    out["targets_hold"] = all(c["holds"] for c in out["commands"].values())
    path = save(out, "commands")
    say(f"results: {path}")
    return out


def cli(argv: list[str]) -> int:
    runs = int(argv[0]) if argv else RUNS
    return 0 if run(runs)["targets_hold"] else 1
