"""What a source's data directory holds must not act on the machine that restores it: a
``pgpitr/`` package planted where the WAL commands run.  Real PostgreSQL 15 servers; restores
through the engine's plain ``Steps``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pgpitr import clusters
from pgpitr.postgres.cluster import Cluster
from tests import engine
from tests.conftest import reachable_tempdir
from tests.pg import archive_now, sql


@pytest.fixture
def marks() -> Iterator[Path]:
    """A directory the server's OS user may write to and delete from: what a hostile command or
    a planted package would touch."""
    path = reachable_tempdir("pgpitr-marks-")
    path.chmod(0o777)
    (path / "keep").write_text("a file pg_archivecleanup would prune\n")
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _own(path: Path, cluster: Cluster) -> None:
    for p in [path, *path.rglob("*")]:
        os.chown(p, *cluster.owner)


def test_the_wal_commands_never_import_a_pgpitr_planted_in_the_data_directory(
    home: Path, marks: Path
) -> None:
    source = clusters.create("plsrc")
    clusters.set_log_backup(source, True)
    marker = marks / "planted-pgpitr-imported"
    planted = source.state.datadir / "pgpitr"
    planted.mkdir()
    (planted / "__init__.py").write_text(
        f"import pathlib\npathlib.Path({str(marker)!r}).write_text('imported')\n"
    )
    _own(planted, source)
    # the plant works: Python as the WAL commands ran it before (-E -m) imports it
    subprocess.run(
        [sys.executable, "-E", "-m", "pgpitr", "--help"],
        cwd=source.state.datadir,
        capture_output=True,
        check=False,
    )
    assert marker.read_text() == "imported"
    marker.unlink()

    engine.backup(source)  # carries the plant into every restore
    sql("plsrc", "CREATE TABLE msg (id int)")
    sql("plsrc", "INSERT INTO msg VALUES (1)")
    archive_now("plsrc")
    engine.restore("plcopy", "plsrc", None)
    copy = Cluster.get("plcopy")
    assert (copy.state.datadir / "pgpitr" / "__init__.py").exists()
    assert sql("plcopy", "SELECT id FROM msg") == [(1,)]
    sql("plcopy", "INSERT INTO msg VALUES (2)")
    archive_now("plcopy")  # the restored cluster archives, from its planted directory too

    assert not marker.exists()
