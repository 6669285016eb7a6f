"""A data directory's postmaster seen from outside: its pid (checked against the live process),
its lock files once it is dead for sure, and a Debian cluster's ``pg_ctlcluster``."""

from __future__ import annotations

from pathlib import Path

from pgpitr.osutil import process_alive
from pgpitr.postgres.command import run


def running_pid(datadir: Path) -> int | None:
    """The postmaster's pid, checked against the live process, or None."""
    try:
        first = (datadir / "postmaster.pid").read_text().split("\n", 1)[0]
        pid = int(first)
    except (FileNotFoundError, ValueError, PermissionError):
        return None
    if not process_alive(pid):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return pid if b"postgres" in cmdline else None


def remove_stale_locks(datadir: Path, socket_dir: Path) -> bool:
    """Remove the lock files (postmaster.pid, the socket's ``.s.PGSQL.PORT.lock``) whose
    postmaster is dead for sure; True when any was removed."""
    locks = [datadir / "postmaster.pid"]
    locks += socket_dir.glob(".s.PGSQL.*.lock")
    removed = False
    for lock in locks:
        try:
            pid = int(lock.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError):
            continue
        if dead_for_sure(pid):
            lock.unlink(missing_ok=True)
            removed = True
    return removed


def pg_ctlcluster(debian_cluster: str, action: str, timeout: int = 120) -> None:
    version, _, name = debian_cluster.partition("/")
    argv = ["pg_ctlcluster", version, name, action]
    if action in ("stop", "restart"):
        argv += ["--mode", "fast"]
    run(argv, timeout=timeout + 10)


def dead_for_sure(pid: int) -> bool:
    """No process PID, a zombie, or one that is no postgres; False when it cannot be read."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return status == "Z" or b"postgres" not in Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return True
    except OSError:
        return False
