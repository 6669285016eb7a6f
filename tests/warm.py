"""A warm start for the suite's ``pgpitr`` commands.

Each ``pgpitr`` command the suite runs is a process of its own, as a user's is, but a cold start
imports Prefect, typer and pgpitr's flows again: about 1.5-2 s of CPU for a command that runs a
flow, two thirds of the command's whole cost, and the largest single use of the CI machine's two
cores (about 500 of the suite's 2,000 CPU seconds).  Here one process per test worker imports all
of that once and never starts a thread; each command is a fork of it that takes the caller's
argv, environment, working directory and standard streams, refreshes Prefect's settings from
that environment, and runs ``pgpitr``'s own entry point to a normal interpreter exit (atexit
handlers, log flushes and all).  The caller sees what ``subprocess.run`` gives: exit code,
stdout, stderr, a timeout.

What a warm child cannot show is the import itself under the command's environment: the tests
that start as root run every command cold (as does ``PGPITR_TEST_COLD_CLI=1``), so do the tests
that start ``pgpitr`` themselves (agents, a killed backup, the local server), and
tests/test_warm.py holds warm commands to the output of cold ones.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import selectors
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

COLD_ENV = "PGPITR_TEST_COLD_CLI"
_HEADER = struct.Struct("!q")


def enabled() -> bool:
    return os.environ.get(COLD_ENV, "") in ("", "0") and os.geteuid() != 0


# -- the warm process --------------------------------------------------------------------------


def _preload() -> None:
    """What a command spends its start on: Prefect, typer, rich and pgpitr's flows (which bring
    the tasks and the engine).  Not the ``cli`` package: its consoles read the terminal and the
    environment when made, which must be the command's."""
    import importlib

    # Prefect imports FastAPI's encoders when a flow's parameters are serialized, in each run
    import fastapi.encoders  # noqa: F401
    import prefect.flow_engine  # noqa: F401
    import prefect.main  # noqa: F401
    import rich.console  # noqa: F401
    import rich.table  # noqa: F401
    import typer  # noqa: F401

    from flows import registry

    for entry in registry.FLOWS:
        if entry.kubernetes and not registry.kubernetes_available():
            continue
        importlib.import_module(entry.entrypoint.partition(":")[0])
    # botocore's S3 model, parsed here once instead of in each command that opens a repository
    from pgpitr.repository.s3 import shared_data_loader

    shared_data_loader().load_service_model("s3", "service-2")
    assert "cli" not in sys.modules, "the cli package must be imported by each command"


def _read_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def _serve(path: str) -> list[str]:
    """Accept commands for ever; returns only in a command's own process, with its argv."""
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    watch = selectors.DefaultSelector()
    watch.register(listener, selectors.EVENT_READ)
    watch.register(sys.stdin, selectors.EVENT_READ)  # EOF: the test worker is gone
    while True:
        for key, _ in watch.select():
            if key.fileobj is sys.stdin:
                os._exit(0)
            conn, _ = listener.accept()
            if os.fork() == 0:
                watch.close()
                listener.close()
                return _session(conn)
            conn.close()
        while True:  # reap the sessions that ended
            try:
                if os.waitpid(-1, os.WNOHANG)[0] == 0:
                    break
            except ChildProcessError:
                break


def _session(conn: socket.socket) -> list[str]:
    """One command: fork it, tell the caller its pid, wait, tell its exit code.  The caller may
    close its end to ask for a kill (its timeout)."""
    header, fds, _, _ = socket.recv_fds(conn, _HEADER.size, 3)
    header += _read_exactly(conn, _HEADER.size - len(header))
    request = json.loads(_read_exactly(conn, _HEADER.unpack(header)[0]))
    pid = os.fork()
    if pid == 0:
        conn.close()
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        return request["argv"]
    for fd in fds:
        os.close(fd)
    conn.sendall(_HEADER.pack(pid))
    exited = os.pidfd_open(pid)
    watch = selectors.DefaultSelector()
    watch.register(exited, selectors.EVENT_READ)
    watch.register(conn, selectors.EVENT_READ)
    while True:
        if any(key.fileobj is conn for key, _ in watch.select()):
            with contextlib.suppress(OSError):
                os.kill(pid, 9)  # still our unreaped child: the pid cannot be another's
            watch.unregister(conn)
            continue
        break
    code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
    with contextlib.suppress(OSError):
        conn.sendall(_HEADER.pack(code))
    os._exit(0)


def _run_command(argv: list[str]) -> None:
    """In the command's process: what a cold ``python -m pgpitr`` would have read from its
    environment at import, read again from this one."""
    import prefect.context

    time.tzset()  # TZ, which the C library reads once
    prefect.context.refresh_global_settings_context()
    sys.argv = [sys.argv[0], *argv]
    from pgpitr.__main__ import main

    main(argv)


# -- the caller --------------------------------------------------------------------------------


class _Warm:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner = 0
        self._process: subprocess.Popen | None = None
        self._path = ""

    def _ensure(self) -> str:
        with self._lock:
            alive = self._process is not None and self._process.poll() is None
            if self._owner == os.getpid() and alive:
                return self._path
            directory = tempfile.mkdtemp(prefix="pgpitr-warm-")
            self._path = str(Path(directory) / "socket")
            self._process = subprocess.Popen(
                [sys.executable, "-m", "tests.warm", self._path],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=str(Path(__file__).resolve().parents[1]),
                start_new_session=True,
            )
            line = self._process.stdout.readline()  # type: ignore[union-attr]
            if line != "ready\n":
                raise RuntimeError(f"the warm pgpitr process did not start: {line!r}")
            self._owner = os.getpid()
            return self._path

    def run(
        self,
        argv: list[str],
        shown: list[str],
        env: dict[str, str],
        input: str | None,
        timeout: float,
    ) -> subprocess.CompletedProcess[str]:
        path = self._ensure()
        stdin_read, stdin_write = os.pipe() if input is not None else (_inherited_stdin(), -1)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        body = json.dumps({"argv": argv, "env": env, "cwd": os.getcwd()}).encode()
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            conn.connect(path)
            socket.send_fds(conn, [_HEADER.pack(len(body))], [stdin_read, out_write, err_write])
            conn.sendall(body)
        finally:
            for fd in (stdin_read, out_write, err_write):
                os.close(fd)
        if input is not None:
            feeder = threading.Thread(target=_feed, args=(stdin_write, input), daemon=True)
            feeder.start()
        deadline = time.monotonic() + timeout
        streams = {out_read: bytearray(), err_read: bytearray()}
        watch = selectors.DefaultSelector()
        for fd in streams:
            watch.register(fd, selectors.EVENT_READ)
        timed_out = False
        try:
            while watch.get_map():
                left = deadline - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                for key, _ in watch.select(left):
                    chunk = os.read(key.fd, 65536)
                    if chunk:
                        streams[key.fd] += chunk
                    else:
                        watch.unregister(key.fd)
            _read_exactly(conn, _HEADER.size)  # the pid, sent before any exit code
            if timed_out:
                conn.shutdown(socket.SHUT_WR)  # the session kills the command
            code = _HEADER.unpack(_read_exactly(conn, _HEADER.size))[0]
        finally:
            watch.close()
            conn.close()
            for fd in streams:
                os.close(fd)
        stdout, stderr = (_text(bytes(streams[fd])) for fd in (out_read, err_read))
        if timed_out:
            raise subprocess.TimeoutExpired(shown, timeout, output=stdout, stderr=stderr)
        return subprocess.CompletedProcess(shown, code, stdout, stderr)


def _inherited_stdin() -> int:
    """What subprocess.run gives a child when no input is given: this process's own."""
    try:
        return os.dup(0)
    except OSError:
        return os.open(os.devnull, os.O_RDONLY)


def _feed(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode())
    except BrokenPipeError:
        pass
    finally:
        os.close(fd)


def _text(data: bytes) -> str:
    # as subprocess.run(text=True): the locale's encoding, universal newlines
    return data.decode().replace("\r\n", "\n").replace("\r", "\n")


WARM = _Warm()


def run(
    argv: list[str], shown: list[str], env: dict[str, str], input: str | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    """``pgpitr ARGV`` in a fork of the warm process; SHOWN is the argv errors name."""
    return WARM.run(argv, shown, env, input, timeout)


if __name__ == "__main__":
    _preload()
    # what every fork shares stays out of the collector's sight: a collection in a command
    # would otherwise walk (and so copy, page by page) the whole preloaded heap
    gc.freeze()
    _run_command(_serve(sys.argv[1]))
