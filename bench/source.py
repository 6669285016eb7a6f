"""The database every measurement reads: one pgpitr-managed cluster holding a pgbench database.

It is created with the engine's own ``clusters.create`` in a PGPITR_HOME of its own, so that
pgpitr's backups are taken exactly as the product takes them; pgBackRest and barman-cloud read the
same data directory.  Between measurements only its ``archive_command`` changes (written by the
engine's ``Cluster.configure``, then a reload), and its repository URL for pgpitr's runs.
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.proc import PG_BINDIR, BenchError, User, du, make_dir, run, say, wait_until
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository.url import RepositoryUrl

NAME = "bench-src"


class SourceCluster:
    def __init__(self, home: Path, user: User) -> None:
        self.home = home
        self.user = user
        self._cluster: Cluster | None = None
        self.scale = 1

    # -- lifecycle ---------------------------------------------------------------------------
    def create(self, scale: int) -> None:
        from pgpitr.operations import create as operations_create

        self.scale = scale
        make_dir(self.home, self.user, 0o755)
        os.environ["PGPITR_HOME"] = str(self.home)
        first_repo = make_dir(self.home / "repo-initial", self.user, 0o750)
        self._cluster = operations_create.create(NAME, repository_url=f"file://{first_repo}")
        # Faster WAL generation and no checkpoints in the middle of a measurement by the clock.
        self.sql("ALTER SYSTEM SET max_wal_size = '8GB'")
        self.sql("ALTER SYSTEM SET checkpoint_timeout = '1h'")
        self.reload()
        run(
            [PG_BINDIR / "pgbench", "-i", "-q", "-s", str(scale), *self._conn_args()],
            timeout=3600,
        )
        self.sql("CHECKPOINT")

    def remove(self) -> None:
        if self._cluster is not None:
            self._cluster.remove()

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise BenchError("the source cluster was not created")
        return self._cluster

    # -- facts -------------------------------------------------------------------------------
    @property
    def datadir(self) -> Path:
        return self.cluster.state.datadir

    @property
    def socket_dir(self) -> Path:
        return self.cluster.state.socket_dir

    @property
    def port(self) -> int:
        return self.cluster.state.port

    def _conn_args(self) -> list[str]:
        return ["-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres", "postgres"]

    def sql(self, query: str) -> str:
        out = run(
            [PG_BINDIR / "psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-c", query]
            + self._conn_args(),
            timeout=600,
        ).stdout
        return out.strip()

    def reload(self) -> None:
        self.sql("SELECT pg_reload_conf()")

    def sizes(self) -> dict[str, int]:
        return {
            "pgbench_database_bytes": int(self.sql("SELECT pg_database_size('postgres')")),
            "data_directory_bytes": du(self.datadir),
        }

    # -- archiving ---------------------------------------------------------------------------
    def set_archive(self, command: str) -> None:
        """Any archive_command (pgBackRest's, /bin/false); pgpitr's own goes through the engine."""
        self.cluster.configure(archive=command)
        self.reload()

    def use_pgpitr_repository(self, url: str) -> None:
        """Point the cluster at a fresh repository and turn log backup on the product's way."""
        from pgpitr import cluster_repository
        from pgpitr.operations import log_backup

        state = self.cluster.state
        state.repository = RepositoryUrl.parse(url)
        state.save()
        for marker in state.spool.glob("archive-info-*"):
            marker.unlink()
        for pushed in (state.spool / "pushed").glob("*"):
            pushed.unlink()
        cluster_repository.store_credentials(
            self.cluster
        )  # the archiver's AWS keys (S3), as at create
        log_backup.set_log_backup(self.cluster, True, timeout=120)

    def ready_count(self) -> int:
        return len(self.ready_names())

    def ready_names(self) -> list[str]:
        status = self.datadir / "pg_wal" / "archive_status"
        return sorted(
            e.name[: -len(".ready")] for e in os.scandir(status) if e.name.endswith(".ready")
        )

    def wait_archived(self, timeout: float) -> float:
        return wait_until(lambda: self.ready_count() == 0, timeout, "WAL archiving", 0.02)

    def checkpoint(self) -> None:
        """Let the server recycle archived segments between measurements."""
        self.sql("CHECKPOINT")

    def pause_archiving(self) -> None:
        """archive_command=/bin/false, once the queue is empty, and no pgpitr push worker left:
        one still running would archive the files queued next outside the clock (and take CPU
        from the tool measured next)."""
        wait_until(lambda: self.ready_count() == 0, 600, "WAL queue empty before pausing")
        self.set_archive("/bin/false")
        wait_until(self._no_push_worker, 60, "pgpitr's push worker gone", 0.05)
        for marker in (self.cluster.state.spool / "pushed").glob("*"):
            marker.unlink()

    def _no_push_worker(self) -> bool:
        lock = self.cluster.state.spool / "push.lock"
        if not lock.exists():
            return True
        fd = os.open(lock, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    def wait_archiver_idle(self, timeout: float = 60) -> None:
        """Wait until the archiver's round of failed attempts is over (it sleeps 1 s between
        the three tries of a round, and that sleep would delay the next measurement)."""
        query = (
            "SELECT coalesce(extract(epoch FROM now() - last_failed_time), 1e9) "
            "FROM pg_stat_archiver"
        )
        wait_until(lambda: float(self.sql(query)) > 1.5, timeout, "archiver idle", 0.25)

    def _checkpoint_every(self, seconds: float, stop: threading.Event) -> None:
        while not stop.wait(seconds):
            self.sql("CHECKPOINT")

    def mark_ready_again(self, names: list[str]) -> None:
        """Queue already archived segments again (``.done`` back to ``.ready``), so that the next
        tool archives the very same files; nothing recycles them while the server is idle."""
        status = self.datadir / "pg_wal" / "archive_status"
        for name in names:
            done = status / f"{name}.done"
            if not done.exists() or not (self.datadir / "pg_wal" / name).exists():
                raise BenchError(f"segment {name} is gone from pg_wal; cannot queue it again")
            os.rename(done, status / f"{name}.ready")

    def generate_wal(self, segments: int, timeout: float = 3600) -> datetime:
        """With archiving paused, run pgbench (TPC-B, a CHECKPOINT every 2 s so that full-page
        images are written as on a busy server) until ``segments`` files wait as ``.ready``.

        Returns a recovery target time: a moment when about 95 % of them were written, so that
        commits follow it in the segments after."""
        self.pause_archiving()
        started = time.monotonic()
        target_at = segments - max(1, segments // 20)
        clients = max(1, min(4, self.scale))
        argv = [PG_BINDIR / "pgbench", "-n", "-c", clients, "-j", min(2, clients)]
        argv += ["-T", int(timeout), *self._conn_args()]
        env = {**os.environ, "PGOPTIONS": "-c synchronous_commit=off", "LC_ALL": "C.UTF-8"}
        load = subprocess.Popen(
            [str(a) for a in argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
            start_new_session=True,
        )
        target: datetime | None = None
        deadline = time.monotonic() + timeout
        stop = threading.Event()
        checkpoints = threading.Thread(target=self._checkpoint_every, args=(2.0, stop))
        checkpoints.start()
        try:
            while True:
                count = self.ready_count()
                if target is None and count >= target_at:
                    epoch = float(self.sql("SELECT extract(epoch FROM now())"))
                    target = datetime.fromtimestamp(epoch, UTC)
                if count >= segments - 1:
                    break
                if load.poll() is not None:
                    err = load.stderr.read().decode(errors="replace") if load.stderr else ""
                    raise BenchError(f"pgbench stopped early: {err[-2000:]}")
                if time.monotonic() > deadline:
                    raise BenchError(f"{segments} WAL segments not written in {timeout:.0f} s")
                time.sleep(0.02)
        finally:
            stop.set()
            if load.poll() is None:
                os.killpg(load.pid, signal.SIGINT)
                try:
                    load.wait(30)
                except subprocess.TimeoutExpired:
                    os.killpg(load.pid, signal.SIGKILL)
                    load.wait(10)
            checkpoints.join(120)
        say(f"pgbench stopped at {count} ready segments; {self.ready_count()} after it stopped")
        self.sql("SELECT pg_switch_wal()")
        wait_until(lambda: self.ready_count() >= segments, 30, "the last segment's .ready")
        self.wait_archiver_idle()
        say(f"{self.ready_count()} segments ready after {time.monotonic() - started:.1f} s")
        assert target is not None
        return target
