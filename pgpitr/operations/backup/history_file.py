"""The server's backup history file (``START WAL LOCATION`` ...): where a backup taken without
its WAL (``-X none``, log backup on) finds its WAL range, since pg_basebackup prints none then."""

from __future__ import annotations

import re
import time

from pgpitr.errors import PitrError
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import Repository
from pgpitr.wal import archive

_HISTORY_FIELD = re.compile(r"^([A-Z ]+): (.*)$", re.M)


def range_from_history_file(
    cluster: Cluster, repo: Repository, stanza: str, label: str, timeout: float = 60
) -> tuple[str, str, int]:
    """(start LSN, stop LSN, timeline) from the archived ``.backup`` file carrying our label.

    The server names the file (its ``pg_wal`` keeps the newest ones), and the repository's copy
    is read by that name: one listing of its own prefix, however large the archive.  The server
    archives it as the backup stops; with log backup on it reaches the repository right after
    the stop segment, for which pg_basebackup already waited."""
    return _read_history_file(repo, stanza, _history_file_name(cluster, label), label, timeout)


def _read_history_file(
    repo: Repository, stanza: str, name: str, label: str, timeout: float
) -> tuple[str, str, int]:
    deadline = time.monotonic() + timeout
    while True:
        for key, sha256 in archive.stored_versions(repo, stanza, name):
            fields = _history_fields(repo.get_document(key, sha256).decode(errors="replace"))
            if fields.get("LABEL", "").strip() == label:
                return (
                    fields["START WAL LOCATION"].split()[0],
                    fields["STOP WAL LOCATION"].split()[0],
                    int(fields["START TIMELINE"]),
                )
        if time.monotonic() > deadline:
            raise PitrError(
                f"the server's backup history file {name} for {label!r} did not reach the "
                f"repository within {timeout:.0f} s",
                hint="check that WAL archiving works (pgpitr cluster describe, the server log)",
            )
        time.sleep(0.2)


def _history_fields(text: str) -> dict[str, str]:
    return dict(_HISTORY_FIELD.findall(text))


def _history_file_name(cluster: Cluster, label: str) -> str:
    """The name of the backup history file the server wrote for ``label`` (the newest first:
    PostgreSQL removes the older ones once they are archived)."""
    with cluster.connect() as db:
        names = [
            row[0]
            for row in db.execute(
                "SELECT name FROM pg_ls_waldir() WHERE name LIKE '%.backup' ORDER BY name DESC"
            ).fetchall()
        ]
        for name in names:
            row = db.execute("SELECT pg_read_file(%s)", (f"pg_wal/{name}",)).fetchone()
            if row and _history_fields(row[0]).get("LABEL", "").strip() == label:
                return name
    raise PitrError(
        f"the server of {cluster.name!r} has no backup history file for {label!r} in pg_wal",
        hint="run the backup again; if it happens again, check the server log",
    )
