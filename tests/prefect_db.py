"""Where the suite's Prefect servers start from: a copy of a database an earlier one migrated.

A Prefect server started on an empty SQLite database runs all of Prefect's migrations and
registers its block types before it answers: about 8 of the 14 CPU seconds its start costs
(measured 2026-12-07), paid by each of the dozen servers a CI run starts (one per test worker,
the root part's and the version matrix's) on a machine whose two cores the suite keeps busy.

The first server of a user's run starts on an empty database as always; once it answers, a copy
of its database (SQLite's backup, consistent while the server writes) is kept, and the next
servers start on copies of it: the schema and the rows a start writes, which Prefect then finds
up to date.  The copy is kept per user and Prefect version in a directory of the temporary
directory that only that user may write; anything else found there is not used.  A server
started from no copy, or from an older one, still migrates what it lacks.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path


def _directory() -> Path | None:
    """The user's directory for the copy, made if missing; None when it is not the user's own
    or others may write it (then no copy is read or kept)."""
    path = Path(tempfile.gettempdir()) / f"pgpitr-prefect-databases-{os.geteuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o022:
        return None
    return path


def _kept() -> Path | None:
    import prefect

    directory = _directory()
    return None if directory is None else directory / f"prefect-{prefect.__version__}.db"


@contextmanager
def started_from_kept_copy(database: Path) -> Iterator[bool]:
    """Put a copy of the kept database at ``database`` (a server's, not started yet) and say if
    there was one.  Held while the caller starts its server: the test workers that start theirs
    at the same moment wait for the first one's database instead of each migrating its own."""
    kept = _kept()
    if kept is None:
        yield False
        return
    with open(kept.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        copied = kept.exists()
        if copied:
            shutil.copyfile(kept, database)
        yield copied


def keep(database: Path) -> None:
    """Keep a copy of a started server's database for the next servers."""
    kept = _kept()
    if kept is None:
        return
    partial = kept.with_suffix(f".{os.getpid()}.partial")
    try:
        with (
            closing(sqlite3.connect(database)) as source,
            closing(sqlite3.connect(partial)) as copy,
        ):
            source.backup(copy)
        os.replace(partial, kept)
    finally:
        partial.unlink(missing_ok=True)
