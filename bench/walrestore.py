"""WAL archiving and restore to a time.

One round per run: fresh repositories for pgpitr, pgBackRest (asynchronous) and pgBackRest
(synchronous); a full backup by pgpitr and by pgBackRest while both archive every segment (an
untimed ``A && B`` archive_command, so that each repository holds an unbroken chain); then pgbench
writes ``segments`` WAL segments while the archive_command is ``/bin/false``, so they wait as
``.ready`` files.  Each tool in turn (alternating order) then gets its archive_command and the
clock runs until no ``.ready`` file is left: PostgreSQL marks a segment ``.done`` only once the
command acknowledged it as stored.  Between tools the same segments are queued again (``.done``
back to ``.ready``), so every tool archives the very same files.

The restores that follow use each tool's backup and those segments, to a target time written at
about 95 % of them, and are timed from the command's start until the new server is promoted and
accepts connections.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

from bench.context import Context, order
from bench.pgbackrest import PgBackRest, stop_server
from bench.proc import free_port, make_dir

VARIANTS = ["pgpitr", "pgbackrest.async", "pgbackrest.sync"]
LABELS = {
    "pgpitr": "pgpitr wal-push (its archive_command), file repo, zstd:3",
    "pgbackrest.async": "pgbackrest archive-push, archive-async=y, process-max=2, zst:3",
    "pgbackrest.sync": "pgbackrest archive-push, archive-async=n, zst:3",
}
LIMIT_LABEL = "the same segments framed (zstd:3) and hashed in-process, push worker's threads"


def wal_and_restore(ctx: Context) -> None:
    for run in range(ctx.runs):
        with ctx.rundir(f"wal-{run}") as rundir:
            _round(ctx, rundir, run)
        ctx.source.checkpoint()
        ctx.source.checkpoint()


def _round(ctx: Context, rundir: Path, run: int) -> None:
    from pgpitr.postgres import conf

    src = ctx.source
    repo = ctx.repo_dir(rundir)
    url = f"file://{repo}"
    tools = {
        mode: PgBackRest(
            rundir / f"pgbackrest-{mode}",
            ctx.user,
            pg_path=src.datadir,
            socket_dir=src.socket_dir,
            port=src.port,
            process_max=2,
            archive_async=mode == "async",
        )
        for mode in ("async", "sync")
    }
    for tool in tools.values():
        tool.stanza_create()
    src.use_pgpitr_repository(url)
    pgpitr_command = conf.archive_command(src.home, "bench-src", True)
    src.set_archive(f"( {pgpitr_command} ) && ( {tools['async'].archive_command()} )")
    ctx.pgpitr_backup(rundir, url, name=f"bench-wal-{run}", workers=2)
    tools["async"].backup(rundir / "pgbackrest-backup")

    target = src.generate_wal(ctx.segments)
    names = src.ready_names()
    ctx.results.add(
        "limit.wal.compress_hash",
        LIMIT_LABEL,
        _compress_and_hash(src.datadir / "pg_wal", names),
        segments=len(names),
    )
    commands = {
        "pgpitr": pgpitr_command,
        "pgbackrest.async": tools["async"].archive_command(),
        "pgbackrest.sync": tools["sync"].archive_command(),
    }
    for i, variant in enumerate(order(VARIANTS, run)):
        if i:
            src.pause_archiving()
            src.mark_ready_again(names)
            src.wait_archiver_idle()
        started = time.perf_counter()
        src.set_archive(commands[variant])
        src.wait_archived(timeout=3600)
        seconds = time.perf_counter() - started
        ctx.results.add(f"wal.{variant}", LABELS[variant], seconds, segments=len(names))

    for variant in order(["pgpitr", "pgbackrest"], run):
        if variant == "pgpitr":
            _restore_pgpitr(ctx, rundir, url, target.isoformat(), run)
        else:
            _restore_pgbackrest(ctx, rundir, tools["async"], target)


def _compress_and_hash(pg_wal: Path, names: list[str], level: int = 3) -> float:
    """Seconds to frame (pgpitr's zstd frame, its level) and hash the segments NAMES with the
    push worker's threads, in this process, from the page cache, storing nothing: this
    machine's limit for archiving them (DESIGN: pgpitr's archiving within 10 % of it)."""
    import hashlib
    import mmap
    from concurrent.futures import ThreadPoolExecutor

    from pgpitr.repository.base import document_frame
    from pgpitr.wal.spool import THREADS

    def one(name: str) -> None:
        with open(pg_wal / name, "rb") as f:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                hashlib.sha256(document_frame(data, level)).digest()

    started = time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(one, names))
    return time.perf_counter() - started


def _restore_pgpitr(ctx: Context, rundir: Path, url: str, target: str, run: int) -> None:
    home = make_dir(rundir / "restore-home", ctx.user, 0o755)  # the restore's own PGPITR_HOME
    verb = ["restore", "--source", "bench-src", "--repo", url, "--new", "bench-restored"]
    record = ctx.runner(
        [*verb, "--target", target],
        rundir,
        home=home,
        profile="restore" if run == 0 else None,
    )
    seconds = record.pop("seconds")
    ctx.results.add(
        "restore.pgpitr",
        "pgpitr restore.plan + restore.restore to a time (wal-fetch), until promoted",
        seconds,
        target=target,
        **record,
    )


def _restore_pgbackrest(ctx: Context, rundir: Path, tool: PgBackRest, target: datetime) -> None:
    pgdata = rundir / "restored" / "data"
    try:
        parts = tool.restore_and_start(
            target, pgdata, rundir / "restored-run", free_port(), rundir / "restore"
        )
    finally:
        stop_server(pgdata, ctx.user)
    seconds = parts.pop("seconds")
    ctx.results.add(
        "restore.pgbackrest",
        "pgbackrest restore --type=time (archive-get async, process-max=2) + pg_ctl start "
        "until promoted",
        seconds,
        target=target.isoformat(),
        **parts,
    )
