"""Full backups: to a local directory (pgpitr vs pgBackRest), to S3 (pgpitr vs barman-cloud), the
machine's ceiling (pg_basebackup uncompressed, dd), and once through the CLI (a Prefect flow).

Log backup is on for pgpitr as in the product: pg_basebackup runs with ``-X none`` and the server
waits until the stop segment is archived by pgpitr's own archive_command; pgBackRest waits for
its archive-push the same way (archive-check), barman for barman-cloud-wal-archive.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from bench import s3
from bench.context import Context, environ_with, order
from bench.pgbackrest import PgBackRest
from bench.proc import PG_BINDIR, ROOT, du, timed
from bench.source import SourceCluster

LOCAL_VARIANTS = ["pgpitr.w1", "pgbackrest.p1", "pgpitr.w2", "pgbackrest.p2"]


def backup_local(ctx: Context) -> None:
    for run in range(ctx.runs):
        for variant in order(LOCAL_VARIANTS, run):
            tool, par = variant.split(".")
            n = int(par[1:])
            with ctx.rundir(f"backup-{tool}-{par}-{run}") as rundir:
                if tool == "pgpitr":
                    _pgpitr_local(ctx, rundir, n, run)
                else:
                    _pgbackrest_local(ctx, rundir, n)
            ctx.source.checkpoint()


def _pgpitr_local(ctx: Context, rundir: Path, workers: int, run: int) -> None:
    repo = ctx.repo_dir(rundir)
    url = f"file://{repo}"
    ctx.source.use_pgpitr_repository(url)
    record = ctx.pgpitr_backup(
        rundir,
        url,
        name=f"bench-w{workers}-{run}",
        workers=workers,
        profile=f"backup-w{workers}" if run == 0 else None,
    )
    record["stored_bytes"] = du(repo / "bench-src" / "backups")
    ctx.results.add(
        f"backup.local.pgpitr.w{workers}",
        f"pgpitr take_backup, file repo, zstd:3, workers={workers}",
        **_pop_seconds(record),
    )


def _pgbackrest_local(ctx: Context, rundir: Path, process_max: int) -> None:
    src = ctx.source
    br = PgBackRest(
        rundir / "pgbackrest",
        ctx.user,
        pg_path=src.datadir,
        socket_dir=src.socket_dir,
        port=src.port,
        process_max=process_max,
    )
    br.stanza_create()
    src.set_archive(br.archive_command())
    seconds = br.backup(rundir / "backup")
    ctx.results.add(
        f"backup.local.pgbackrest.p{process_max}",
        f"pgbackrest backup --type=full, posix repo, zst:3, process-max={process_max}",
        seconds,
        stored_bytes=du(br.repo / "backup"),
    )


def backup_s3(ctx: Context, barman_ready: bool) -> None:
    variants = ["pgpitr"] + (["barman"] if barman_ready else [])
    for run in range(ctx.runs):
        for variant in order(variants, run):
            with (
                ctx.rundir(f"s3-{variant}-{run}") as rundir,
                s3.MotoServer(rundir / "moto.log") as moto,
                environ_with(s3.CREDENTIALS),
            ):
                prefix = f"{variant}-{run}"
                if variant == "pgpitr":
                    url = moto.pgpitr_url(prefix)
                    ctx.source.use_pgpitr_repository(url)
                    record = ctx.pgpitr_backup(
                        rundir, url, name=f"bench-s3-{run}", workers=2, env=s3.CREDENTIALS
                    )
                    record["stored_bytes"] = moto.stored_bytes(f"{prefix}/bench-src/backups/")
                    ctx.results.add(
                        "backup.s3.pgpitr.w2",
                        "pgpitr take_backup, S3 (moto on 127.0.0.1), zstd:3, workers=2",
                        **_pop_seconds(record),
                    )
                else:
                    ctx.source.set_archive(s3.barman_archive_command(moto.endpoint, prefix))
                    seconds = s3.barman_backup(
                        moto.endpoint,
                        prefix,
                        ctx.source.socket_dir,
                        ctx.source.port,
                        2,
                        ctx.user,
                        rundir / "barman",
                    )
                    ctx.results.add(
                        "backup.s3.barman.j2",
                        "barman-cloud-backup, S3 (moto), lz4 (no zstd in barman-cloud), jobs=2",
                        seconds,
                        stored_bytes=moto.stored_bytes(f"{prefix}/bench/base/"),
                    )
                ctx.source.set_archive("/bin/true")  # moto stops with this block
            ctx.source.checkpoint()


def limits(ctx: Context) -> None:
    """pg_basebackup -Ft uncompressed vs pgpitr uncompressed, and both at zstd level 1 (-X fetch
    everywhere), and dd."""
    src = ctx.source
    src.set_archive("/bin/true")
    size = du(src.datadir) - du(src.datadir / "pg_wal")  # what a base backup reads
    blocks = max(1, size // (8 << 20))
    for run in range(ctx.runs):
        variants = ["pg_basebackup", "pgpitr", "pgpitr_none", "pg_basebackup_zstd1", "dd"]
        for variant in order(variants, run):
            with ctx.rundir(f"limit-{variant}-{run}") as rundir:
                if variant == "pg_basebackup_zstd1":
                    t = timed(
                        [
                            *_basebackup_argv(src, "-"),
                            "--compress",
                            "client-zstd:level=1,workers=2",
                        ],
                        timeout=7200,
                        log=rundir / "stream",  # stdout, the compressed tar, lands in stream.out
                    )
                    ctx.results.add(
                        "limit.pg_basebackup.zstd1",
                        "pg_basebackup -Ft -X fetch -D - with pgpitr's compression (client-zstd "
                        "level 1, 2 workers) into a local file: pgpitr without pgpitr",
                        t.seconds,
                        stored_bytes=(rundir / "stream.out").stat().st_size,
                    )
                elif variant == "pg_basebackup":
                    out = rundir / "base"
                    t = timed(
                        _basebackup_argv(src, out),
                        timeout=7200,
                        log=rundir / "pg_basebackup",
                    )
                    ctx.results.add(
                        "limit.pg_basebackup.none",
                        "pg_basebackup -Ft -X fetch, no compression, local disk",
                        t.seconds,
                        stored_bytes=du(out),
                    )
                elif variant in ("pgpitr", "pgpitr_none"):
                    level = 1 if variant == "pgpitr" else 0
                    repo = ctx.repo_dir(rundir)
                    record = ctx.pgpitr_backup(
                        rundir,
                        f"file://{repo}",
                        name=f"bench-level{level}-{run}",
                        workers=2,
                        level=level,
                        log_backup=False,
                    )
                    record["stored_bytes"] = du(repo / "bench-src" / "backups")
                    key, label = (
                        ("backup.local.pgpitr.zstd1", "pgpitr take_backup, zstd:1, workers=2")
                        if level
                        else ("backup.local.pgpitr.none", "pgpitr take_backup, no compression")
                    )
                    ctx.results.add(key, f"{label}, -X fetch", **_pop_seconds(record))
                else:
                    _dd(ctx, rundir, blocks)
            src.checkpoint()


def _basebackup_argv(src: SourceCluster, target: Path | str) -> list[str | Path | int]:
    return [
        PG_BINDIR / "pg_basebackup",
        "-h",
        src.socket_dir,
        "-p",
        src.port,
        "-U",
        "postgres",
        "-D",
        target,
        "-Ft",
        "-X",
        "fetch",
        "--checkpoint",
        "fast",
        "--manifest-checksums",
        "CRC32C",
    ]


def _dd(ctx: Context, rundir: Path, blocks: int) -> None:
    path = rundir / "dd.bin"
    write = timed(
        ["dd", "if=/dev/zero", f"of={path}", "bs=8M", f"count={blocks}", "conv=fdatasync"],
        timeout=3600,
    )
    read = timed(["dd", f"if={path}", "of=/dev/null", "bs=8M", "iflag=direct"], timeout=3600)
    size = blocks * (8 << 20)
    ctx.results.add(
        "limit.dd.write",
        "dd sequential write, size of the data directory without pg_wal, fdatasync",
        write.seconds,
        bytes=size,
        mb_per_s=round(size / write.seconds / 1e6, 1),
    )
    ctx.results.add(
        "limit.dd.read",
        "dd sequential read, O_DIRECT (no page cache)",
        read.seconds,
        bytes=size,
        mb_per_s=round(size / read.seconds / 1e6, 1),
    )


def cli_backup_once(ctx: Context) -> None:
    """``pgpitr cluster backup`` end to end: process start, Prefect flow, engine, WAL confirm."""
    from cli import runner

    if runner.answers(runner.LOCAL_SERVER):
        ctx.results.skip(
            "cli.backup",
            "a Prefect server answers on 127.0.0.1:4200 (not ours): the CLI would run the flow "
            "there, so the end-to-end measurement was skipped",
        )
        return
    with ctx.rundir("cli-backup") as rundir:
        repo = ctx.repo_dir(rundir)
        ctx.source.use_pgpitr_repository(f"file://{repo}")
        prefect_home = rundir / "prefect"
        prefect_home.mkdir()
        env = {
            "PGPITR_HOME": str(ctx.source.home),
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
            "PYTHONPATH": str(ROOT),
        }
        saved_api = os.environ.pop("PREFECT_API_URL", None)  # the temporary local server
        try:
            t = timed(
                [sys.executable, "-m", "pgpitr", "cluster", "backup", "bench-src"],
                env=env,
                timeout=7200,
                cwd=ROOT,
                log=rundir / "cli",
            )
        finally:
            if saved_api is not None:
                os.environ["PREFECT_API_URL"] = saved_api
        ctx.results.add(
            "cli.backup",
            "`pgpitr cluster backup` via the CLI: includes Prefect orchestration (temporary "
            "local server), WAL switch confirmation; file repo, zstd:3, workers=2",
            t.seconds,
            peak_rss_kb=t.peak_rss_kb,
            stored_bytes=du(repo / "bench-src" / "backups"),
        )
    ctx.source.checkpoint()


def _pop_seconds(record: dict) -> dict:
    record = dict(record)
    return {"seconds": record.pop("seconds"), **record}
