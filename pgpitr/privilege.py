"""pgpitr never works with root's rights: the service account, and leaving root for it.

The service account is the OS user that runs PostgreSQL for pgpitr (``PGPITR_OS_USER``, else
``postgres`` when it exists, else the ``pgpitr`` system account the install makes).  Every
operation, the agent and the local Prefect server run as it, the way pgBackRest and Barman run
as theirs: what it reads and runs (cluster.json's bindir, locks, logs, repository objects, a
restored data directory) is then never trusted by a more privileged process.  Root installs (the
account, PGPITR_HOME, the API credentials, systemd units) and does nothing else: a ``pgpitr``
command started by root leaves root for the account before it reads any state
(``leave_root``).  docs/security.md states the model.

Kept light (os, pwd): the entry point calls it before anything else is imported.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from pgpitr.errors import PitrError

ACCOUNT_ENV = "PGPITR_OS_USER"
#: tried in order when PGPITR_OS_USER is not set; the install makes the last when none exists
ACCOUNTS = ("postgres", "pgpitr")
#: the home the install makes for the service account (state.home's default for it)
SYSTEM_HOME = Path("/var/lib/pgpitr")


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int
    home: str  # its login directory (HOME), where Prefect keeps its profile


def service_account() -> Account | None:
    """The service account, or None when the install has not made it yet."""
    wanted = os.environ.get(ACCOUNT_ENV)
    for name in [wanted] if wanted else ACCOUNTS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        if entry.pw_uid == 0:
            raise PitrError(
                f"{ACCOUNT_ENV}={name} is root; pgpitr and PostgreSQL never run as root",
                hint=f"set {ACCOUNT_ENV} to an unprivileged account",
            )
        return Account(entry.pw_name, entry.pw_uid, entry.pw_gid, entry.pw_dir)
    return None


def make_service_account() -> Account:
    """The service account, made first (an install step, root's) when none exists: a system
    account ``pgpitr`` whose login directory is SYSTEM_HOME and that cannot log in."""
    account = service_account()
    if account is not None:
        return account
    import shutil
    import subprocess

    name = os.environ.get(ACCOUNT_ENV) or ACCOUNTS[-1]
    useradd = shutil.which("useradd") or "/usr/sbin/useradd"
    made = subprocess.run(
        [useradd, "--system", "--user-group", "--home-dir", str(SYSTEM_HOME)]
        + ["--no-create-home", "--shell", "/usr/sbin/nologin", name],
        capture_output=True,
        text=True,
    )
    account = service_account()
    if account is None:  # not there now: useradd failed for another reason than a twin
        raise PitrError(f"could not create the service account {name}: {made.stderr.strip()}")
    return account


def leave_root(home: Path) -> Account:
    """Become the service account for good (groups, gid, uid; no way back), acting for HOME.

    Called by root only, first thing: the environment says who we now are (HOME, USER), and
    PGPITR_HOME is pinned so that the account works in the home root meant."""
    account = service_account()
    if account is None:
        raise PitrError(
            "pgpitr runs as an unprivileged service account, and none exists yet "
            f"({', '.join(ACCOUNTS)})",
            hint="install pgpitr first (`make install` as root makes the account and its home)",
        )
    _check_home(home, account)
    os.initgroups(account.name, account.gid)
    os.setresgid(account.gid, account.gid, account.gid)
    os.setresuid(account.uid, account.uid, account.uid)
    if os.geteuid() == 0 or os.getuid() == 0:  # never go on as root by mistake
        raise PitrError("could not leave root for the service account")
    os.environ.update(
        PGPITR_HOME=str(home),
        HOME=account.home if os.path.isdir(account.home) else str(home),
        USER=account.name,
        LOGNAME=account.name,
    )
    # root's Prefect home is not the account's: its profile goes in its own (~/.prefect)
    for name in ("PREFECT_HOME", "PREFECT_PROFILES_PATH"):
        value = os.environ.get(name)
        if value and not _owned_by(Path(value), account):
            del os.environ[name]
    return account


def _owned_by(path: Path, account: Account) -> bool:
    for candidate in (path, path.parent):
        try:
            return candidate.stat().st_uid == account.uid
        except FileNotFoundError:
            continue
    return False


def adopt_home(home: Path, account: Account) -> int:
    """Give HOME to the account (an install step): made when missing; what root owns in it (a
    home of a version of pgpitr that ran as root) handed over.  Walked by descriptor without
    following links, so that nothing the account could swap in mid-walk is handed over instead.
    The number of entries handed over."""
    if not home.exists():
        _check_home(home, account)
        return 1
    handed = 0
    for _path, dirs, files, dirfd in os.fwalk(home, follow_symlinks=False):
        if os.fstat(dirfd).st_uid == 0:
            os.fchown(dirfd, account.uid, account.gid)
            handed += 1
        for name in dirs + files:
            info = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            if info.st_uid == 0:
                os.chown(name, account.uid, account.gid, dir_fd=dirfd, follow_symlinks=False)
                handed += 1
    _check_home(home, account)
    return handed


def _check_home(home: Path, account: Account) -> None:
    """PGPITR_HOME must be the account's: a missing one is made for it (an install step), one
    another account owns is refused, never taken over."""
    try:
        owner = home.stat().st_uid
    except FileNotFoundError:
        home.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        home.mkdir(mode=0o750)
        # by descriptor, refusing a link: the parent may be a directory the account can write
        fd = os.open(home, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchown(fd, account.uid, account.gid)
        finally:
            os.close(fd)
        return
    if owner != account.uid:
        holder = account_name(owner)
        raise PitrError(
            f"PGPITR_HOME {home} belongs to {holder}, not to pgpitr's service account "
            f"{account.name}, which every pgpitr command runs as",
            hint=f"`make install` as root hands the default home to {account.name}; for "
            f"another home: chown -R {account.name}: {home}",
        )


def account_name(uid: int) -> str:
    """The name of the account UID, or ``uid N`` for one with no name."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"
