"""Streaming WAL into the repository: ``pg_receivewal`` under the agent, on a slot pgpitr owns.

With ``schedule.logfile.method=stream`` the agent (deployments/agent.py) runs a ``Supervisor``
in a daemon thread: one ``Receiver`` per cluster of its host that wants streaming, each with

- a ``pg_receivewal`` run as the server's OS user with the server's own binaries, on the physical
  replication slot ``pgpitr_walstream`` (so the server keeps every byte the receiver has not
  flushed, across a kill -9, an agent stopped for an hour or a repository outage), writing into
  ``spool/stream`` under the cluster's directory (postgres/conf.py ``stream_spool_dir``);
  restarted with a growing pause whenever it ends;
- an upload pass about every second: each completed segment (and history file) goes into the
  repository through ``wal.push_file``, the same path as ``wal-push`` (same names, checksums,
  and "same content succeeds, different content fails and the stored copy is kept"), and leaves
  the spool only once stored; the ``.partial`` segment being written is uploaded when it grew,
  as ``SEGMENT.EXTENT.partial`` (``wal.streamed_partial_name``: EXTENT is how many bytes of it
  were written, so the newest is the longest), and the previous partial of that segment is
  removed (at most once a second, within POLL of a quiet segment growing); when the segment
  completes, every partial of it is removed.

``archive_command`` stays on in stream mode, as a fallback, as Barman keeps both: with the agent
stopped or the receiver failing, segments still reach the repository when they fill or at
archive_timeout, and the history and backup-label files keep arriving the way they always
did.  pg_receivewal writes no backup-label file; it fetches the history file of the timeline it
starts on (TIMELINE_HISTORY), which the upload pass pushes like a segment, but a new timeline
begins at a promotion, while no receiver streams that server, so archive_command stores it first
and the receiver's push finds the same bytes.  Both paths store a completed segment
under the same name with the same bytes (the walsender sends the server's own WAL file), so the
second one finds the first one's object and succeeds without writing.

With ``schedule.logfile.synchronous=true`` the receiver runs with ``--synchronous`` (it flushes
and reports each write at once) and the server's ``synchronous_standby_names`` names its
application_name: a commit returns only when its WAL is on the spool's disk.  The cost is a
round trip and an fsync per commit, and while no receiver runs every commit waits: turning
synchronous off is the way out (``describe`` says so loudly).

Nothing here imports Prefect: the agent passes ``on_retained``, called when the slot holds back
more WAL than the policy's ``stream.maxRetained``, and turns it into an event.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
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
from pgpitr.postgres import command, conf
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import popen
from pgpitr.postgres.osuser import make_dir
from pgpitr.postgres.slots import APPLICATION_NAME, SLOT, SlotState, ensure_slot, slot_state
from pgpitr.repository import Repository
from pgpitr.repository.base import document_frame
from pgpitr.state import write_json_atomic
from pgpitr.wal import archive

log = logging.getLogger(__name__)

TICK = 1.0  # seconds between the supervisor's looks at the clusters' policies
POLL = 0.2  # seconds between a receiver's looks at its spool (a few stat calls and page reads)
#: the partial is uploaded at most this often: a commit after a quiet while goes up within POLL,
#: under a steady load the partial follows every second (the RPO), not every write
PARTIAL_EVERY = 1.0
STATUS_EVERY = 10.0  # the status file is rewritten when it changed, else this often
RESTART_PAUSE = (1.0, 30.0)  # first and longest pause before starting pg_receivewal again
RETAINED_EVERY = 10.0  # seconds between looks at the slot's retained WAL
PAGE = 8192  # XLOG_BLCKSZ: every page written starts with a non-zero magic number
STATUS_FILE = "stream.json"  # under spool/: what the receiver did last, for describe


def spool_dir(cluster: Cluster) -> Path:
    return conf.stream_spool_dir(Path(cluster.state.home), cluster.name)


def status_path(cluster: Cluster) -> Path:
    return cluster.state.spool / STATUS_FILE


def streaming(policy: pol.BackupPolicy) -> bool:
    """Whether the policy streams WAL (log backup on, method stream)."""
    return policy.logfile_enabled and policy.logfile_method == "stream"


# -- pure builders ---------------------------------------------------------------------------


def _conn_value(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def receivewal_command(
    bindir: Path, directory: Path, conninfo: dict[str, Any], *, synchronous: bool
) -> list[str]:
    """pg_receivewal on pgpitr's slot into ``directory``: one connection (``--no-loop``: the
    supervisor restarts it, with a pause it controls), a status report every second."""
    dsn = " ".join(
        f"{key}={_conn_value(value)}"
        for key, value in {**conninfo, "application_name": APPLICATION_NAME}.items()
        if key != "dbname"
    )
    argv = [
        str(bindir / "pg_receivewal"),
        "--directory",
        str(directory),
        "--slot",
        SLOT,
        "--dbname",
        dsn,
        "--no-loop",
        "--no-password",
        "--status-interval",
        "1",
    ]
    return argv + (["--synchronous"] if synchronous else [])


def written_extent(path: Path) -> int:
    """How many bytes of a segment pg_receivewal has written: it pads a new segment with zeros
    and writes pages in order, so the written pages are a prefix (found by bisection on their
    magic numbers), and the last one ends at its last non-zero byte."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size < PAGE:
            return 0
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
            low, high = 0, size // PAGE  # pages [0, low) written; [high, end) not
            while low < high:
                middle = (low + high) // 2
                if data[middle * PAGE : middle * PAGE + 2] != b"\0\0":
                    low = middle + 1
                else:
                    high = middle
            if low == 0:
                return 0
            last = data[(low - 1) * PAGE : low * PAGE]
            return (low - 1) * PAGE + len(last.rstrip(b"\0"))


# -- uploads ---------------------------------------------------------------------------------


def push_partial(repo: Repository, stanza: str, path: Path, extent: int, level: int = 3) -> str:
    """Store the segment being streamed as its partial of ``extent`` bytes; its key."""
    data = path.read_bytes()
    frame = document_frame(data, level)
    name = archive.streamed_partial_name(path.name[:24], extent)
    key = archive.object_key(stanza, name, hashlib.sha256(frame).hexdigest())
    repo.put_frame(key, frame)
    return key


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
                    cluster = Cluster.get(self.name, self.home)
                    policy = policy_store.load_policy(cluster)
                    self.supervise(cluster, policy)
                    self.upload(cluster)
                    self.check_retained(cluster, policy)
                    failures = 0
                except (NotFound, FileNotFoundError):
                    break  # deleted meanwhile: the supervisor forgets it
                except Exception as exc:  # a repository outage, a refused connection: later
                    self._failed(exc)
                    failures += 1
                self._write_status()
                # an outage is tried again less and less often, up to every 5 s
                self.stopping.wait(min(min(self.tick, POLL) * 2 ** min(failures, 5), 5.0))
        finally:
            self._terminate()
            self._clear_spool_if_off()
            self._write_status()

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
        argv = command.receivewal_command(
            cluster.bindir,
            directory,
            cluster.conninfo(),
            slot=SLOT,
            application_name=APPLICATION_NAME,
            synchronous=policy.logfile_synchronous,
        )
        log_path = self._log_path(cluster)
        _rotate(log_path)
        with open(log_path, "ab") as stderr:
            self.process = popen(argv, user=cluster.user, stdout=subprocess.DEVNULL, stderr=stderr)
        self.synchronous = policy.logfile_synchronous
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
            extent = written_extent(directory / name)
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


# -- the supervisor --------------------------------------------------------------------------


def wanted(cluster: Cluster) -> bool:
    """Whether this host's agent streams ``cluster``: of this host, not being restored nor a
    drill's scratch cluster, log backup on with method stream, and running."""
    policy = policy_store.agent_policy(cluster)
    return policy is not None and streaming(policy) and cluster.is_running()


class Supervisor:
    """A Receiver for every cluster ``wanted`` says, none for the others."""

    def __init__(
        self, on_retained: Retained | None = None, tick: float = TICK, home: Path | None = None
    ) -> None:
        self.on_retained = on_retained
        self.tick = tick
        self.home = home  # PGPITR_HOME's clusters when None, read at each pass
        self.receivers: dict[str, Receiver] = {}

    def reconcile(self) -> None:
        names = set()
        for cluster in Cluster.all(self.home):
            try:
                if wanted(cluster):
                    names.add(cluster.name)
            except Exception as exc:  # one broken cluster does not stop the others
                log.warning("streaming of %s not checked: %s", cluster.name, exc)
        for name in sorted(names - self.receivers.keys()):
            receiver = Receiver(name, self.on_retained, self.tick, self.home)
            self.receivers[name] = receiver
            receiver.start()
        for name in sorted(self.receivers.keys() - names):
            self.receivers.pop(name).stop()
        for name, receiver in list(self.receivers.items()):
            if not receiver.thread.is_alive():  # its cluster went away
                del self.receivers[name]

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    self.reconcile()
                except Exception as exc:
                    log.warning("streaming supervisor: %s", exc)
                stop.wait(self.tick)
        finally:
            for receiver in self.receivers.values():
                receiver.stopping.set()
            for receiver in self.receivers.values():
                receiver.stop()
            self.receivers.clear()


def start(
    on_retained: Retained | None = None, tick: float = TICK, home: Path | None = None
) -> tuple[threading.Thread, threading.Event, Supervisor]:
    """The supervisor in a daemon thread; set the event (and join) to stop every receiver."""
    supervisor = Supervisor(on_retained, tick, home)
    stop = threading.Event()
    thread = threading.Thread(
        target=supervisor.run, args=(stop,), name="pgpitr-walstream", daemon=True
    )
    thread.start()
    return thread, stop, supervisor


# -- describe --------------------------------------------------------------------------------


def read_status(cluster: Cluster) -> dict[str, Any] | None:
    try:
        return json.loads(status_path(cluster).read_text())
    except (OSError, ValueError):
        return None


def conflict_dir(cluster: Cluster) -> Path:
    """Where a streamed file whose name the repository holds with other bytes is kept, beside
    the stored copy that stays (the same rule as wal-push: never overwrite)."""
    return cluster.state.spool / "stream-conflict"


def describe_fields(cluster: Cluster, policy: pol.BackupPolicy) -> dict[str, Any]:
    """describe's streaming block: the method, the receiver, the slot, and the warnings."""
    if not streaming(policy):
        return {"log_method": policy.logfile_method, "stream": None, "stream_warnings": []}
    status = read_status(cluster) or {}
    pid = status.get("pid")
    receiver_running = bool(pid) and process_alive(int(pid))
    slot = SlotState(False)
    if cluster.is_running():
        try:
            slot = slot_state(cluster)
        except PitrError:
            pass
    limit = pol.parse_size(policy.stream_max_retained)
    warnings = []
    policy_name = policy.name
    if policy.logfile_synchronous:
        warnings.append(
            f"SYNCHRONOUS: every commit on {cluster.name} waits until pgpitr's receiver has "
            "flushed its WAL; while the receiver (the agent) is down, commits hang. Way out: "
            f"pgpitr cluster edit-backup-policy {policy_name} --set "
            "schedule.logfile.synchronous=false"
        )
    if not slot.active:
        warnings.append(
            "no receiver streams WAL (is the agent running? `pgpitr agent start`): WAL reaches "
            "the repository through archive_command only, and the slot holds WAL back"
            + (f"; last error: {status['last_error']}" if status.get("last_error") else "")
        )
    conflicts = sorted(p.name for p in conflict_dir(cluster).glob("*"))
    if conflicts:
        warnings.append(
            f"{len(conflicts)} streamed WAL file(s) differ from the archived copies of their "
            f"names ({', '.join(conflicts[:3])}): the stored copies stay, the streamed ones "
            f"are kept in {conflict_dir(cluster)} to compare (another server archiving into "
            "this stanza?)"
        )
    if slot.retained is not None and slot.retained > limit:
        warnings.append(
            f"the slot {SLOT} holds back {slot.retained / 2**20:.0f} MB of WAL, over "
            f"stream.maxRetained {policy.stream_max_retained}: the source's disk fills while "
            "no receiver catches up"
        )
    return {
        "log_method": "stream",
        "stream": {
            "synchronous": policy.logfile_synchronous,
            "receiver_running": receiver_running,
            "receiver_pid": pid if receiver_running else None,
            "restarts": status.get("restarts"),
            "last_error": status.get("last_error"),
            "slot": SLOT,
            "slot_exists": slot.exists,
            "slot_active": slot.active,
            "retained_bytes": slot.retained,
            "max_retained": policy.stream_max_retained,
            "sync_state": slot.sync_state,
        },
        "stream_warnings": warnings,
    }


def clear_spool(cluster: Cluster) -> None:
    """Streaming turned off: empty the receiver's spool.  Its files are archive_command's now
    (the server keeps each segment until it is archived), and a partial left there would be
    uploaded after ``set_streaming`` removed the partials, or make the receiver of a later
    stream-on start at that old segment, which the server may have recycled by then."""
    try:
        entries = list(os.scandir(conf.stream_spool_dir(Path(cluster.state.home), cluster.name)))
    except FileNotFoundError:
        return
    for entry in entries:
        if archive.WAL_FILE_RE.match(entry.name):
            Path(entry.path).unlink(missing_ok=True)
