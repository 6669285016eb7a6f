"""One cluster's receiver: its ``pg_receivewal`` (started, restarted after a pause, stopped, an
orphan of a killed agent reaped), the upload pass that stores the spool's files, the slot's
retained WAL, and the status file it keeps."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgpitr import cluster_repository, policy_store
from pgpitr import policy as pol
from pgpitr.errors import NotFound, PitrError, WalConflict
from pgpitr.osutil import process_alive
from pgpitr.postgres import command
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import popen
from pgpitr.postgres.osuser import make_dir
from pgpitr.postgres.slots import APPLICATION_NAME, SLOT, ensure_slot, slot_state
from pgpitr.repository import Repository
from pgpitr.state import write_json_atomic
from pgpitr.wal import archive
from pgpitr.wal.stream.files import (
    clear_spool,
    conflict_dir,
    read_status,
    spool_dir,
    status_path,
    streaming,
)
from pgpitr.wal.stream.segments import older_timeline_segments, push_partial, written_extent

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between the supervisor's looks at the clusters' policies
POLL = 0.2  # seconds between a receiver's looks at its spool (a few stat calls and page reads)
#: the partial is uploaded at most this often: a commit after a quiet while goes up within POLL,
#: under a steady load the partial follows every second (the RPO), not every write
PARTIAL_EVERY = 1.0
STATUS_EVERY = 10.0  # the status file is rewritten when it changed, else this often
RESTART_PAUSE = (1.0, 30.0)  # first and longest pause before starting pg_receivewal again
RETAINED_EVERY = 10.0  # seconds between looks at the slot's retained WAL
FOLLOW_EVERY = 1.0  # seconds between asks of a Patroni cluster's primary


@dataclass
class UploadPass:
    segments: list[str]
    partial: str | None  # the partial's stored name, when one was uploaded


# -- one cluster's receiver ------------------------------------------------------------------

Retained = Callable[[str, int, int], None]


#: The receiver's log (pg_receivewal's stderr) is set aside as ``stream.log.1`` when a receiver
#: starts and it is over this size: it grows by a few lines at every connection, for ever.
STREAM_LOG_MAX = 1 << 20


def _rotate(path: Path, limit: int = STREAM_LOG_MAX) -> None:
    try:
        if path.stat().st_size > limit:
            os.replace(path, path.with_name(path.name + ".1"))
    except FileNotFoundError:
        pass


class Receiver:
    """One cluster's pg_receivewal and its uploads, in a thread of their own (a slow repository
    holds up only this cluster)."""

    def __init__(
        self,
        name: str,
        on_retained: Retained | None = None,
        tick: float = TICK,
        home: Path | None = None,
    ) -> None:
        self.name = name
        self.home = home
        self.on_retained = on_retained
        self.tick = tick
        self.stopping = threading.Event()
        self.process: subprocess.Popen[bytes] | None = None
        self.synchronous = False
        self.started_at = 0.0
        self.next_start = 0.0
        self.pause = RESTART_PAUSE[0]
        self.restarts = 0
        self.last_error: str | None = None
        self.partial_keys: dict[str, tuple[int, str]] = {}  # segment -> (extent, key) uploaded
        self.retained_checked = 0.0
        self.retained: int | None = None
        self.alerted = False
        self.uploaded_at: float | None = None
        self.partial_at = 0.0  # monotonic time of the last partial upload
        self._status: tuple[dict[str, Any], float] | None = None
        self._reaped = False
        self._followed: tuple[Cluster, float] | None = None
        self.conninfo: dict[str, Any] | None = None  # the server the running one streams from
        self._repo: tuple[str, Repository] | None = None
        self.thread = threading.Thread(
            target=self._loop, name=f"pgpitr-walstream-{name}", daemon=True
        )

    def start(self) -> None:
        self.thread.start()

    def stop(self, timeout: float = 30) -> None:
        self.stopping.set()
        self.thread.join(timeout)

    # -- the loop ----------------------------------------------------------------------------
    def _loop(self) -> None:
        failures = 0
        try:
            while not self.stopping.is_set():
                try:
                    cluster = self._cluster()
                    policy = policy_store.load_policy(cluster)
                    self.supervise(cluster, policy)
                    self.upload(cluster)
                    self.check_retained(cluster, policy)
                    failures = 0
                except Exception as exc:  # a repository outage, a refused connection: later
                    if isinstance(exc, NotFound | FileNotFoundError) and self._deleted():
                        break  # the supervisor forgets it
                    self._failed(exc)
                    failures += 1
                self._write_status()
                # an outage is tried again less and less often, up to every 5 s
                self.stopping.wait(min(min(self.tick, POLL) * 2 ** min(failures, 5), 5.0))
        finally:
            self._terminate()
            self._clear_spool_if_off()
            self._write_status()

    def _deleted(self) -> bool:
        """The cluster is gone (not a spool file pg_receivewal renamed meanwhile)."""
        try:
            Cluster.get(self.name, self.home)
        except (NotFound, FileNotFoundError):
            return True
        except Exception:  # noqa: BLE001 (an unanswering Patroni: the cluster is still there)
            return False
        return False

    def _cluster(self) -> Cluster:
        """The cluster, read again at every pass; a Patroni cluster's primary is asked for
        (``GET /cluster``) at most every FOLLOW_EVERY seconds, not at every look at the spool."""
        now = time.monotonic()
        cached = self._followed
        if cached is not None and now - cached[1] < FOLLOW_EVERY:
            return cached[0]
        cluster = Cluster.get(self.name, self.home)
        self._followed = (cluster, now) if cluster.state.is_ha else None
        return cluster

    def _clear_spool_if_off(self) -> None:
        """Stopped by the supervisor because streaming was turned off (its pass can come before
        this loop's own): the spool is emptied as ``supervise`` would have.  Stopped with
        streaming on (the agent stops, the server stopped), the spool is kept for the next
        receiver to go on from."""
        try:
            cluster = Cluster.get(self.name, self.home)
            if not streaming(policy_store.load_policy(cluster)):
                self._clear_spool(cluster)
        except (PitrError, OSError) as exc:  # deleted meanwhile: nothing left to clear
            log.debug("%s: spool not checked on stopping: %s", self.name, exc)

    def _failed(self, exc: Exception) -> None:
        reason = exc.message if isinstance(exc, PitrError) else f"{type(exc).__name__}: {exc}"
        if reason != self.last_error:
            log.warning("streaming of %s: %s", self.name, reason)
        self.last_error = reason

    def supervise(self, cluster: Cluster, policy: pol.BackupPolicy) -> None:
        """Start pg_receivewal when none runs (after the pause, when one ended), or again with
        the other --synchronous when the policy changed."""
        now = time.monotonic()
        if not streaming(policy):  # turned off: the slot is about to go, make none again
            self._terminate()
            self._clear_spool(cluster)
            return
        conninfo = cluster.conninfo()
        if self.conninfo is not None and conninfo != self.conninfo:
            # another member is primary: stream from it now, not after a pause
            log.warning("%s: the primary moved; pg_receivewal follows it", self.name)
            self._terminate()
            self.conninfo, self.next_start, self.pause = None, 0.0, RESTART_PAUSE[0]
        if self.process is not None:
            if self.process.poll() is None:
                if self.synchronous == policy.logfile_synchronous:
                    return
                self._terminate()
            else:
                code = self.process.returncode
                ran = now - self.started_at
                self.process = None
                if ran > 60:
                    self.pause = RESTART_PAUSE[0]  # it ran a while: a fresh failure
                self.restarts += 1
                self.last_error = f"pg_receivewal ended (exit {code}): {self._log_tail()}"
                log.warning(
                    "%s: %s; starting it again in %.0f s", self.name, self.last_error, self.pause
                )
                self.next_start = now + self.pause
                self.pause = min(self.pause * 2, RESTART_PAUSE[1])
        if now < self.next_start or not cluster.is_running():
            return
        ensure_slot(cluster)
        directory = spool_dir(cluster)
        make_dir(directory, cluster.user, 0o750)
        if not self._reaped:
            self._reap_orphan(cluster, directory)
            self._reaped = True
        self._drop_unpadded(cluster, directory)
        if not self._leave_old_timelines(cluster, directory):
            return
        argv = command.receivewal_command(
            cluster.bindir,
            directory,
            conninfo,
            slot=SLOT,
            application_name=APPLICATION_NAME,
            synchronous=policy.logfile_synchronous,
        )
        log_path = self._log_path(cluster)
        _rotate(log_path)
        with open(log_path, "ab") as stderr:
            self.process = popen(argv, user=cluster.user, stdout=subprocess.DEVNULL, stderr=stderr)
        self.synchronous = policy.logfile_synchronous
        self.conninfo = conninfo
        self.started_at = time.monotonic()
        log.info("%s: pg_receivewal started (pid %d)", self.name, self.process.pid)

    def _reap_orphan(self, cluster: Cluster, directory: Path) -> None:
        """An agent killed with -9 leaves its pg_receivewal running, holding the slot: the
        status file names it; it is stopped (checked by its command line) before a new one."""
        pid = (read_status(cluster) or {}).get("pid")
        if not pid or not process_alive(int(pid)):
            return
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if b"pg_receivewal" not in cmdline or str(directory).encode() not in cmdline:
            return
        log.warning("%s: stopping pg_receivewal %s left by an earlier agent", self.name, pid)
        os.kill(int(pid), signal.SIGTERM)
        deadline = time.monotonic() + 10
        while process_alive(int(pid)) and time.monotonic() < deadline:
            time.sleep(0.1)
        if process_alive(int(pid)):
            os.kill(int(pid), signal.SIGKILL)

    def _drop_unpadded(self, cluster: Cluster, directory: Path) -> None:
        """A receiver killed while it padded a new segment with zeros leaves a short .partial,
        which the next one refuses to open ("should be 0 or N bytes"); it holds no WAL yet (the
        padding comes first), so it goes."""
        for entry in os.scandir(directory):
            if entry.name.endswith(".partial"):
                size = entry.stat().st_size
                if size != cluster.state.wal_segment_size and written_extent(Path(entry)) == 0:
                    os.unlink(entry.path)
                    log.warning(
                        "%s: removed %s, a short partial of %d bytes", self.name, entry.name, size
                    )

    def _leave_old_timelines(self, cluster: Cluster, directory: Path) -> bool:
        """A promotion (a Patroni failover or switchover) put the server on a newer timeline
        than the spool's files: once each is stored, it goes, with its streamed partials, and
        pg_receivewal goes on from the slot, which the promoted member's permanent slot kept.
        The old timeline's last segment may hold WAL past the fork, which never reached the
        new timeline: pg_receivewal, asked to go on from there, is refused ("not in this
        server's history"), and a restore must not be handed it as that segment (PostgreSQL
        archives its own copy as ``.partial`` for this reason); the promoted member's copy
        holds the part before the fork.  False: wait for the next upload pass."""
        with cluster.connect() as db:
            row = db.execute("SELECT pg_walfile_name(pg_current_wal_lsn())").fetchone()
        assert row is not None
        server = int(row[0][:8], 16)
        old = older_timeline_segments(directory, server)
        for path in old:
            stored = self.partial_keys.get(path.name[:24])
            extent = written_extent(path) if path.name.endswith(".partial") else -1
            if extent != 0 and (stored is None or stored[0] < extent):
                return False  # not stored yet
        repo = self._repository(cluster) if old else None
        for path in old:
            segment = path.name[:24]
            if repo is not None:
                for key, _, _ in archive.streamed_partials(repo, cluster.state.stanza, segment):
                    repo.delete(key)
            path.unlink()
            self.partial_keys.pop(segment, None)
            log.warning(
                "%s: the server is on timeline %d; %s of an older one left the spool and the "
                "repository's streamed partials (the server archives its part before the fork)",
                self.name,
                server,
                path.name,
            )
        return True

    def _clear_spool(self, cluster: Cluster) -> None:
        clear_spool(cluster)
        self.partial_keys.clear()

    def _terminate(self) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _log_path(self, cluster: Cluster) -> Path:
        return cluster.state.spool / "stream.log"

    def _log_tail(self) -> str:
        try:
            cluster = Cluster.get(self.name, self.home)
            lines = self._log_path(cluster).read_text(errors="replace").splitlines()
        except (OSError, PitrError):
            return "(no log)"
        # the cause comes before pg_receivewal's last word ("disconnected")
        return " / ".join(line.strip() for line in lines[-3:]) if lines else "(no output)"

    def _repository(self, cluster: Cluster) -> Repository:
        url = cluster.state.repository
        if self._repo is None or self._repo[0] != url:
            self._repo = (url, cluster_repository.repository(cluster))
        return self._repo[1]

    def upload(self, cluster: Cluster) -> UploadPass:
        """Store what the spool holds: completed files oldest first, then the partial when it
        grew.  A file leaves the spool only once it is stored."""
        directory = spool_dir(cluster)
        try:
            names = sorted(os.listdir(directory))
        except FileNotFoundError:
            return UploadPass([], None)
        repo = self._repository(cluster)
        stanza = cluster.state.stanza
        done: list[str] = []
        for name in names:
            path = directory / name
            if not (archive.SEGMENT_RE.match(name) or name.endswith(".history")):
                continue
            try:
                archive.push_file(repo, stanza, path)
            except WalConflict as exc:
                # keep the stored copy and ours beside it, for a person to compare
                aside = conflict_dir(cluster)
                aside.mkdir(exist_ok=True)
                os.replace(path, aside / name)
                log.error("%s: %s", self.name, exc.message)
                continue
            if archive.SEGMENT_RE.match(name):
                for key, _, _ in archive.streamed_partials(repo, stanza, name):
                    repo.delete(key)
                self.partial_keys.pop(name, None)
            path.unlink()
            done.append(name)
        uploaded = None
        if time.monotonic() - self.partial_at < PARTIAL_EVERY:
            names = []  # the partial waits; completed files went up above
        for name in names:
            if not name.endswith(".partial") or not archive.SEGMENT_RE.match(name[:24]):
                continue
            segment = name[:24]
            if segment in done:
                continue
            try:
                extent = written_extent(directory / name)
            except FileNotFoundError:  # completed and renamed since the listing: the next pass
                continue
            before = self.partial_keys.get(segment)
            if extent == 0 or (before is not None and extent <= before[0]):
                continue
            self.partial_at = time.monotonic()
            key = push_partial(repo, stanza, directory / name, extent)
            if before is not None and before[1] != key:
                repo.delete(before[1])
            self.partial_keys[segment] = (extent, key)
            uploaded = archive.streamed_partial_name(segment, extent)
        if done or uploaded:
            self.uploaded_at = time.time()
            self.last_error = None
        return UploadPass(done, uploaded)

    def check_retained(self, cluster: Cluster, policy: pol.BackupPolicy) -> None:
        """Every RETAINED_EVERY seconds: the WAL the slot holds back; above the policy's limit,
        ``on_retained`` once (again after it fell below)."""
        if time.monotonic() - self.retained_checked < RETAINED_EVERY or not cluster.is_running():
            return
        self.retained_checked = time.monotonic()
        self.retained = slot_state(cluster).retained
        limit = pol.parse_size(policy.stream_max_retained)
        if self.retained is not None and self.retained > limit:
            if not self.alerted:
                log.warning(
                    "%s: the slot %s holds back %d bytes of WAL, over stream.maxRetained %s",
                    self.name,
                    SLOT,
                    self.retained,
                    policy.stream_max_retained,
                )
                if self.on_retained is not None:
                    self.on_retained(self.name, self.retained, limit)
            self.alerted = True
        else:
            self.alerted = False

    def _write_status(self) -> None:
        process = self.process
        status = {
            "pid": process.pid if process is not None and process.poll() is None else None,
            "agent_pid": os.getpid(),
            "synchronous": self.synchronous,
            "restarts": self.restarts,
            "last_error": self.last_error,
            "retained": self.retained,
        }
        if self._status and self._status[0] == status:
            if time.monotonic() - self._status[1] < STATUS_EVERY:
                return
        try:
            cluster = Cluster.get(self.name, self.home)
            write_json_atomic(
                status_path(cluster),
                {**status, "uploaded_at": self.uploaded_at, "updated_at": time.time()},
            )
            self._status = (status, time.monotonic())
        except (OSError, PitrError):
            pass
