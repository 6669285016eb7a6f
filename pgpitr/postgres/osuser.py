"""Which operating-system account runs PostgreSQL.

PostgreSQL refuses to run as root.  When pgpitr is run by root, the servers run as an unprivileged
account: ``PGPITR_OS_USER`` if set, else ``postgres`` if it exists, else a ``pgpitr`` system
account created on first use.  Run by anyone else, the servers run as that user.
"""

from __future__ import annotations

import os
import pwd
import shutil
import sys
from pathlib import Path

from pgpitr.errors import ClusterStateError, PitrError
from pgpitr.postgres.command import OsUser, run


def server_user(create: bool = True) -> OsUser:
    if os.geteuid() != 0:
        entry = pwd.getpwuid(os.geteuid())
        return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    wanted = os.environ.get("PGPITR_OS_USER")
    candidates = [wanted] if wanted else ["postgres", "pgpitr"]
    for name in candidates:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid == 0:
            raise PitrError(f"PGPITR_OS_USER={name} is root; PostgreSQL cannot run as root")
        return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)
    name = candidates[-1]
    if not create:
        raise PitrError(f"the OS user {name} does not exist")
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    run(
        [
            useradd,
            "--system",
            "--user-group",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ]
    )
    entry = pwd.getpwnam(name)
    return OsUser(entry.pw_name, entry.pw_uid, entry.pw_gid)


def chown_tree(path: Path, user: OsUser) -> None:
    if user.is_self:
        return
    os.chown(path, user.uid, user.gid)
    for dirpath, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(dirpath, name), user.uid, user.gid, follow_symlinks=False)


def make_dir(path: Path, user: OsUser, mode: int = 0o750) -> None:
    """Create a directory (and parents) the server account owns."""
    path.mkdir(parents=True, exist_ok=True, mode=mode)
    path.chmod(mode)
    if not user.is_self:
        os.chown(path, user.uid, user.gid)


def check_reachable(user: OsUser, home: Path) -> None:
    """Prove that the server account can use pgpitr's home and run the WAL commands.

    On these machines root's Python lives under /root (mode 700): a cluster whose archive_command
    the server account cannot execute would silently stop archiving, so refuse up front.
    """
    if user.is_self:
        return
    result = run(["test", "-w", str(home), "-a", "-x", str(home)], user=user, check=False)
    if result.returncode != 0:
        raise ClusterStateError(
            f"the OS user {user.name} cannot write to {home}",
            hint="set PGPITR_HOME to a directory it can reach (the default for root is "
            "/var/lib/pgpitr)",
        )
    probe = run([sys.executable, "-E", "-c", "import pgpitr.walcli"], user=user, check=False)
    if probe.returncode != 0:
        raise ClusterStateError(
            f"the OS user {user.name} cannot run {sys.executable} with pgpitr installed, so "
            "PostgreSQL could not archive WAL",
            hint="install pgpitr where every user can read it: `make install` puts it in "
            "/opt/pgpitr/venv",
        )
