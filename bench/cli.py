"""``python -m bench``: set up, run every section in turn, clean up whatever happens, report."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bench import backups, pgbackrest, s3, sysinfo, walrestore
from bench.context import Context
from bench.proc import make_dir, remove_tree, server_user, stop_postmasters_under
from bench.results import RESULTS_DIR, Results
from bench.source import SourceCluster

SECTIONS = ("backup", "s3", "wal", "limits", "cli")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    p.add_argument("--scale", type=int, default=None, help="pgbench scale (default 50, ~750 MB)")
    p.add_argument("--runs", type=int, default=None, help="runs of each measurement (default 3)")
    p.add_argument("--segments", type=int, default=None, help="WAL segments (default 200)")
    p.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: scale 1, 1 run, 4 segments",
    )
    p.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated subset of {SECTIONS}"
    )
    p.add_argument("--profile", action="store_true", help="cProfile pgpitr's first runs")
    p.add_argument("--out", type=Path, default=None, help="JSON file (default bench/results/)")
    p.add_argument("--workdir", type=Path, default=Path("/var/tmp"), help="scratch space parent")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    scale = args.scale or (1 if args.quick else 50)
    runs = args.runs or (1 if args.quick else 3)
    segments = args.segments or (4 if args.quick else 200)
    only = [s for s in args.only.split(",") if s]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        print(f"unknown section(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    if os.geteuid() != 0:
        print("run the bench as root (it installs pgBackRest and runs servers as postgres)")
        return 2
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    out = args.out or RESULTS_DIR / f"{stamp}-scale{scale}{'-quick' if args.quick else ''}.json"

    pgbr_version = pgbackrest.ensure_installed()
    barman_version, barman_why = (None, "not measured: --only excludes s3")
    if "s3" in only:
        if args.quick and not (s3.BARMAN_VENV / "bin" / "barman-cloud-backup").exists():
            barman_why = "quick run: barman-cloud is not installed and --quick installs nothing"
        else:
            barman_version, barman_why = s3.ensure_barman()

    work = make_dir(args.workdir / f"pgpitr-bench-{os.getpid()}", None, 0o755)
    user = server_user()
    profile_dir = make_dir(RESULTS_DIR / f"profile-{stamp}") if args.profile else None
    results = Results(
        {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "scale": scale,
            "runs": runs,
            "segments": segments,
            "quick": args.quick,
            "machine": sysinfo.machine(args.workdir),
            "versions": sysinfo.versions(pgbr_version, barman_version),
            "settings": {
                "compression": "zstd level 3 on both sides (pgBackRest compress-type=zst, "
                "compress-level=3); pgpitr zstd:1 in the uncompressed comparison",
                "parallelism": "pgpitr take_backup(workers=N) = pg_basebackup client-zstd "
                "workers; pgBackRest process-max=N",
                "pgbackrest_wal": "archive-push async: process-max=2; restore and archive-get "
                "async: process-max=2",
                "pgpitr_wal": _walcli_constants(),
                "timing": "wall clock of the whole command (process start to exit), a child "
                "process per run; pgpitr through bench.runner calling the engine functions",
            },
        }
    )
    if barman_why:
        results.skip("backup.s3.barman.j2", barman_why)
    source = SourceCluster(work / "source-home", user)
    ctx = Context(work, user, source, results, runs, segments, args.quick, profile_dir)
    started = time.monotonic()
    rc = 0
    try:
        _step("create the source cluster and pgbench -i", lambda: source.create(scale))
        results.meta["sizes"] = source.sizes()
        sections: dict[str, Callable[[], None]] = {
            "backup": lambda: backups.backup_local(ctx),
            "s3": lambda: backups.backup_s3(ctx, barman_version is not None),
            "wal": lambda: walrestore.wal_and_restore(ctx),
            "limits": lambda: backups.limits(ctx),
            "cli": lambda: backups.cli_backup_once(ctx),
        }
        for name in SECTIONS:
            if name in only:
                try:
                    _step(name, sections[name])
                except Exception as exc:  # one failed section does not lose the others
                    traceback.print_exc()
                    results.skip(f"section.{name}", f"failed: {type(exc).__name__}: {exc}"[:2000])
                    rc = 1
    except BaseException as exc:
        traceback.print_exc()
        results.skip("bench", f"stopped: {type(exc).__name__}: {exc}"[:2000])
        rc = 1
    finally:
        try:
            source.remove()
        finally:
            stop_postmasters_under(work)
            remove_tree(work)
    results.meta["elapsed_seconds"] = round(time.monotonic() - started, 1)
    results.meta["sizes"] = {**results.meta.get("sizes", {}), **_stored_sizes(results)}
    results.write(out)
    results.print_table()
    print(f"results: {out}")
    return rc


def _step(name: str, call: Callable[[], None]) -> None:
    started = time.monotonic()
    print(f"== {name} ...", flush=True)
    call()
    print(f"== {name}: {time.monotonic() - started:.1f} s", flush=True)


def _walcli_constants() -> dict[str, int]:
    from pgpitr.wal import spool

    return {
        "FETCH_AHEAD": spool.FETCH_AHEAD,
        "THREADS": spool.THREADS,
    }


def _stored_sizes(results: Results) -> dict[str, int]:
    sizes = {}
    for key, entry in results.measurements.items():
        stored = [r["stored_bytes"] for r in entry["runs"] if r.get("stored_bytes")]
        if stored:
            sizes[f"stored_bytes.{key}"] = stored[0]
    database = [
        r["database_size"]
        for e in results.measurements.values()
        for r in e["runs"]
        if r.get("database_size")
    ]
    if database:
        sizes["pg_basebackup_reported_bytes"] = database[0]
    return sizes
