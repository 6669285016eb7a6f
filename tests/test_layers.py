"""The layers hold: import-linter's contracts (pyproject.toml), and the WAL commands, which run
once per segment, import none of the heavy libraries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from pgpitr import cluster_repository
from pgpitr.operations import create
from pgpitr.wal import archive_info
from tests.conftest import reachable_tempdir

REPO_ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("prefect", "typer", "rich", "psycopg", "pendulum", "kubernetes", "pydantic")


def test_the_import_contracts_are_kept() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lint-imports"), "--no-cache"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout
    assert result.stdout.count("KEPT") >= 5


_PROBE = """
import json, sys
from pgpitr.__main__ import main
try:
    main(sys.argv[1:])
except SystemExit as exit:
    code = exit.code
roots = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"code": code, "modules": roots}))
"""


def _wal_command(home: Path, *args: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, "--home", str(home), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,  # this checkout's code, not an installed copy
    )
    return json.loads(result.stdout.strip().splitlines()[-1]) | {"stderr": result.stderr}


@pytest.mark.parametrize("kind", ["file", "s3"])
def test_wal_push_and_fetch_import_no_heavy_library(
    home: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("s3_url") if kind == "s3" else None
    cluster = create.create("lean", repository_url=url)
    archive_info.ensure_archive_info(cluster, cluster_repository.repository(cluster))
    segment = reachable_tempdir("pgpitr-wal-") / "000000010000000000000042"
    segment.write_bytes(b"\x01" * (cluster.state.wal_segment_size))

    pushed = _wal_command(home, "wal-push", "--cluster", "lean", str(segment))
    assert pushed["code"] == 0, pushed["stderr"]
    fetched = _wal_command(home, "wal-fetch", "--cluster", "lean", "00000007.history", "x")
    assert fetched["code"] == 1, fetched["stderr"]  # not archived: "missing" to PostgreSQL

    for run in (pushed, fetched):
        heavy = [m for m in HEAVY if m in run["modules"]]
        assert heavy == [], f"the WAL command imported {heavy}"
        assert ("boto3" in run["modules"]) is (kind == "s3")
    stored = [i.key for i in cluster_repository.repository(cluster).list("lean/wal/")]
    assert any("000000010000000000000042" in key for key in stored)
