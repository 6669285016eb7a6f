"""pgpitr/operations/restore/handover.py and the bootstrap-patroni command's own checks: a
restored data directory handed over to another manager (real files, no server).

The hand-over is run on a cluster's state and data directory made by hand (tests/pg.py's
``serverless_cluster``): it stops nothing that runs, moves the directory (a rename, or a copy
across file systems), takes pgpitr's files out and forgets the cluster, or leaves everything as
it was when it fails.  The end to end run, through Patroni, is tests/ha/test_patroni_bootstrap.py.
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from cli import flowio
from pgpitr.errors import AlreadyExists, ClusterStateError, InvalidInput, NotFound
from pgpitr.operations.restore import handover
from pgpitr.postgres import conf
from tests.pg import serverless_cluster

POSTGRESQL_CONF = "shared_buffers = 16MB\n# the source's own\n"


def _restored(home: Path, name: str = "boot-tmp") -> Path:
    """A cluster as a restore leaves it before the hand-over; its data directory."""
    state = serverless_cluster(home, name, f"file://{home}/repo", 7)
    state.os_user = pwd.getpwuid(os.geteuid()).pw_name  # its files are this user's
    state.save()
    datadir = state.datadir
    (datadir / "postgresql.conf").write_text(POSTGRESQL_CONF + "\n" + conf.INCLUDE_LINES)
    (datadir / conf.MANAGED).write_text("port = 5432\n")
    (datadir / conf.RECOVERY).write_text("# no recovery in progress\n")
    (datadir / "PG_VERSION").write_text("15\n")
    datadir.chmod(0o700)
    return datadir


def _hand_over(into: Path, name: str = "boot-tmp") -> str:
    return handover.hand_over(SimpleNamespace(into_datadir=str(into)), name)  # type: ignore[arg-type]


# -- what may receive the data ---------------------------------------------------------------


def test_an_absent_or_empty_directory_under_a_writable_parent_is_accepted(tmp_path: Path) -> None:
    assert handover.check_into_datadir(str(tmp_path / "data")) == tmp_path / "data"
    (tmp_path / "empty").mkdir()
    assert handover.check_into_datadir(str(tmp_path / "empty")) == tmp_path / "empty"


def test_a_directory_that_cannot_take_the_data_is_refused_with_a_hint(tmp_path: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "PG_VERSION").write_text("15\n")
    (tmp_path / "file").write_text("")
    cases = [
        ("relative/data", InvalidInput, "is not an absolute path"),
        (str(tmp_path / "full"), AlreadyExists, "is not empty"),
        (str(tmp_path / "file"), AlreadyExists, "exists and is not a directory"),
        (str(tmp_path / "no" / "data"), NotFound, "parent directory"),
    ]
    for path, error, message in cases:
        with pytest.raises(error, match=message) as info:
            handover.check_into_datadir(path)
        assert info.value.hint


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_a_parent_this_user_cannot_write_to_is_refused(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    try:
        with pytest.raises(ClusterStateError, match="cannot write to"):
            handover.check_into_datadir(str(locked / "data"))
    finally:
        locked.chmod(0o700)


# -- pgpitr's files out ----------------------------------------------------------------------


def test_pgpitr_files_and_includes_go_and_the_rest_of_the_configuration_stays(
    tmp_path: Path,
) -> None:
    (tmp_path / "postgresql.conf").write_text(POSTGRESQL_CONF + "\n" + conf.INCLUDE_LINES)
    (tmp_path / conf.MANAGED).write_text("port = 5432\n")
    (tmp_path / "pg_hba.conf").write_text("local all all peer\n")
    handover.strip_pgpitr_files(tmp_path, None)
    assert (tmp_path / "postgresql.conf").read_text() == POSTGRESQL_CONF
    assert not (tmp_path / conf.MANAGED).exists()
    assert (tmp_path / "pg_hba.conf").read_text() == "local all all peer\n"
    handover.strip_pgpitr_files(tmp_path, None)  # again: nothing more to take out
    assert (tmp_path / "postgresql.conf").read_text() == POSTGRESQL_CONF


# -- the hand-over ---------------------------------------------------------------------------


def test_the_data_is_renamed_into_an_empty_directory_and_the_cluster_forgotten(
    home: Path, tmp_path: Path
) -> None:
    _restored(home)
    into = tmp_path / "data"
    into.mkdir(mode=0o755)
    assert _hand_over(into) == str(into)
    assert (into / "PG_VERSION").read_text() == "15\n"
    assert (into / "postgresql.conf").read_text() == POSTGRESQL_CONF
    assert not (into / conf.MANAGED).exists() and not (into / conf.RECOVERY).exists()
    assert into.stat().st_mode & 0o777 == 0o700  # the data directory's own mode
    assert list((home / "clusters").iterdir()) == []


def test_across_file_systems_the_data_is_copied_with_its_modes(home: Path) -> None:
    shm = Path("/dev/shm")
    if not os.access(shm, os.W_OK) or os.stat(shm).st_dev == os.stat(home).st_dev:
        pytest.skip("no second writable file system at /dev/shm")
    datadir = _restored(home)
    (datadir / "global" / "pg_control").chmod(0o600)
    parent = Path(tempfile.mkdtemp(dir=shm))
    try:
        into = parent / "data"
        _hand_over(into)
        assert (into / "PG_VERSION").read_text() == "15\n"
        assert into.stat().st_mode & 0o777 == 0o700
        assert (into / "global" / "pg_control").stat().st_mode & 0o777 == 0o600
        assert list((home / "clusters").iterdir()) == []
    finally:
        shutil.rmtree(parent)


def test_a_failed_hand_over_leaves_the_destination_as_it_was_and_the_data_in_place(
    home: Path, tmp_path: Path
) -> None:
    datadir = _restored(home)
    (datadir / "postgresql.conf").unlink()
    (datadir / "postgresql.conf").mkdir()  # unreadable as a file: the step fails after the move
    into = tmp_path / "data"
    with pytest.raises(IsADirectoryError):
        _hand_over(into)
    assert not into.exists()
    assert (datadir / "PG_VERSION").exists()  # back where the rollback removes it with its cluster
    into.mkdir(mode=0o750)
    with pytest.raises(IsADirectoryError):
        _hand_over(into)
    assert into.is_dir() and list(into.iterdir()) == []
    assert into.stat().st_mode & 0o777 == 0o750


# -- the command's own reading of Patroni's arguments ----------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [(None, False), ("True", True), ("true", True), ("on", True), ("False", False), ("0", False)],
)
def test_a_yes_no_option_reads_yaml_booleans_as_patroni_passes_them(text, value) -> None:
    assert flowio.flag_value("--exclusive", text) is value


def test_a_yes_no_option_refuses_other_words() -> None:
    with pytest.raises(InvalidInput, match="--exclusive takes true or false"):
        flowio.flag_value("--exclusive", "maybe")


def test_the_temporary_cluster_is_named_after_a_scope_that_is_a_free_cluster_name(
    home: Path,
) -> None:
    assert flowio.bootstrap_name("pg-ha") == "pg-ha"
    with pytest.raises(InvalidInput, match="Patroni scope 'PG_HA'") as info:
        flowio.bootstrap_name("PG_HA")
    assert info.value.hint
    (home / "clusters" / "pg-ha").mkdir(parents=True)
    with pytest.raises(AlreadyExists, match="a pgpitr cluster named 'pg-ha' exists"):
        flowio.bootstrap_name("pg-ha")
