"""A detached process under PGPITR_HOME: what the agent (deployments/agent.py) and the local
Prefect server (deployments/localserver.py) each are when pgpitr starts them in the background.

``PGPITR_HOME/DIRECTORY/STEM.json`` records its pid (and what its owner adds: the host, the
port), ``STEM.log`` takes its output.  It runs in a session of its own, so that it outlives the
command that started it and is stopped as a process group (its children with it).  A recorded
pid counts only while that process lives and its command line still carries the daemon's marks:
a pid reused by another program after a reboot is not ours to signal.

Nothing here imports Prefect: read-only commands use it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pgpitr import state


@dataclass(frozen=True)
class Daemon:
    directory_name: str  # under PGPITR_HOME
    stem: str  # STEM.json, STEM.log
    #: arguments its command line has (``pgpitr agent run``: "agent", "run")
    marks: tuple[bytes, ...]

    def directory(self) -> Path:
        return state.home() / self.directory_name

    def pidfile(self) -> Path:
        return self.directory() / f"{self.stem}.json"

    def logfile(self) -> Path:
        return self.directory() / f"{self.stem}.log"

    def recorded(self) -> dict[str, Any] | None:
        """What its pidfile records (``pid`` an int), while that process lives; else None."""
        try:
            data = json.loads(self.pidfile().read_text())
            data["pid"] = int(data["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        try:
            cmdline = Path(f"/proc/{data['pid']}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if not all(mark in cmdline for mark in self.marks):
            return None  # the pid was reused by something else
        return data

    def spawn(
        self,
        argv: list[str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        **record: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ARGV detached, its output appended to the log, and record its pid (and RECORD)."""
        from pgpitr.osutil import open_private

        self.directory().mkdir(parents=True, exist_ok=True, mode=0o700)
        # a log planted as a link, or by another account, is refused rather than followed
        fd = open_private(self.logfile(), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        with os.fdopen(fd, "ab") as log:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=None if env is None else dict(env),
                start_new_session=True,  # outlives the command; stopped as a process group
            )
        state.write_json_atomic(self.pidfile(), {"pid": process.pid, **record})
        return process

    def forget(self) -> None:
        self.pidfile().unlink(missing_ok=True)

    def stop(self, timeout: float) -> int | None:
        """Stop it (SIGTERM to its group, SIGKILL after TIMEOUT); its pid, None if none ran."""
        found = self.recorded()
        if found is None:
            self.forget()
            return None
        kill(found["pid"], timeout)
        self.forget()
        return int(found["pid"])


def kill(pid: int, timeout: float = 30) -> None:
    """SIGTERM to PID's process group; SIGKILL if it still lives after TIMEOUT seconds."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)  # reap it when it is our child
        if done:
            return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]
