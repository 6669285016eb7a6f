"""``pgpitr wal-push`` and ``pgpitr wal-fetch``: PostgreSQL's archive and restore commands.

They run once per WAL file, so they import only what they need (argparse, the state file, the
repository's backend).  The work itself is done by one background worker per direction (see
walspool): a call starts it if none runs and waits only for its own file, so that the archiver is
never held up by the uploads of the files queued behind it, nor replay by the downloads ahead of it.
A file that is not PostgreSQL's (no ``.ready`` mark; a history file to fetch) is handled in the
call itself.

Exit codes follow PostgreSQL's rules: 0 archived/restored; 1 not done (the archiver retries, the
startup process treats the file as missing); 255 (> 125) makes recovery stop with an error, used
when a file exists but cannot be read back intact or the repository cannot be reached, so that a
restore never silently ends early.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ABORT_RECOVERY = 255


def _parser():
    import argparse

    parser = argparse.ArgumentParser(prog="pgpitr")
    parser.add_argument("--home", type=Path, default=None)
    sub = parser.add_subparsers(dest="verb", required=True)
    push = sub.add_parser("wal-push", help="archive a WAL file (archive_command)")
    push.add_argument("--cluster", required=True)
    push.add_argument("path", type=Path)
    fetch = sub.add_parser("wal-fetch", help="restore a WAL file (restore_command)")
    fetch.add_argument("--cluster", required=True)
    fetch.add_argument("name")
    fetch.add_argument("destination", type=Path)
    return parser


def _say(message: str) -> None:
    sys.stderr.write(f"pgpitr: {message}\n")


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from pgpitr import state as st

    if args.home:
        os.environ["PGPITR_HOME"] = str(args.home)
    try:
        try:
            cluster = st.ClusterState.load(args.cluster, args.home)
        except FileNotFoundError:
            _say(f"cluster {args.cluster!r} is unknown under {args.home or st.home()}")
            return 1 if args.verb == "wal-push" else ABORT_RECOVERY
        if args.verb == "wal-push":
            return push(cluster, args.path)
        return fetch(cluster, args.name, args.destination)
    except Exception as exc:
        from pgpitr.errors import PitrError

        if not isinstance(exc, PitrError):
            raise
        _say(str(exc))
        return 1 if args.verb == "wal-push" else ABORT_RECOVERY


def _open(url: object, cluster) -> object:
    from pgpitr.repository import open_repository

    return open_repository(url, cluster.credentials_file, cluster.encryption_key_file or None)


def _server_directory(cluster) -> Path:
    """The data directory of the server running this command: PostgreSQL runs archive and
    restore commands in it.  The state names one server; an HA cluster's command runs on
    whichever member is primary (or recovering), so there it is the working directory."""
    return Path(os.getcwd()) if cluster.patroni_url else cluster.datadir


def push(cluster, path: Path) -> int:
    if not path.is_absolute():
        path = _server_directory(cluster) / path
    from pgpitr.postgres.conf import PUSHED

    marker = cluster.spool / PUSHED / path.name
    if marker.exists():
        marker.unlink()
        return 0
    from functools import partial

    from pgpitr.wal import archive
    from pgpitr.wal import spool as wal_spool

    system_id = archive.system_identifier_of(_server_directory(cluster))
    info_marker = cluster.spool / f"archive-info-{system_id}"
    if not info_marker.exists():
        archive.check_archive_info(
            _open(cluster.repository, cluster),
            cluster.stanza,
            system_id,
            create={
                "cluster": cluster.name,
                "pg_version": cluster.pg_version,
                "wal_segment_size": cluster.wal_segment_size,
            },
        )
        info_marker.touch()

    spool = wal_spool.PushSpool(cluster.spool, path.parent)
    if not spool.is_ready(path.name):
        result = archive.push_file(_open(cluster.repository, cluster), cluster.stanza, path)
        if result.already_there:
            _say(f"{result.name} was already archived with the same content")
        return 0

    def worker() -> None:
        from pgpitr.wal import archive, index

        repo = _open(cluster.repository, cluster)
        # one index delta per batch, written before the batch is acknowledged (wal.push_file)
        journal = index.Journal(repo, cluster.stanza)
        spool.run(partial(archive.push_file, repo, cluster.stanza, journal=journal), journal.flush)
        if journal.deltas_written:
            index.compact(repo, cluster.stanza, cluster.wal_segment_size)

    reason = spool.wait(path.name, worker)
    if reason is not None:
        _say(reason)
        return 1
    return 0


def fetch(cluster, name: str, destination: Path) -> int:
    if not destination.is_absolute():
        destination = _server_directory(cluster) / destination
    spooled = cluster.spool / "fetched" / name
    if spooled.exists():
        os.rename(spooled, destination)
        return 0
    from functools import partial

    from pgpitr.errors import NotFound
    from pgpitr.wal import archive
    from pgpitr.wal import spool as wal_spool

    source = cluster.restore_source or {"repository": cluster.repository, "stanza": cluster.stanza}
    stanza = source["stanza"]
    if archive.SEGMENT_RE.fullmatch(name):
        spool = wal_spool.FetchSpool(cluster.spool, cluster.wal_segment_size)

        def worker() -> None:
            spool.run(partial(archive.fetch_file, _open(source["repository"], cluster), stanza))

        if spool.wait(name, destination, worker):
            return 0
    # a history file, or a segment the worker could not get: the repository's own answer
    try:
        archive.fetch_file(_open(source["repository"], cluster), stanza, name, destination)
    except NotFound:
        return 1
    return 0
