"""The configuration files pgpitr manages inside a data directory.

``postgresql.conf`` keeps initdb's defaults and ends with ``include 'pgpitr.conf'``; pgpitr owns
``pgpitr.conf``, ``pgpitr-recovery.conf`` (present only while a restore replays WAL),
``pg_hba.conf`` and ``pg_ident.conf``.  A restored data directory carries its source's files, so
every one of them is rewritten for the new cluster before it starts.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from pgpitr.osutil import write_atomic

MANAGED = "pgpitr.conf"
RECOVERY = "pgpitr-recovery.conf"
INCLUDE_LINES = f"include '{MANAGED}'\ninclude_if_exists '{RECOVERY}'\n"
ARCHIVE_OFF = "/bin/true"
#: Settings only pgpitr may set: stripped from postgresql.auto.conf of a restored cluster.
OWNED_SETTINGS = (
    "port",
    "listen_addresses",
    "unix_socket_directories",
    "archive_mode",
    "archive_command",
    "restore_command",
    "recovery_target_time",
    "recovery_target_lsn",
    "recovery_target_xid",
    "recovery_target_name",
    "recovery_target_inclusive",
    "recovery_target",
    "recovery_target_action",
    "recovery_target_timeline",
    "primary_conninfo",
    "archive_library",
    # a synchronous source's setting would make every commit of its restored copy wait for a
    # receiver that copy does not have
    "synchronous_standby_names",
)
#: Every setting that makes the server run a shell command (PostgreSQL 13 to 18 know these).  A
#: restored data directory carries its source's configuration, and the source's commands act on
#: the source's things: ``pg_archivecleanup /shared/archive %r`` would prune that archive during a
#: restore or a drill.  pgpitr's managed file pins each one to pgpitr's own command or to none,
#: and postgresql.auto.conf loses every ``*_command`` (``strip_auto_conf``).
COMMAND_SETTINGS = (
    "archive_command",
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "ssl_passphrase_command",
)


def quote(value: str | int | float | bool) -> str:
    """A postgresql.conf value."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, int | float):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


#: How the WAL commands start Python: isolated.  PostgreSQL runs them with the data directory as
#: their working directory, and ``-m`` (or ``-E``) would put it first on sys.path, so a
#: ``pgpitr/`` planted there (a restored backup carries whatever its source's directory held)
#: would run instead of the installed package.  ``-I`` keeps the working directory, the user's
#: site-packages and every PYTHON* variable out: only the installed pgpitr is importable.
ISOLATED = "-I"


def wal_command(home: Path, verb: str, cluster: str, *args: str) -> str:
    """The command PostgreSQL runs per WAL file: this interpreter, isolated (``ISOLATED``)."""
    argv = [sys.executable, ISOLATED, "-m", "pgpitr", "--home", str(home), verb]
    argv += ["--cluster", cluster]
    return " ".join(shlex.quote(a) for a in argv) + "".join(f" {a}" for a in args)


#: The push spool's names (pgpitr/wal/spool.py), which the archive_command's shell reads too: the
#: marks of files stored, of files that could not be, of files a call waits for, the lock the
#: push worker holds for its whole life, and the file that exists while it takes files.
PUSHED, PUSH_FAILED, PUSH_ASKED = "pushed", "push-failed", "push-asked"
PUSH_LOCK, PUSH_ACCEPTING = "push.lock", "push-accepting"
#: How long the archive_command's shell waits for a running worker's mark before it starts
#: wal-push, and how often it looks (``sleep`` is a process: 50 a second cost about 5 % of a core).
SHELL_WAIT_SECONDS, SHELL_POLL_SECONDS = 5, 0.02


def spool_dir(home: Path, cluster: str) -> Path:
    """A cluster's spool (state.ClusterState.spool): the WAL commands' markers and workers."""
    return home / "clusters" / cluster / "spool"


def pushed_marker_dir(home: Path, cluster: str) -> Path:
    """Where wal-push marks the files it archived ahead of PostgreSQL asking for them."""
    return spool_dir(home, cluster) / PUSHED


def stream_spool_dir(home: Path, cluster: str) -> Path:
    """Where pg_receivewal writes the segments it streams (pgpitr/wal/stream/) until they are
    in the repository."""
    return spool_dir(home, cluster) / "stream"


def archive_command(home: Path, cluster: str, enabled: bool) -> str:
    """wal-push, behind shell tests, so that most files cost no Python start: a file already
    pushed ahead is answered by its mark; while the push worker runs (it holds its lock) and
    takes files (PUSH_ACCEPTING), the shell waits for the file's mark, having asked for the file
    (a file the worker failed to store is tried again only when asked).  A failure mark, no
    worker, one that stopped taking files, or no mark within SHELL_WAIT_SECONDS starts wal-push,
    which waits, reports, starts a worker and retries as before.  A Python start costs the
    worker, which compresses on every core, a good share of the CPU (bench/)."""
    if not enabled:
        return ARCHIVE_OFF
    spool = shlex.quote(str(spool_dir(home, cluster)))
    marker, failed, asked = (f'"$s/{name}/$f"' for name in (PUSHED, PUSH_FAILED, PUSH_ASKED))
    polls = round(SHELL_WAIT_SECONDS / SHELL_POLL_SECONDS)
    # flock's 75 says "held": the worker runs; 0 (taken and let go) says none does
    wait = (
        f'{{ flock -n -E 75 "$s/{PUSH_LOCK}" true; test $? = 75 && : > {asked} && i=0 && '
        f'until test -e {marker} || test -e {failed} || ! test -e "$s/{PUSH_ACCEPTING}" || '
        f"test $i = {polls}; "
        f"do sleep {SHELL_POLL_SECONDS}; i=$((i+1)); done && test -e {marker} && rm {marker}; }}"
    )
    push = wal_command(home, "wal-push", cluster, "%p")
    return f"s={spool}; f=%f; {{ test -e {marker} && rm {marker}; }} || {wait} || {push}"


def fetched_spool_dir(home: Path, cluster: str) -> Path:
    """Where wal-fetch leaves the segments it fetched ahead, checksums verified."""
    return spool_dir(home, cluster) / "fetched"


def restore_command(home: Path, cluster: str) -> str:
    """wal-fetch, behind a shell test: a segment fetched ahead costs a rename, no Python start."""
    spooled = shlex.quote(str(fetched_spool_dir(home, cluster))) + "/%f"
    fetch = wal_command(home, "wal-fetch", cluster, "%f", "%p")
    return f"{{ test -e {spooled} && mv {spooled} %p; }} || {fetch}"


def managed_settings(
    *, port: int, socket_dir: Path, archive: str, archive_timeout: int = 60
) -> dict[str, str | int | bool]:
    return {
        "port": port,
        "listen_addresses": "127.0.0.1",
        "unix_socket_directories": str(socket_dir),
        "unix_socket_permissions": "0700",
        "wal_level": "replica",
        "archive_mode": "on",
        "archive_command": archive,
        # none of the others (see COMMAND_SETTINGS); pgpitr-recovery.conf, included after this
        # file, sets restore_command while a restore replays
        "restore_command": "",
        "archive_cleanup_command": "",
        "recovery_end_command": "",
        "ssl_passphrase_command": "",
        # a restore reads the repository only: a standby's backup carries its manager's
        # streaming settings (Patroni writes them into postgresql.conf), with which the copy
        # would stream from the live cluster, even on one of its members' slots
        "primary_conninfo": "",
        "primary_slot_name": "",
        "archive_timeout": archive_timeout,
        "max_wal_senders": 10,
        "password_encryption": "scram-sha-256",
        "logging_collector": False,
        "log_line_prefix": "%m [%p] ",
    }


def render(settings: dict[str, str | int | bool]) -> str:
    lines = ["# Managed by pgpitr; edits here are overwritten. Use ALTER SYSTEM for the rest."]
    lines += [f"{key} = {quote(value)}" for key, value in settings.items()]
    return "\n".join(lines) + "\n"


def write_file(path: Path, text: str, owner: tuple[int, int] | None, mode: int = 0o600) -> None:
    write_atomic(path, text, mode=mode, owner=owner)


def set_managed(datadir: Path, owner: tuple[int, int] | None, **settings: str | int) -> None:
    """Change some settings of pgpitr's managed file, keeping the others."""
    path = datadir / MANAGED
    lines = path.read_text().splitlines()
    for key, value in settings.items():
        line = render({key: value}).strip().splitlines()[-1]
        lines = [line if entry.split("=", 1)[0].strip() == key else entry for entry in lines]
    write_file(path, "\n".join(lines) + "\n", owner)


def ensure_include(datadir: Path, owner: tuple[int, int] | None) -> None:
    """End postgresql.conf with the includes of pgpitr's files.  The last value of a setting
    wins, so they must come last: a line or an ``include`` someone added after them (a restored
    source's ``archive_cleanup_command``) is moved before them."""
    conf = datadir / "postgresql.conf"
    # a restored backup of a Debian cluster has none: its configuration lived in /etc
    text = conf.read_text() if conf.exists() else "# Written by pgpitr for a restored cluster.\n"
    if text.rstrip("\n").endswith(INCLUDE_LINES.rstrip("\n")):
        return
    text = text.replace(INCLUDE_LINES, "")
    write_file(conf, text.rstrip("\n") + "\n\n" + INCLUDE_LINES, owner)


def hba(superuser: str = "postgres") -> str:
    return (
        "# Managed by pgpitr.\n"
        "# Administration: over the Unix socket, only for the OS users mapped in pg_ident.conf.\n"
        "local   all          all                   peer map=pgpitr\n"
        "local   replication  all                   peer map=pgpitr\n"
        "# Accounts: scram-sha-256 over TCP on the loopback address.\n"
        "host    all          all    127.0.0.1/32   scram-sha-256\n"
        "host    replication  all    127.0.0.1/32   scram-sha-256\n"
    )


def ident(os_users: list[str], superuser: str = "postgres") -> str:
    lines = ["# Managed by pgpitr: who may administer the cluster over its socket."]
    lines += [f"pgpitr  {u}  {superuser}" for u in dict.fromkeys(os_users)]
    return "\n".join(lines) + "\n"


def recovery(
    restore: str,
    *,
    time: str | None = None,
    lsn: str | None = None,
    xid: int | None = None,
    name: str | None = None,
    immediate: bool = False,
    inclusive: bool = True,
) -> str:
    """The recovery settings of a restore: replay along the newest timeline, stop at the one
    target given (none: the end of the archived WAL) and promote there.  ``inclusive`` False
    stops just before a time, LSN or xid target (``recovery_target_inclusive = off``)."""
    settings: dict[str, str | int | bool] = {
        "restore_command": restore,
        "recovery_target_timeline": "latest",
    }
    targets: dict[str, str | int] = {}
    if time:
        targets["recovery_target_time"] = time
    if lsn:
        targets["recovery_target_lsn"] = lsn
    if xid is not None:
        targets["recovery_target_xid"] = str(xid)  # a string setting in PostgreSQL
    if name:
        targets["recovery_target_name"] = name
    if immediate:
        targets["recovery_target"] = "immediate"
    if len(targets) > 1:  # PostgreSQL refuses to start with two: fail here, naming them
        raise ValueError(f"more than one recovery target: {', '.join(targets)}")
    settings.update(targets)
    if targets:
        if not inclusive:
            settings["recovery_target_inclusive"] = False
        settings["recovery_target_action"] = "promote"
    return render(settings)


def strip_auto_conf(datadir: Path, owner: tuple[int, int] | None) -> list[str]:
    """Remove settings pgpitr owns, and every ``*_command`` (a later major's too), from
    postgresql.auto.conf, read after every other file; return the lines removed."""
    path = datadir / "postgresql.auto.conf"
    if not path.exists():
        return []
    kept, removed = [], []
    for line in path.read_text().splitlines():
        key = line.split("=", 1)[0].strip().lower()
        owned = key in OWNED_SETTINGS or key.endswith("_command")
        (removed if owned else kept).append(line)
    if removed:
        write_file(path, "\n".join(kept) + "\n", owner)
    return removed
