"""The child process that runs one pgpitr operation through the engine, as the Prefect tasks do.

``python -m bench.runner backup|restore ... --out FILE`` calls ``take.take_backup`` (what the
``stream-base-backup`` task calls) or ``restore.plan`` + ``restore.restore`` (the steps of the
restore flow, in order), and writes a JSON record: the seconds inside the engine call, the seconds
spent importing, and this process's own peak RSS (VmHWM).  The parent times the whole process and
reads the process tree's peak RSS from ``wait4``.  With ``--profile FILE`` the call runs under
cProfile and the 25 most expensive functions (cumulative) are written beside the record.
"""

from __future__ import annotations

import argparse
import json
import time

_T0 = time.perf_counter()


def _vm_hwm_kb() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def _backup(args: argparse.Namespace) -> dict:
    from pgpitr.operations.backup import take
    from pgpitr.postgres.cluster import Cluster
    from pgpitr.repository import open_repository

    cluster = Cluster.get(args.cluster)
    repo = open_repository(args.repo, cluster.state.credentials_file)
    imported = time.perf_counter()
    result = take.take_backup(
        cluster,
        repo,
        name=args.name,
        log_backup=args.log_backup,
        compress_level=args.level,
        workers=args.workers,
    )
    return {
        "import_seconds": imported - _T0,
        "engine_seconds": time.perf_counter() - imported,
        "database_size": result.database_size,
        "stored_size": result.stored_size,
        "compression": result.compression,
    }


def _restore(args: argparse.Namespace) -> dict:
    from datetime import datetime

    from pgpitr.operations import restore
    from pgpitr.steps import Steps

    class Timed(Steps):
        """The engine's own restore, noting when the plan (every check) is done."""

        planned = 0.0

        def __call__(self, step, *args, **kwargs):  # type: ignore[no-untyped-def]
            result = super().__call__(step, *args, **kwargs)
            if step is restore.choose_backup:
                self.planned = time.perf_counter()
            return result

    imported = time.perf_counter()
    target = restore.RestoreTarget(time=datetime.fromisoformat(args.target))
    request = restore.RestoreRequest(args.new, args.source, target, backup_repo=args.repo)
    steps = Timed()
    result = restore.run(steps, request)
    planned = steps.planned
    return {
        "import_seconds": imported - _T0,
        "plan_seconds": planned - imported,
        "restore_seconds": time.perf_counter() - planned,
        "engine_seconds": time.perf_counter() - imported,
        "backup": result.backup,
        "last_commit": result.last_commit.isoformat() if result.last_commit else None,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.runner")
    parser.add_argument("--out", required=True)
    parser.add_argument("--profile", default=None)
    sub = parser.add_subparsers(dest="verb", required=True)
    b = sub.add_parser("backup")
    b.add_argument("--cluster", required=True)
    b.add_argument("--repo", required=True)
    b.add_argument("--name", required=True)
    b.add_argument("--workers", type=int, default=2)
    b.add_argument("--level", type=int, default=3)
    b.add_argument("--log-backup", action=argparse.BooleanOptionalAction, default=True)
    r = sub.add_parser("restore")
    r.add_argument("--source", required=True)
    r.add_argument("--repo", required=True)
    r.add_argument("--new", required=True)
    r.add_argument("--target", required=True)
    return parser


def main() -> int:
    args = _parser().parse_args()
    call = {"backup": _backup, "restore": _restore}[args.verb]
    if args.profile:
        import cProfile
        import io
        import pstats

        profiler = cProfile.Profile()
        record = profiler.runcall(call, args)
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(25)
        with open(args.profile, "w") as f:
            f.write(text.getvalue())
    else:
        record = call(args)
    record["self_peak_rss_kb"] = _vm_hwm_kb()
    with open(args.out, "w") as f:
        json.dump(record, f)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
