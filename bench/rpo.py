"""RPO (issue 16): how long after a commit returns the recoverable window passes it.

A cluster on PostgreSQL 15 with a full backup; nothing else commits (no agent, no heartbeat), so
a window ending at or after a time taken just before a commit holds that commit.  For each mode,
commit one row, then read the window as ``describe`` does (``catalog.recoverable_window``) until
its end passes the commit; the RPO sample is the time from the commit's return to that read
(``window_read_*``: how long each read took, so what of the RPO is describe's own cost).

- ``archive``: archive_command only, archive_timeout 60 s: a commit at a random moment of the
  cycle waits for the forced switch (fewer commits: each costs a minute);
- ``stream``: pg_receivewal under the supervisor (in this process, as the agent runs it), the
  partial segment uploaded every second, archive_command on as the fallback;
- ``sync``: the same with ``--synchronous`` and synchronous_standby_names.

Then the commit latency (one-row INSERT, autocommit, over the Unix socket) with and without
synchronous streaming.  ``python -m bench rpo [--commits N] [--archive-commits N]``; JSON in
bench/results/.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import shutil
import statistics
import time
from datetime import UTC, datetime

from bench.results import save
from pgpitr import cluster_repository
from pgpitr.catalog import window
from pgpitr.operations import backup as bk
from pgpitr.operations import create, log_backup
from pgpitr.postgres.cluster import Cluster
from pgpitr.steps import Steps
from pgpitr.wal import stream
from tests.conftest import reachable_tempdir

NAME = "rpo"


def _window_end(cluster: Cluster) -> datetime | None:
    repo = cluster_repository.repository(cluster)
    periods = window.recoverable_window(repo, NAME, cluster.bindir).periods
    return periods[-1][1] if periods else None


def _rpo_samples(
    cluster: Cluster, commits: int, timeout: float, spread: float, reads: list[float]
) -> list[float]:
    """RPO samples; ``reads`` gets the time each read of the window took (part of each sample)."""
    samples = []
    with cluster.connect() as db:
        db.execute("CREATE TABLE IF NOT EXISTS msg (id bigserial PRIMARY KEY, at timestamptz)")
        for _ in range(commits):
            time.sleep(random.uniform(0, spread))  # not in step with the receiver's tick
            before = datetime.now(UTC)
            db.execute("INSERT INTO msg (at) VALUES (clock_timestamp())")
            returned = time.monotonic()
            deadline = returned + timeout
            while True:
                started = time.monotonic()
                end = _window_end(cluster)
                reads.append(time.monotonic() - started)
                if end is not None and end >= before:
                    samples.append(round(time.monotonic() - returned, 3))
                    break
                if time.monotonic() > deadline:
                    samples.append(float("inf"))
                    break
                time.sleep(0.05)
    return samples


def _latencies(cluster: Cluster, commits: int) -> list[float]:
    samples = []
    with cluster.connect() as db:
        for _ in range(commits):
            started = time.perf_counter()
            db.execute("INSERT INTO msg (at) VALUES (clock_timestamp())")
            samples.append((time.perf_counter() - started) * 1000)
    return samples


def _summary(samples: list[float], unit: str) -> dict:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]
    return {
        "n": len(samples),
        "unit": unit,
        "median": round(statistics.median(ordered), 3),
        "p99": round(p99, 3),
        "min": round(ordered[0], 3),
        "max": round(ordered[-1], 3),
    }


def main(commits: int = 100, archive_commits: int = 10, latency_commits: int = 300) -> dict:
    home = reachable_tempdir("pgpitr-bench-rpo-")
    os.environ["PGPITR_HOME"] = str(home)
    out: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}",
        "postgresql": 15,
        "repository": "file (local disk)",
        "note": "RPO: seconds from a commit's return until the recoverable window (what "
        "describe reads) passes it; shared 2-core machine, other work running",
    }
    supervisor = None
    try:
        cluster = create.create(NAME)
        log_backup.set_log_backup(cluster, True)
        bk.run(Steps(), bk.BackupRequest(NAME))
        print("archive_command only (archive_timeout 60 s)", flush=True)
        reads: list[float] = []
        # a commit at a random moment of the 60 s cycle (the time since the previous switch)
        out["rpo_archive"] = _summary(_rpo_samples(cluster, archive_commits, 120, 60, reads), "s")
        print(out["rpo_archive"], flush=True)

        supervisor = stream.start()
        log_backup.set_streaming(cluster, True, False)
        print("streaming", flush=True)
        reads = []
        out["rpo_stream"] = _summary(_rpo_samples(cluster, commits, 60, 0.3, reads), "s")
        out["window_read_stream"] = _summary(reads, "s")
        print(out["rpo_stream"], flush=True)
        out["commit_latency_async"] = _summary(_latencies(cluster, latency_commits), "ms")
        print(out["commit_latency_async"], flush=True)

        log_backup.set_streaming(cluster, True, True)
        print("synchronous streaming", flush=True)
        reads = []
        out["rpo_sync"] = _summary(_rpo_samples(cluster, commits, 60, 0.3, reads), "s")
        out["window_read_sync"] = _summary(reads, "s")
        print(out["rpo_sync"], flush=True)
        out["commit_latency_sync"] = _summary(_latencies(cluster, latency_commits), "ms")
        print(out["commit_latency_sync"], flush=True)
        log_backup.set_streaming(cluster, True, False)
        out["ratios"] = {
            "sync_commit_latency_vs_async_median": round(
                out["commit_latency_sync"]["median"] / out["commit_latency_async"]["median"], 2
            )
        }
    finally:
        if supervisor is not None:
            supervisor[1].set()
            supervisor[0].join(timeout=60)
        try:
            Cluster.get(NAME).remove()
        except Exception as exc:  # noqa: BLE001 - report, then clean the rest
            print(f"cluster not removed: {exc}")
        shutil.rmtree(home, ignore_errors=True)
    path = save(out, "rpo")
    print(f"results: {path}")
    return out


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench rpo", description=__doc__)
    parser.add_argument("--commits", type=int, default=100, help="per streaming mode")
    parser.add_argument("--archive-commits", type=int, default=10, help="archive_command only")
    parser.add_argument("--latency-commits", type=int, default=300)
    args = parser.parse_args(argv)
    main(args.commits, args.archive_commits, args.latency_commits)
    return 0
