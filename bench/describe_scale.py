"""``describe`` at 1k, 10k and 100k archived WAL segments, on the file repository and on S3
(moto's server on 127.0.0.1): its time and its repository requests (issue 15; DESIGN's target:
at 100k within 1.2x of the time at 1k, and the same number of requests).

``python -m bench describe-scale [file|s3] [COUNT…]`` (or ``python -m bench.describe_scale``);
JSON in bench/results/.

How the archive is made.  Archiving 100,000 real segments would take hours, so for each count N
one real cluster (PostgreSQL 15) is made whose recoverable window *spans* N synthetic segments:

1. a real cluster with log backup on takes a real backup, and its WAL is archived by the
   archiver as usual (wal-push and its worker, which keep the catalog index);
2. the server stops, and ``pg_resetwal -l`` moves its next WAL segment N + 1 segments ahead;
3. the N segments in the hole are written straight into the repository with the real naming
   (``STANZA/wal/TTTTTTTTLLLLLLLL/<name>-<sha256>.zst``), each a copy of one tiny zstd frame
   (describe never reads them: it follows the chain in the index and lists the log directories
   of the chain's start and end), and the catalog index is rebuilt from a listing, as
   ``pgpitr repository reindex`` does;
4. the server starts again, commits, and archives a few real segments after the hole, so the
   window runs from the backup over the N synthetic segments to a real commit at the end; then
   it stops, so that all counts are measured with the same index deltas (a running server
   archives now and then, and describe reads each delta until the next fold).

Then ``window.describe`` (what ``pgpitr cluster describe`` prints, in this process) of each
cluster in turn, ``RUNS`` rounds (so that the shared machine's noise falls on every count alike):
the median time and the requests of one run, by kind.  For reference, the time and
the LIST pages of one full listing of the stanza's WAL (what every describe did before the index).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

from bench.results import save
from pgpitr import cluster_repository
from pgpitr.operations import create, log_backup
from pgpitr.operations import describe as w
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import run
from pgpitr.repository.base import REQUESTS, document_frame
from pgpitr.wal import archive, index
from tests import engine
from tests.conftest import reachable_tempdir
from tests.pg import archive_now, sql

COUNTS = (1_000, 10_000, 100_000)
RUNS = 7


def _requests_of(fn):  # type: ignore[no-untyped-def]
    before = dict(REQUESTS)
    started = time.monotonic()
    value = fn()
    seconds = time.monotonic() - started
    made: dict[str, int] = {}
    for (_backend, kind), n in REQUESTS.items():
        if n - before.get((_backend, kind), 0):
            made[kind] = made.get(kind, 0) + n - before.get((_backend, kind), 0)
    return value, seconds, made


def _fill(repo, stanza: str, first: archive.Segment, count: int, segment_size: int) -> None:
    """``count`` synthetic segments from ``first`` on, named as pushes name them."""
    import hashlib

    frame = document_frame(b"synthetic")
    sha = hashlib.sha256(frame).hexdigest()
    keys = [
        archive.object_key(stanza, archive.Segment(first.timeline, n).name(segment_size), sha)
        for n in range(first.number, first.number + count)
    ]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda key: repo.put_frame(key, frame), keys, chunksize=64))


def prepare(name: str, repository: str, count: int) -> dict:
    """A running cluster whose window spans ``count`` synthetic segments (see the docstring)."""
    cluster = create.create(name, repository_url=repository)
    log_backup.set_log_backup(cluster, True)
    sql(name, "CREATE TABLE msg (id int PRIMARY KEY)")
    sql(name, "INSERT INTO msg VALUES (1)")
    engine.backup(cluster)
    last = archive_now(name)
    size = cluster.state.wal_segment_size
    cluster.stop()
    hole = archive.Segment.parse(last, size).next()
    after = archive.Segment(hole.timeline, hole.number + count)
    run(
        [str(cluster.bindir / "pg_resetwal"), "-l", after.name(size), str(cluster.state.datadir)],
        user=cluster.user,
    )
    repo = cluster_repository.repository(cluster)
    started = time.monotonic()
    _fill(repo, cluster.state.stanza, hole, count, size)
    fill_seconds = time.monotonic() - started
    index.rebuild(repo, cluster.state.stanza, size)  # what `pgpitr repository reindex` does
    cluster.start(move_if_port_taken=True)  # another server may have taken it meanwhile
    cluster.wait_ready()
    for row in (2, 3):
        sql(name, "INSERT INTO msg VALUES (%s)", (row,))
        archive_now(name)
    w.describe(Cluster.get(name))  # warm: the index's compaction, the page cache
    # stopped: a running server archives a segment now and then (archive_timeout after a
    # checkpoint), and each push adds an index delta that describe reads until it is folded
    cluster.stop()
    listing, list_seconds, list_requests = _requests_of(
        lambda: sum(1 for _ in repo.list(f"{cluster.state.stanza}/wal/"))
    )
    return {
        "segments": count,
        "wal_objects": listing,
        "full_listing_seconds": round(list_seconds, 3),
        "full_listing_requests": list_requests,
        "fill_seconds": round(fill_seconds, 1),
    }


def measure(names: dict[int, str], results: dict[str, dict]) -> None:
    """describe of each cluster in turn, RUNS rounds (the machine's noise falls on all)."""
    times: dict[int, list[float]] = {count: [] for count in names}
    for _ in range(RUNS):
        for count, name in names.items():
            c = Cluster.get(name)
            info, seconds, requests = _requests_of(lambda c=c: w.describe(c))
            times[count].append(seconds)
            (start, end), *_ = info.as_json()["recoverable_time"]
            results[str(count)].update(
                {
                    "describe_requests": requests,
                    "describe_requests_total": sum(requests.values()),
                    "window": [start, end],
                }
            )
    for count in names:
        results[str(count)]["describe_seconds"] = [round(t, 4) for t in times[count]]
        results[str(count)]["describe_seconds_median"] = round(statistics.median(times[count]), 4)
        print(json.dumps({names[count]: results[str(count)]}), flush=True)


def _run_backend(prefix: str, url: str, counts: tuple[int, ...]) -> dict[str, dict]:
    names = {count: f"{prefix}{count}" for count in counts}
    results = {str(count): prepare(names[count], url, count) for count in counts}
    try:
        measure(names, results)
    finally:
        for name in names.values():
            if Cluster.get(name).is_running():
                Cluster.get(name).stop()
    return results


def main(counts: tuple[int, ...] = COUNTS, backends: tuple[str, ...] = ("file", "s3")) -> dict:
    from bench.s3 import BUCKET, CREDENTIALS, MotoServer

    home = reachable_tempdir("pgpitr-bench-describe-")
    os.environ["PGPITR_HOME"] = str(home)
    os.environ.update(CREDENTIALS)
    out: dict = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}",
        "postgresql": 15,
        "runs": RUNS,
        "method": __doc__.split("How the archive is made.")[1].split("Then")[0].strip(),
        "file": {},
        "s3": {},
    }
    file_root = reachable_tempdir("pgpitr-bench-describe-repo-")
    try:
        if "file" in backends:
            out["file"] = _run_backend("dfile", f"file://{file_root}/repo", counts)
        if "s3" in backends:
            with MotoServer(home / "moto.log") as moto:
                url = f"s3://{BUCKET}/scale?endpoint={moto.endpoint}&region=us-east-1"
                out["s3"] = _run_backend("ds3", url, counts)
    finally:
        shutil.rmtree(file_root, ignore_errors=True)
        shutil.rmtree(home, ignore_errors=True)
    for backend in ("file", "s3"):
        results = out[backend]
        low, high = str(min(counts)), str(max(counts))
        if low in results and high in results:
            out[f"{backend}_ratio_time_{high}_vs_{low}"] = round(
                results[high]["describe_seconds_median"] / results[low]["describe_seconds_median"],
                3,
            )
            out[f"{backend}_same_requests"] = (
                results[high]["describe_requests"] == results[low]["describe_requests"]
            )
    path = save(out, "describe-scale")
    print(f"results in {path}")
    return out


def cli(args: list[str]) -> None:
    """``[file|s3 …] [COUNT …]``: the backends and counts to run (default: both, COUNTS)."""
    backends = tuple(a for a in args if a in ("file", "s3")) or ("file", "s3")
    counts = tuple(int(a) for a in args if a not in ("file", "s3")) or COUNTS
    main(counts, backends)


if __name__ == "__main__":
    cli(sys.argv[1:])
