"""Running and timing programs, as root or as the account that runs PostgreSQL; scratch space.

Every wait has a timeout.  ``timed`` measures wall-clock seconds from just before the process is
started to just after it is reaped, and the peak RSS of the process tree (``wait4``'s rusage: the
largest of the child and its waited-for descendants).
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from pgpitr.postgres.command import OsUser
from pgpitr.postgres.command import _env as _env
from pgpitr.postgres.command import _identity as _identity

PG_BINDIR = Path(os.environ.get("PGPITR_PG_BINDIR", "/usr/lib/postgresql/15/bin"))
#: The repository checkout that holds ``bench`` and ``pgpitr`` (children run from there).
ROOT = Path(__file__).resolve().parent.parent


_START = time.monotonic()


def say(message: str) -> None:
    """Progress on stdout, with the seconds since the bench started."""
    print(f"  [{time.monotonic() - _START:7.1f}s] {message}", flush=True)


class BenchError(RuntimeError):
    """A step of the benchmark failed; the message names the step and carries stderr."""


# One account type and one way to run a child as it: the engine's own (pgpitr/postgres/command.py).
User = OsUser


def server_user() -> User:
    """The account pgpitr runs PostgreSQL as; the peers' servers run as the same one."""
    from pgpitr.postgres.osuser import server_user as engine_user

    u = engine_user()
    return User(u.name, u.uid, u.gid)


def run(
    argv: Sequence[str | Path | int],
    *,
    user: User | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
    cwd: Path | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    args = [str(a) for a in argv]
    try:
        result = subprocess.run(
            args,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(user, env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            **_identity(user),
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{' '.join(args)}: timed out after {timeout:.0f} s") from None
    if check and result.returncode != 0:
        raise BenchError(f"{' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    return result


@dataclass(frozen=True)
class Timed:
    seconds: float
    peak_rss_kb: int  # the largest RSS in the process tree
    returncode: int
    stdout: str
    stderr: str


def timed(
    argv: Sequence[str | Path | int],
    *,
    user: User | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 3600,
    cwd: Path | None = None,
    log: Path | None = None,
    check: bool = True,
) -> Timed:
    """Run to completion and time it; output goes to files (``log``.out/.err) to never block."""
    args = [str(a) for a in argv]
    base = log or Path(f"/var/tmp/pgpitr-bench-{os.getpid()}-timed")
    out_path, err_path = base.with_suffix(".out"), base.with_suffix(".err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            env=_env(user, env),
            cwd=cwd,
            start_new_session=True,
            **_identity(user),
        )
        reaped: list[tuple[int, int, resource.struct_rusage]] = []
        waiter = threading.Thread(target=lambda: reaped.append(os.wait4(process.pid, 0)))
        waiter.start()
        waiter.join(timeout)
        if waiter.is_alive():
            kill_group(process.pid)
            waiter.join(30)
            raise BenchError(f"{' '.join(args)}: timed out after {timeout:.0f} s")
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(reaped[0][1])
    usage = reaped[0][2]
    stdout = out_path.read_text(errors="replace")
    stderr = err_path.read_text(errors="replace")
    if log is None:
        out_path.unlink(missing_ok=True)
        err_path.unlink(missing_ok=True)
    if check and process.returncode != 0:
        raise BenchError(f"{' '.join(args)} exited {process.returncode}:\n{stderr[-3000:]}")
    return Timed(seconds, int(usage.ru_maxrss), process.returncode, stdout, stderr)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_group(pid: int) -> None:
    """End a process we started (its own session) and its children."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def make_dir(path: Path, owner: User | None = None, mode: int = 0o755) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(mode)
    if owner is not None:
        os.chown(path, owner.uid, owner.gid)
    return path


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll ``predicate`` until true; return the seconds it took; raise after ``timeout``."""
    started = time.perf_counter()
    deadline = started + timeout
    while not predicate():
        if time.perf_counter() > deadline:
            raise BenchError(f"{what}: not done after {timeout:.0f} s")
        time.sleep(interval)
    return time.perf_counter() - started


def du(path: Path) -> int:
    """Bytes used by the files under ``path`` (apparent sizes)."""
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_size
            except FileNotFoundError:
                continue
    return total


def remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def stop_postmasters_under(path: Path) -> list[int]:
    """Stop (immediate) every PostgreSQL server whose data directory lies under ``path``."""
    stopped = []
    for pidfile in path.glob("**/postmaster.pid"):
        try:
            pid = int(pidfile.read_text().split("\n", 1)[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (ValueError, OSError):
            continue
        if b"postgres" not in cmdline:
            continue
        try:
            os.kill(pid, signal.SIGQUIT)
        except ProcessLookupError:
            continue
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        stopped.append(pid)
    return stopped


def home_with_local_server(prefix: str, **environment: str) -> tuple[Path, dict[str, str]]:
    """A new PGPITR_HOME whose commands use pgpitr's own local Prefect server on a free port
    (never a profile's or PREFECT_API_URL's), set in this process's environment with
    ENVIRONMENT; the home and that environment."""
    from tests.conftest import reachable_tempdir

    home = reachable_tempdir(prefix)
    os.environ.update(
        PGPITR_HOME=str(home), PGPITR_PREFECT_PORT=str(free_port()), TZ="UTC", **environment
    )
    for name in ("PREFECT_API_URL", "PREFECT_PROFILE", "PGPITR_PREFECT_ADDRESS"):
        os.environ.pop(name, None)
    os.environ["PREFECT_HOME"] = str(home / "prefect-home")
    return home, dict(os.environ)
