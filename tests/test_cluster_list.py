"""`pgpitr cluster list` marks a registered server (someone else's) apart from a cluster pgpitr
created, in the table (TYPE) and in JSON ("type")."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from pgpitr.state import ClusterState
from tests.conftest import PGPITR


def saved(home: Path, name: str, **fields: object) -> None:
    ClusterState(
        name=name,
        platform="local",
        port=5999,
        repository=f"file://{home}/repo",
        bindir="/usr/lib/postgresql/15/bin",
        os_user="postgres",
        created="2026-12-01T00:00:00+00:00",
        home=str(home),
        **fields,
    ).save()


def listed(*args: str) -> str:
    # a read-only command: no Prefect API needed (the session's guard refuses any)
    done = subprocess.run(
        [*PGPITR, "cluster", "list", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "250"},  # rich folds table cells at 80 columns otherwise
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_registered_clusters_are_marked(home: Path) -> None:
    saved(home, "made-pg")
    saved(home, "theirs-pg", registered=True, pgdata=str(home / "elsewhere" / "main"))

    rows = {r["name"]: r for r in json.loads(listed("-o", "json"))}
    assert rows["made-pg"]["type"] == "Created"
    assert rows["theirs-pg"]["type"] == "Registered"
    assert rows["theirs-pg"]["status"] == "Stopped"  # no postmaster.pid in its data directory

    table = listed().splitlines()
    assert "TYPE" in table[0]
    assert any("theirs-pg" in line and "Registered" in line for line in table)
    assert any("made-pg" in line and "Created" in line for line in table)
