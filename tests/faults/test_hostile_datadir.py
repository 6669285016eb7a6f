"""What a source's data directory holds must not act on the machine that restores it: its shell
commands (``archive_cleanup_command``, ``recovery_end_command``…) and a ``pgpitr/`` package
planted where the WAL commands run.  Real PostgreSQL 15 servers; restores and a drill through
the engine's plain ``Steps``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from pgpitr import heartbeat
from pgpitr.operations import create, drill, log_backup
from pgpitr.operations.drill import checks as drill_checks
from pgpitr.postgres import conf
from pgpitr.postgres.cluster import Cluster
from pgpitr.steps import Steps
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
    if cluster.owner is None:  # the test runs as the server's own account
        return
    for p in [path, *path.rglob("*")]:
        os.chown(p, *cluster.owner)


#: spelled out, not conf.COMMAND_SETTINGS: the test names what it checks
COMMANDS = (
    "archive_command",
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "ssl_passphrase_command",
)


def _commands(cluster: str) -> dict[str, tuple[str, str | None]]:
    rows = sql(
        cluster,
        "SELECT name, setting, sourcefile FROM pg_settings WHERE name = ANY(%s)",
        (list(COMMANDS),),
    )
    return {name: (setting, sourcefile) for name, setting, sourcefile in rows}


def test_a_restore_and_a_drill_never_run_the_sources_cleanup_and_recovery_end_commands(
    home: Path, marks: Path
) -> None:
    source = create.create("cmdsrc")
    log_backup.set_log_backup(source, True)
    datadir = source.state.datadir
    keep = marks / "keep"
    # the source's own commands, in an included file after pgpitr's and through ALTER SYSTEM,
    # as a standby's operator would have set them
    cleanup = f"touch {marks}/cleanup-ran; rm -f {keep}"
    (datadir / "commands.conf").write_text(f"archive_cleanup_command = {conf.quote(cleanup)}\n")
    with (datadir / "postgresql.conf").open("a") as main:
        main.write("include 'commands.conf'\n")
    _own(datadir / "commands.conf", source)
    sql("cmdsrc", f"ALTER SYSTEM SET recovery_end_command = 'touch {marks}/end-ran'")
    loaded = sql("cmdsrc", "SELECT pg_conf_load_time()")[0][0]
    sql("cmdsrc", "SELECT pg_reload_conf()")
    # a new session has the settings once the postmaster has read the files again
    deadline = time.monotonic() + 30
    while sql("cmdsrc", "SELECT pg_conf_load_time()")[0][0] <= loaded:
        assert time.monotonic() < deadline, "the configuration was not reloaded in 30 s"
        time.sleep(0.05)
    held = _commands("cmdsrc")
    assert held["archive_cleanup_command"][0] == cleanup
    assert held["recovery_end_command"][0] == f"touch {marks}/end-ran"
    engine.backup(source)
    beats = []
    for _ in range(3):
        beats.append(heartbeat.beat(source))
        archive_now("cmdsrc")
        time.sleep(1.2)

    engine.restore("cmdcopy", "cmdsrc", None)
    commands = _commands("cmdcopy")
    archive = conf.archive_command(home, "cmdcopy", True)
    assert commands["archive_command"] == (
        archive,
        str(Cluster.get("cmdcopy").state.datadir / conf.MANAGED),
    )
    for setting in ("restore_command", "archive_cleanup_command", "recovery_end_command"):
        assert commands[setting][0] == "", setting
    assert commands["ssl_passphrase_command"][0] == ""
    assert (
        "recovery_end_command"
        not in (Cluster.get("cmdcopy").state.datadir / "postgresql.auto.conf").read_text()
    )

    target = beats[1].beat_at + drill_checks.SLACK + timedelta(milliseconds=100)
    result = drill.run(Steps(), drill.DrillRequest("cmdsrc", target))
    assert result.passed, result.error

    assert sorted(p.name for p in marks.iterdir()) == ["keep"]


def test_the_wal_commands_never_import_a_pgpitr_planted_in_the_data_directory(
    home: Path, marks: Path
) -> None:
    source = create.create("plsrc")
    log_backup.set_log_backup(source, True)
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
