"""The agent: the long-running pgpitr process of a host, serving that host's deployments.

``pgpitr agent run`` (foreground: systemd, containers) supervises ``deployments.serve`` in a
child process, which serves ``FLOW/pgpitr-HOST`` for every flow (tasks/naming.py) with the
schedules of this host's clusters; so scheduled runs, runs started from the UI or the API, and
``pgpitr cluster … --wait`` for a cluster of this host execute here, and never on another
host's agent.  When the child ends (the Prefect server went away and its runner gave up, a
crash), the agent starts it again after a short pause, starting pgpitr's local Prefect server
again first when that is the one in use; so the agent survives a server restart.

``pgpitr agent start|stop|status`` runs the same as a daemon, detached, with everything under
``PGPITR_HOME/agent``: ``agent.json`` (pid, host), ``agent.log``.

Why deployments per host rather than one work pool with a queue per host: a served deployment
runs its flows in the serving process's children, with no code storage to set up and no worker
to run beside it, and a deployment's status (READY while its runner polls, NOT_READY a minute
after it stops) is exactly "does an agent serve this host", which ``describe`` shows.  A work
queue per host would still need a deployment per host, since a schedule cannot pick a queue.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from deployments.daemon import Daemon, children
from deployments.daemon import alive as daemon_alive
from pgpitr import state
from pgpitr.errors import PitrError

RESTART_PAUSE = (2.0, 30.0)  # first and longest pause before serving again
START_TIMEOUT = 60.0
#: PGPITR_HOME/agent/agent.json (pid, host) and agent.log; its command line is `… agent run`
DAEMON = Daemon("agent", "agent", marks=(b"agent", b"run"))


directory, pidfile, logfile = DAEMON.directory, DAEMON.pidfile, DAEMON.logfile


# -- the foreground agent ----------------------------------------------------------------------


#: how many runs of this host execute at once (each is a process of its own); the others wait
#: their turn, Scheduled and then Late, instead of all starting together: fifty clusters' backups
#: due in the same minute, started at once, had the embedded server's SQLite answer 500 and runs
#: crash (bench/fleet.py)
CONCURRENCY_ENV = "PGPITR_AGENT_CONCURRENCY"


def concurrency() -> int:
    """PGPITR_AGENT_CONCURRENCY, or twice the cores (at least 4): runs mostly wait on
    PostgreSQL, the network and the repository rather than compute."""
    from pgpitr.errors import InvalidInput

    value = os.environ.get(CONCURRENCY_ENV)
    if not value:
        return max(4, 2 * (os.cpu_count() or 1))
    try:
        limit = int(value)
        if limit < 1:
            raise ValueError
    except ValueError:
        raise InvalidInput(
            f"{CONCURRENCY_ENV}={value!r} is not a number of runs (1 or more)",
            hint=f"unset {CONCURRENCY_ENV} for twice the cores",
        ) from None
    return limit


def run(limit: int | None = None) -> int:
    """Serve this host's deployments until SIGTERM/SIGINT, at most LIMIT runs at once
    (``concurrency()``); serving restarts when it ends."""
    from deployments.api import ensure_api_url

    limit = limit or concurrency()
    host = state.this_host()
    stopping: list[int] = []
    child: list[subprocess.Popen[bytes]] = []

    def stop(signum: int, _frame: object) -> None:
        stopping.append(signum)
        for process in child:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _remove_killed_drills()
    _bring_back_clusters()
    _start_heartbeat()
    streams = _start_streams()
    _start_protection_watch()
    from deployments import metrics  # Prometheus on PGPITR_METRICS_PORT (pgpitr/metrics.py)

    metrics_server = metrics.start(host, _say)
    pause = RESTART_PAUSE[0]
    while not stopping:
        try:
            url, _ = ensure_api_url()
        except PitrError as exc:
            _say(f"no Prefect API: {exc}; trying again in {pause:.0f} s")
        else:
            _say(f"serving host {host} (deployments */pgpitr-{host}) on {url}")
            started = time.monotonic()
            # isolated (-I): the code is the installed package's, never a directory's it runs in
            argv = [sys.executable, "-I", "-m", "deployments.serve"]
            argv += ["--limit", str(limit)]
            env = {**os.environ, "PREFECT_API_URL": url, state.HOST_ENV: host}
            child[:] = [subprocess.Popen(argv, cwd=directory(), env=env)]
            code = child[0].wait()
            child.clear()
            if stopping:
                break
            if time.monotonic() - started > 120:
                pause = RESTART_PAUSE[0]  # it served for a while: a fresh failure
            _say(f"serving ended (exit {code}); serving again in {pause:.0f} s")
        deadline = time.monotonic() + pause
        while not stopping and time.monotonic() < deadline:
            time.sleep(0.2)
        pause = min(pause * 2, RESTART_PAUSE[1])
    if metrics_server is not None:
        metrics_server.stop()
    streams[1].set()  # each receiver's pg_receivewal ends; the slots keep what they did not get
    streams[0].join(timeout=60)
    _crash_orphaned_runs(host)
    _say("agent stopped")
    return 0


def _crash_orphaned_runs(host: str, timeout: float = 20) -> None:
    """Stopped: the runs this agent executed end as Crashed (deployments/orphans.py), once the
    processes of its group (the serving process, the runs' own, told to stop with it) ended."""
    from deployments import orphans
    from deployments.api import ensure_api_url

    me = os.getpid()
    deadline = time.monotonic() + timeout
    # a daemon or a service leads its group; in someone else's (a shell's), its own are unknown
    while (
        os.getpgrp() == me
        and time.monotonic() < deadline
        and any(pid != me for pid in _group_members(me))
    ):
        time.sleep(0.2)
    try:
        url, _ = ensure_api_url()
        os.environ["PREFECT_API_URL"] = url
        crashed = orphans.crash_orphaned_runs(host)
    except Exception as exc:  # the server is gone too: the heartbeat automation does it later
        _say(f"could not mark the runs left unfinished as Crashed: {exc}")
        return
    for name in crashed:
        _say(f"run {name} marked Crashed: it was unfinished when the agent stopped")


def _group_members(group: int) -> list[int]:
    members = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry.name)) == group and daemon_alive(int(entry.name)):
                    members.append(int(entry.name))
    return members


def _remove_killed_drills() -> None:
    """A drill killed with the machine (or with kill -9) leaves its scratch server running until
    the next drill, a day later on schedule: the agent, started again, removes it at once."""
    from pgpitr.operations import drill

    try:
        removed = drill.remove_leftovers()
    except Exception as exc:  # serving matters more; the next drill tries again
        _say(f"could not remove the scratch clusters of killed drills: {exc}")
        return
    for name in removed:
        _say(f"removed {name}, the scratch cluster of a killed drill")


def _bring_back_clusters() -> None:
    """Start this host's created clusters that are down (a reboot, kill -9), so that a boot
    that starts the agent protects them again with no manual step: the agent rather than a
    systemd unit per cluster, because it is the one mechanism with and without systemd and the
    cluster's state (cluster.json) stays the one record of whether it should run.  A cluster
    the operator stopped stays stopped; registered servers are their owners' to start."""
    from pgpitr.postgres.cluster import Cluster

    host = state.this_host()
    for cluster in Cluster.all():
        s = cluster.state
        if s.host != host or s.registered or s.stopped_by_operator or s.restore_source:
            continue
        if cluster.is_running():
            continue
        try:
            if cluster.remove_stale_pidfile():  # the postmaster died with the machine
                _say(f"removed the stale postmaster.pid of cluster {cluster.name}")
            cluster.start()
        except Exception as exc:  # one cluster's failure must not keep the others down
            _say(f"could not start cluster {cluster.name}: {exc}")
            continue
        _say(f"started cluster {cluster.name}: it was down (not stopped by the operator)")


def _start_heartbeat() -> None:
    """Heartbeat rows for this host's clusters (pgpitr/heartbeat.py), in a daemon thread of the
    agent itself: it needs no Prefect and goes on while serving restarts."""
    from pgpitr import heartbeat

    heartbeat.start()
    _say(f"heartbeat every {heartbeat.interval():.0f} s for clusters with log backup on")


def _start_streams() -> tuple[threading.Thread, threading.Event]:
    """WAL streaming (pgpitr/wal/stream/) for this host's clusters in stream mode, in a thread
    of the agent itself like the heartbeat: a receiver must go on while serving restarts."""
    from pgpitr.wal import stream

    thread, stop, _ = stream.start(on_retained=_retained_event)
    _say("streaming WAL for clusters with schedule.logfile.method=stream")
    return thread, stop


def _retained_event(cluster: str, retained: int, limit: int) -> None:
    """``pgpitr.stream.retained``: the slot holds back more WAL than stream.maxRetained."""
    from tasks import events

    _emit(events.STREAM_RETAINED, cluster, events.stream_retained, cluster, retained, limit)


def _start_protection_watch() -> None:
    """A look a minute at this host's clusters (pgpitr/protection.py): one stopped or not
    archiving raises ``pgpitr.cluster.unprotected`` once, when it becomes so, and at the
    agent's start (after a reboot, the agent is back and the cluster may not be)."""
    from pgpitr import protection

    protection.start_watch(_unprotected_event)
    _say("watching that this host's clusters run and archive (pgpitr.cluster.unprotected)")


def _unprotected_event(p: Any) -> None:
    from tasks import events

    _say(p.warning())
    _emit(events.CLUSTER_UNPROTECTED, p.cluster, events.cluster_unprotected, p)


def _emit(event: str, cluster: str, call: Any, *args: Any) -> None:
    """An event from the agent itself (not a flow run): to the API it serves."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.api import ensure_api_url

    try:
        url, _ = ensure_api_url()
    except PitrError as exc:
        _say(f"event {event} of {cluster} not emitted: {exc}")
        return
    with temporary_settings({PREFECT_API_URL: url}):
        call(*args)


def _say(message: str) -> None:
    print(f"pgpitr agent: {message}", flush=True)


# -- the daemon --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentStatus:
    host: str
    #: the PGPITR_HOME whose clusters it serves
    home: str
    running: bool
    pid: int | None
    #: resident memory of the agent and its serving process, in bytes
    resident_bytes: int | None
    log: str
    #: what the Prefect API says of this host's deployments (None: not readable)
    deployment: str
    deployment_status: str | None
    last_polled: str | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _recorded() -> int | None:
    found = DAEMON.recorded()
    return None if found is None else found["pid"]


def status_pid() -> int | None:
    """The pid of this home's background agent, while it runs."""
    return _recorded()


def start(timeout: float = START_TIMEOUT) -> tuple[int, bool]:
    """Start the agent daemon unless it runs; (pid, started now)."""
    running = _recorded()
    if running is not None:
        return running, False
    concurrency()  # a bad setting fails here, not in the background
    process = DAEMON.spawn(
        [sys.executable, "-I", "-m", "pgpitr", "agent", "run"],
        cwd=directory(),
        host=state.this_host(),
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:  # until it runs its serving child, or ends
        if process.poll() is not None:
            DAEMON.forget()
            raise PitrError(
                f"the agent ended at once (exit {process.returncode})",
                hint=f"see its log {logfile()}",
            )
        if children(process.pid):
            break
        time.sleep(0.2)
    return process.pid, True


def stop(timeout: float = 60) -> int | None:
    return DAEMON.stop(timeout)


def resident_memory(pid: int) -> int:
    """Resident bytes of PID and all its descendants (the agent and its serving process)."""
    total = 0
    todo = [pid]
    while todo:
        current = todo.pop()
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
        todo += children(current)
    return total


def status() -> AgentStatus:
    from deployments.health import deployment_health

    host = state.this_host()
    pid = _recorded()
    health = deployment_health("backup", host)
    return AgentStatus(
        host=host,
        home=str(state.home()),
        running=pid is not None,
        pid=pid,
        resident_bytes=resident_memory(pid) if pid is not None else None,
        log=str(logfile()),
        deployment=health.target,
        deployment_status=health.status,
        last_polled=health.last_polled,
    )
