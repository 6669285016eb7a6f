"""Which operating-system account runs PostgreSQL.

PostgreSQL refuses to run as root, and pgpitr runs as its service account (pgpitr/privilege.py):
the servers it creates run as the account pgpitr runs as.
"""

from __future__ import annotations

import ctypes
import os
import platform
import pwd
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pgpitr.errors import ClusterStateError, PitrError
from pgpitr.postgres.command import OsUser, run
from pgpitr.privilege import make_service_account, service_account


def server_user(create: bool = True) -> OsUser:
    """The account the servers run as: this process's own, except under root (a test harness or
    an install step: pgpitr's commands leave root first), where it is the service account."""
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    account = make_service_account() if create else service_account()
    if account is None:
        raise PitrError("pgpitr's service account does not exist", hint="run `make install`")
    return OsUser(account.name, account.uid, account.gid)


def make_dir(path: Path, user: OsUser, mode: int = 0o750) -> None:
    """Create a directory (and parents) the server account owns."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    path.chmod(mode)
    if not user.is_self:
        os.chown(path, user.uid, user.gid)


def check_reachable(user: OsUser, home: Path, *, writable: bool = True) -> None:
    """Prove that the server account can use pgpitr's home and run the WAL commands.

    On these machines root's Python lives under /root (mode 700): a cluster whose archive_command
    the server account cannot execute would silently stop archiving, so refuse up front.
    """
    if user.is_self:
        return
    test = (
        ["test", "-w", str(home), "-a", "-x", str(home)] if writable else ["test", "-x", str(home)]
    )
    result = run(test, user=user, check=False)
    if result.returncode != 0:
        raise ClusterStateError(
            f"the OS user {user.name} cannot {'write to' if writable else 'enter'} {home}",
            hint="set PGPITR_HOME to a directory it can reach (the default for root is "
            "/var/lib/pgpitr)",
        )
    # as PostgreSQL will run it: isolated, so the package must be installed, not found in a
    # working directory
    probe = run(
        [sys.executable, "-I", "-c", "import pgpitr.wal.commands"], user=user, cwd="/", check=False
    )
    if probe.returncode != 0:
        raise ClusterStateError(
            f"the OS user {user.name} cannot run {sys.executable} with pgpitr installed, so "
            "PostgreSQL could not archive WAL",
            hint="install pgpitr where every user can read it: `make install` puts it in "
            "/opt/pgpitr/venv",
        )


#: setresuid(2) by number: the libc wrapper changes every thread of the process, the system
#: call only the calling one.
_SYS_SETRESUID = {"x86_64": 117, "aarch64": 147}


def _setresuid_this_thread(euid: int) -> None:
    number = _SYS_SETRESUID.get(platform.machine())
    if number is None:
        raise ClusterStateError(f"cannot change a thread's identity on {platform.machine()}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(number, -1, euid, -1) != 0:
        errno = ctypes.get_errno()
        raise ClusterStateError(f"setresuid(-1, {euid}, -1) failed: {os.strerror(errno)}")


@contextmanager
def acting_as(user: OsUser | None) -> Iterator[None]:
    """While the block runs, this thread's effective uid is USER's; the other threads of the
    process (a flow run's API and log workers) keep theirs.

    Peer authentication checks the uid a Unix-socket connection was opened with, so a
    connection opened inside this block logs in as USER's role on a server whose pg_hba.conf
    pgpitr did not write (a registered cluster), and stays usable after the block.  Only
    opening connections belongs inside: nothing that writes files."""
    if user is None or user.is_self:
        yield
        return
    if os.geteuid() != 0:
        me = pwd.getpwuid(os.geteuid()).pw_name
        raise ClusterStateError(
            f"pgpitr runs as {me}; the server runs as {user.name}, whose peer authentication "
            f"only {user.name} (or root, acting as it) passes",
            hint=f"run pgpitr as root or as {user.name}",
        )
    _setresuid_this_thread(user.uid)
    try:
        yield
    finally:
        _setresuid_this_thread(0)
