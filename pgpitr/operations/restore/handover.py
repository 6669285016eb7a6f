"""Handing a restored data directory over to another manager (Patroni's custom bootstrap).

A restore with ``into_datadir`` runs as any other into a temporary pgpitr cluster, so that every
check holds (the target inside the window, where recovery stopped), with its log backup off: it
archives nothing under the temporary name.  Then ``hand_over`` stops it cleanly, moves its data
directory to ``into_datadir``, takes pgpitr's own files out of it and forgets the temporary
cluster.  ``check_into_datadir`` refuses, before anything is made, a directory the move could
not fill.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from pgpitr.errors import AlreadyExists, ClusterStateError, InvalidInput, NotFound
from pgpitr.postgres import conf
from pgpitr.postgres.cluster import Cluster

if TYPE_CHECKING:
    from pgpitr.operations.restore.planning import Plan

log = logging.getLogger(__name__)

#: pgpitr's files in a data directory it manages; a handed-over directory keeps none of them.
PGPITR_FILES = (conf.MANAGED, conf.RECOVERY)


def check_into_datadir(into: str) -> Path:
    """Refuse a directory the hand-over could not fill: not absolute, not empty, or whose
    parent is missing or not writable by this process's user (the one that moves the data)."""
    path = Path(into)
    if not path.is_absolute():
        raise InvalidInput(
            f"the data directory {into!r} is not an absolute path",
            hint="give the full path, as Patroni's postgresql.data_dir",
        )
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise AlreadyExists(
            f"{path} exists and is not a directory",
            hint="remove it, or give a data directory that does not exist yet",
        )
    if path.is_dir() and any(path.iterdir()):
        raise AlreadyExists(
            f"the data directory {path} is not empty",
            hint="a bootstrap fills a new data directory: remove its content first",
        )
    parent = path.parent
    if not parent.is_dir():
        raise NotFound(
            f"the parent directory of {path} does not exist",
            hint=f"create {parent} for the user pgpitr runs as",
        )
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ClusterStateError(
            f"the user pgpitr runs as cannot write to {parent}, where {path.name} goes",
            hint=f"give that user write access to {parent}",
        )
    return path


def hand_over(p: Plan, new_cluster: str) -> str:
    """Stop the restored server (fast), move its data directory to ``p.into_datadir``, take
    pgpitr's files out and forget the temporary cluster; the directory.  All or nothing: a
    failure removes whatever this step created at the destination (the rollback then removes
    the temporary cluster)."""
    assert p.into_datadir is not None
    cluster = Cluster.get(new_cluster)
    into = check_into_datadir(p.into_datadir)  # checked again: time passed since the plan
    mode = into.stat().st_mode & 0o7777 if into.is_dir() else None  # an empty one stays so
    cluster.stop(mode="fast")  # a clean shutdown: the new manager starts without crash recovery
    try:
        how = _move(cluster.state.datadir, into)
        strip_pgpitr_files(into, cluster.owner)
        # renamed away first: the name is free at once, and a WAL worker still winding down
        # (the fetch worker idles a few seconds) writes by the old path, so into nothing
        forgotten = cluster.state.dir.with_name(f".{cluster.name}.handed-over-{os.getpid()}")
        os.rename(cluster.state.dir, forgotten)
    except BaseException:
        _undo_move(cluster.state.datadir, into, mode)
        raise
    shutil.rmtree(forgotten, ignore_errors=True)
    if forgotten.exists():
        log.warning("could not remove all of %s (the temporary cluster's files)", forgotten)
    log.info(
        "handed the restored data over to %s (%s); forgot the temporary cluster %s",
        into,
        how,
        cluster.name,
    )
    return str(into)


def strip_pgpitr_files(datadir: Path, owner: tuple[int, int] | None) -> None:
    """Take pgpitr's includes out of postgresql.conf and remove its own files; the rest of the
    configuration stays as restored (its next manager rewrites what it owns)."""
    postgresql_conf = datadir / "postgresql.conf"
    if postgresql_conf.exists():
        text = postgresql_conf.read_text()
        kept = text.replace(conf.INCLUDE_LINES, "")
        if kept != text:
            conf.write_file(postgresql_conf, kept.rstrip("\n") + "\n", owner)
    for name in PGPITR_FILES:
        (datadir / name).unlink(missing_ok=True)


def _move(source: Path, into: Path) -> str:
    """Rename when both sides share a file system (an empty ``into`` is replaced), else copy
    with modes and times, then remove the source."""
    try:
        os.rename(source, into)
        return "renamed"
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    shutil.copytree(source, into, symlinks=True, dirs_exist_ok=True)
    shutil.rmtree(source)
    return "copied across file systems"


def _undo_move(source: Path, into: Path, mode: int | None) -> None:
    """Leave ``into`` as it was (absent, or empty with ``mode``) and the data back in the
    temporary cluster, which the rollback removes."""
    if into.is_dir() and not source.exists():
        try:
            os.rename(into, source)  # a rename that succeeded: put the data back
        except OSError:
            pass
    shutil.rmtree(into, ignore_errors=True)
    if mode is not None:
        into.mkdir(exist_ok=True)
        into.chmod(mode)
    log.warning("hand-over failed: removed what it created at %s", into)
