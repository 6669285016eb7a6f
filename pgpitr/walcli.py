"""``pgpitr wal-push`` and ``pgpitr wal-fetch``: PostgreSQL's archive and restore commands.

They run once per WAL file, so they import only what they need (argparse, the state file, the
repository's backend) and speed up the queue behind them:

- wal-push, given one file, also pushes up to PUSH_AHEAD other files PostgreSQL has marked
  ``.ready``, in parallel, and leaves a marker for each in the spool; when PostgreSQL then asks for
  one of those, the call finds the marker and returns at once, without touching the repository.
- wal-fetch, asked for one segment, also fetches the segments after it in parallel into the
  spool; the following calls find them there.

Exit codes follow PostgreSQL's rules: 0 archived/restored; 1 not done (the archiver retries, the
startup process treats the file as missing); 255 (> 125) makes recovery stop with an error, used
when a file exists but cannot be read back intact or the repository cannot be reached, so that a
restore never silently ends early.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

PUSH_AHEAD = 32  # measured in bench/: fewer interpreter starts per segment than 16
FETCH_AHEAD = 16  # measured in bench/: replay waits less with a deeper spool
THREADS = 4
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
        cluster = st.ClusterState.load(args.cluster, args.home)
    except FileNotFoundError:
        _say(f"cluster {args.cluster!r} is unknown under {args.home or st.home()}")
        return 1 if args.verb == "wal-push" else ABORT_RECOVERY
    try:
        if args.verb == "wal-push":
            return push(cluster, args.path)
        return fetch(cluster, args.name, args.destination)
    except Exception as exc:
        from pgpitr.errors import PitrError

        if not isinstance(exc, PitrError):
            raise
        _say(str(exc))
        return 1 if args.verb == "wal-push" else ABORT_RECOVERY


def _open(url: str, cluster) -> object:
    from pgpitr.repository import open_repository

    return open_repository(url, credentials_file=cluster.credentials_file)


def push(cluster, path: Path) -> int:
    if not path.is_absolute():
        path = cluster.datadir / path
    pushed = cluster.spool / "pushed"
    marker = pushed / path.name
    if marker.exists():
        marker.unlink()
        return 0
    from concurrent.futures import ThreadPoolExecutor

    from pgpitr import wal

    repo = _open(cluster.repository, cluster)
    system_id = wal.system_identifier_of(cluster.datadir)
    info_marker = cluster.spool / f"archive-info-{system_id}"
    if not info_marker.exists():
        wal.check_archive_info(
            repo,
            cluster.stanza,
            system_id,
            create={
                "cluster": cluster.name,
                "pg_version": cluster.pg_version,
                "wal_segment_size": cluster.wal_segment_size,
            },
        )
        info_marker.touch()

    others = _ready_files(path, pushed)
    with ThreadPoolExecutor(THREADS) as pool:
        own = pool.submit(wal.push_file, repo, cluster.stanza, path)
        ahead = [(p, pool.submit(wal.push_file, repo, cluster.stanza, p)) for p in others]
        result = own.result()  # raises: PostgreSQL keeps the file and retries
        pushed.mkdir(exist_ok=True)
        for other, future in ahead:
            if future.exception() is None:
                (pushed / other.name).touch()
    if result.already_there:
        _say(f"{result.name} was already archived with the same content")
    return 0


def _ready_files(path: Path, pushed: Path) -> list[Path]:
    status = path.parent / "archive_status"
    try:
        names = sorted(
            entry.name[: -len(".ready")]
            for entry in os.scandir(status)
            if entry.name.endswith(".ready")
        )
    except FileNotFoundError:
        return []
    chosen = []
    for name in names:
        if name == path.name or (pushed / name).exists():
            continue
        chosen.append(path.parent / name)
        if len(chosen) >= PUSH_AHEAD - 1:
            break
    return chosen


def fetch(cluster, name: str, destination: Path) -> int:
    if not destination.is_absolute():
        destination = cluster.datadir / destination
    spool = cluster.spool / "fetched"
    spooled = spool / name
    if spooled.exists():
        os.rename(spooled, destination)
        return 0
    from concurrent.futures import ThreadPoolExecutor

    from pgpitr import wal
    from pgpitr.errors import NotFound
    source = cluster.restore_source or {"repository": cluster.repository, "stanza": cluster.stanza}
    repo = _open(source["repository"], cluster)
    stanza = source["stanza"]
    ahead = wal.following_segments(name, cluster.wal_segment_size, FETCH_AHEAD)
    if ahead:
        spool.mkdir(exist_ok=True)
    with ThreadPoolExecutor(THREADS) as pool:
        own = pool.submit(wal.fetch_file, repo, stanza, name, destination)
        futures = [
            pool.submit(wal.fetch_file, repo, stanza, n, spool / n)
            for n in ahead
            if not (spool / n).exists()
        ]
        try:
            own.result()
        except NotFound:
            for future in futures:
                future.cancel()
            return 1
        for future in futures:
            future.exception()  # a missing or damaged file ahead is found when it is asked for
    return 0
