"""Is a cluster protected right now, and since when is it not?

A cluster is protected while its server runs and (with log backup on) its WAL reaches the
repository.  A stopped server archives nothing and can take no backup: after a reboot that
nothing brought it back from, or a ``kill -9``, ``describe`` used to say ``Stopped`` and nothing
more.  This check says it loudly, with the time protection ended, for ``describe``, ``list``,
``list-backup-policy`` and the agent's ``pgpitr.cluster.unprotected`` event.

It is read-only, local and fast (no flow, no repository request): a stopped server is read from
its data directory (``global/pg_control``'s state and time, the newest ``archive_status/*.done``
file), a running one from ``pg_stat_archiver`` (pgpitr/monitor.py).  "Since" is the last moment
protection is known to have held:

- a clean stop: the stop itself (pg_control's state is "shut down" and its time the shutdown's);
- a server killed or crashed (pg_control still says "in production"): the later of the end of
  its newest archived WAL file and its last checkpoint, the last sign that it worked;
- a running server whose archiving fails or lags: its last archived WAL file.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pgpitr import policy_store, scratch, timeparse
from pgpitr import state as st
from pgpitr.errors import PitrError
from pgpitr.postgres.cluster import Cluster

log = logging.getLogger(__name__)

#: pg_control's DBState values of a server that shut down cleanly (primary, standby)
_SHUT_DOWN = {1, 2}


@dataclass(frozen=True)
class Protection:
    cluster: str
    #: False only when the check knows it is not (a running server it could not ask is True)
    protected: bool
    reason: str
    since: datetime | None = None
    hint: str | None = None

    def warning(self) -> str | None:
        """The loud line for people, the time as the CLI shows times."""
        if self.protected:
            return None
        shown = timeparse.format_kbcli(self.since) if self.since else None
        since = f" since {shown}" if shown else " (since an unknown time)"
        return f"cluster {self.cluster} is NOT PROTECTED{since}: {self.reason} — {self.hint}"

    def as_fields(self) -> dict[str, Any]:
        """describe's and list's JSON fields, and the event's payload."""
        return {
            "protected": self.protected,
            "unprotected_since": self.since.isoformat() if self.since else None,
            "unprotected_reason": None if self.protected else self.reason,
            "protection_warning": self.warning(),
        }


def of(cluster: Cluster) -> Protection:
    """``check`` with the cluster's saved policy (an unreadable one counts as log backup on:
    the stricter check)."""
    try:
        log_backup = policy_store.load_policy(cluster).logfile_enabled
    except (OSError, ValueError, PitrError):
        log_backup = True
    return check(cluster, log_backup)


def check(cluster: Cluster, log_backup: bool) -> Protection:
    """Whether CLUSTER is protected now (``log_backup``: its policy archives WAL)."""
    name = cluster.name
    if scratch.is_scratch(name) or cluster.state.restore_source:
        return Protection(name, True, "a drill's or a restore's cluster: not protected by design")
    if not cluster.is_running():
        return _stopped(cluster)
    if not log_backup:
        return Protection(name, True, "running; log backup is off (backups only)")
    from pgpitr import monitor

    try:
        status = monitor.archiver_status(cluster)
    except Exception as exc:  # starting up, in recovery, refused: not known, so not claimed
        return Protection(name, True, f"archiving not checked: {type(exc).__name__}")
    if not status.behind:
        return Protection(name, True, status.reason)
    return Protection(
        name,
        False,
        f"WAL archiving is not keeping up ({status.reason})",
        status.last_archived_time,
        f"see the server's log ({cluster.state.log_file}) for the archive_command's error",
    )


def _stopped(cluster: Cluster) -> Protection:
    datadir = cluster.state.datadir
    state, written = _control(datadir)
    archived = _last_archived(datadir)
    start = (
        "start it through whatever runs it (systemd, pg_ctlcluster, Patroni)"
        if cluster.registered
        else f"start it with `pgpitr cluster start {cluster.name}`"
    )
    hint = f"{start}; nothing is archived and no backup can be taken until then"
    if state in _SHUT_DOWN:
        return Protection(cluster.name, False, "its server is stopped (shut down)", written, hint)
    known = [t for t in (written, archived) if t is not None]
    return Protection(
        cluster.name,
        False,
        "its server is stopped without a shutdown (killed, crashed, or the machine went down); "
        "the time is its last archived WAL or checkpoint",
        max(known) if known else None,
        hint,
    )


def _control(datadir: Path) -> tuple[int | None, datetime | None]:
    """pg_control's ``state`` (int32 at offset 16) and ``time`` (int64 at 24, the last update:
    a clean shutdown's own time): the layout every PostgreSQL since 9.x shares.  (None, None)
    when it cannot be read (a registered server's directory of another account)."""
    try:
        with open(datadir / "global" / "pg_control", "rb") as f:
            head = f.read(32)
        state, seconds = struct.unpack_from("=i4xq", head, 16)
    except (OSError, struct.error):
        return None, None
    return state, datetime.fromtimestamp(seconds, UTC)


def _last_archived(datadir: Path) -> datetime | None:
    """When the newest archived WAL file was finished: its ``.done`` mark's time (PostgreSQL
    renames ``.ready`` to ``.done`` once archive_command succeeds, and a rename keeps the time
    the segment was finished: the end of what that file protects).  A few dozen marks at most."""
    try:
        with os.scandir(datadir / "pg_wal" / "archive_status") as entries:
            times = [e.stat().st_mtime for e in entries if e.name.endswith(".done")]
    except OSError:
        return None
    return datetime.fromtimestamp(max(times), UTC) if times else None


# -- the agent's watch -------------------------------------------------------------------------

#: seconds between the agent's looks (a minute: the check is a few local reads per cluster)
WATCH_EVERY = 60.0


def newly_unprotected(seen: set[str]) -> list[Protection]:
    """One look at this host's clusters: those unprotected now and not at the last look (every
    one at the first look: the agent started again after a reboot that its clusters did not come
    back from).  ``seen`` is the look's memory, updated in place."""
    found = []
    for cluster in Cluster.all():
        if cluster.state.host != st.this_host():
            continue
        try:
            p = of(cluster)
        except Exception as exc:  # deleted meanwhile, unreadable state: the next look
            log.debug("protection of %s not checked: %s", cluster.name, exc)
            continue
        if p.protected:
            seen.discard(cluster.name)
        elif cluster.name not in seen:
            seen.add(cluster.name)
            found.append(p)
    return found


def watch(
    on_unprotected: Callable[[Protection], None],
    stop: threading.Event,
    every: float = WATCH_EVERY,
) -> None:
    """Look every ``every`` seconds until ``stop`` is set; ``on_unprotected`` for each cluster
    that became unprotected (the agent emits ``pgpitr.cluster.unprotected``)."""
    seen: set[str] = set()
    while not stop.is_set():
        for p in newly_unprotected(seen):
            on_unprotected(p)
        stop.wait(every)


def start_watch(
    on_unprotected: Callable[[Protection], None],
) -> tuple[threading.Thread, threading.Event]:
    """The watch in a daemon thread (it dies with its process); set the event to stop it."""
    stop = threading.Event()
    thread = threading.Thread(
        target=watch, args=(on_unprotected, stop), name="pgpitr-protection", daemon=True
    )
    thread.start()
    return thread, stop
