"""The one gateway to external programs, and the pure builders of their command lines.

Every subprocess goes through ``run`` (or ``popen`` for streams), which raises ``CommandError``
with the program's stderr; builders return argv lists and are unit-tested without a server.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from pgpitr.errors import CommandError


@dataclass(frozen=True)
class OsUser:
    """The account PostgreSQL's processes run as (never root)."""

    name: str
    uid: int
    gid: int

    @property
    def is_self(self) -> bool:
        return self.uid == os.geteuid()


def _identity(user: OsUser | None) -> dict:
    if user is None or user.is_self:
        return {}
    return {"user": user.uid, "group": user.gid, "extra_groups": []}


#: Secrets of the CLI's environment that no program it starts is given: a server would keep them
#: in its environment for its whole life (``/proc/PID/environ``, every archive_command). The
#: server's archiver reads the repository's keys from its own 0600 file
#: (``clusters._store_credentials``) and the encryption key from its key file (``keys.py``).
SECRET_ENV = (
    "PGPITR_ENCRYPTION_KEY",
    "PGPITR_ACCOUNT_PASSWORD",
    "PGPASSWORD",
    "AWS_ACCESS_KEY_ID",  # without its secret beside it, boto3 would refuse the key file
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
)


def _env(user: OsUser | None, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SECRET_ENV}
    if user is not None and not user.is_self:
        import pwd

        env["HOME"] = pwd.getpwuid(user.uid).pw_dir
        env["USER"] = env["LOGNAME"] = user.name
    env.setdefault("LC_ALL", "C.UTF-8")
    if extra:
        env.update(extra)
    return env


def run(
    argv: Sequence[str],
    *,
    user: OsUser | None = None,
    timeout: float | None = 300,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    input: bytes | None = None,
    check: bool = True,
) -> subprocess.CompletedProcess[str]:
    """Run a program to completion; raise CommandError with its stderr when it fails."""
    argv = [str(a) for a in argv]
    try:
        result = subprocess.run(
            argv,
            input=input.decode() if input is not None else None,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(user, env),
            cwd=cwd,
            **_identity(user),
        )
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: not found") from None
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise CommandError(argv, -1, f"{stderr}\ntimed out after {timeout} s") from None
    if check and result.returncode != 0:
        raise CommandError(argv, result.returncode, result.stderr or result.stdout)
    return result


def popen(
    argv: Sequence[str],
    *,
    user: OsUser | None = None,
    env: Mapping[str, str] | None = None,
    stdin: int | None = subprocess.DEVNULL,
    stdout: int | None = subprocess.PIPE,
    stderr: int | IO[bytes] | None = subprocess.PIPE,
) -> subprocess.Popen[bytes]:
    """Start a program whose output is a stream; the caller waits and calls ``check``.
    A long-running one passes ``stderr`` a log file: a pipe nobody reads would fill."""
    argv = [str(a) for a in argv]
    try:
        return subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=_env(user, env),
            **_identity(user),
        )
    except FileNotFoundError:
        raise CommandError(argv, 127, f"{argv[0]}: not found") from None


def check(process: subprocess.Popen[bytes], argv: Sequence[str], stderr: str) -> None:
    if process.returncode != 0:
        raise CommandError([str(a) for a in argv], process.returncode, stderr)


# -- builders --------------------------------------------------------------------------------


def initdb_command(bindir: Path, datadir: Path, *, superuser: str = "postgres") -> list[str]:
    return [
        str(bindir / "initdb"),
        "--pgdata",
        str(datadir),
        "--username",
        superuser,
        "--auth-local",
        "peer",
        "--auth-host",
        "scram-sha-256",
        "--encoding",
        "UTF8",
        "--locale",
        "C.UTF-8",
        "--data-checksums",
    ]


def pg_ctl_command(
    bindir: Path,
    action: str,
    datadir: Path,
    *,
    log: Path | None = None,
    mode: str = "fast",
    timeout: int = 120,
) -> list[str]:
    argv = [str(bindir / "pg_ctl"), action, "--pgdata", str(datadir), "--silent"]
    if action in ("start", "stop", "restart"):
        argv += ["--wait", "--timeout", str(timeout)]
    if action in ("start", "restart") and log is not None:
        argv += ["--log", str(log)]
    if action in ("stop", "restart"):
        argv += ["--mode", mode]
    return argv


def basebackup_command(
    bindir: Path,
    socket_dir: Path,
    port: int,
    *,
    label: str,
    include_wal: bool,
    compress_level: int = 3,
    workers: int = 2,
    superuser: str = "postgres",
    major: int = 15,
    incremental_from: Path | None = None,
) -> list[str]:
    """pg_basebackup streaming one tar (with backup_manifest) to stdout, zstd-compressed unless
    ``compress_level`` is 0.  Before PostgreSQL 15, pg_basebackup cannot compress with zstd (nor
    take ``--compress none``): the tar comes as it is and the caller compresses it.

    WAL: with log backup on, the archive holds the WAL and the server waits until the last segment
    is archived (``-X none``); with it off, the WAL is fetched into the tar (``-X fetch``).
    ``incremental_from`` (PostgreSQL 17+) is the parent's backup_manifest: the tar then holds
    only the blocks changed since the parent, from the server's WAL summaries.
    """
    compress = f"client-zstd:level={compress_level}" if compress_level else "none"
    if compress_level and workers > 1:
        compress += f",workers={workers}"
    if major < 15 and compress_level:
        raise ValueError(f"pg_basebackup {major} cannot compress with zstd: compress in pgpitr")
    compression = ["--compress", compress] if major >= 15 else []
    return [
        str(bindir / "pg_basebackup"),
        "--host",
        str(socket_dir),
        "--port",
        str(port),
        "--username",
        superuser,
        "--no-password",
        "--pgdata",
        "-",
        "--format",
        "tar",
        "--wal-method",
        "none" if include_wal is False else "fetch",
        "--checkpoint",
        "fast",
        *compression,
        "--manifest-checksums",
        "CRC32C",
        "--label",
        label,
        *([f"--incremental={incremental_from}"] if incremental_from else []),
        "--verbose",
        "--progress",
    ]


#: How pg_combinebackup puts unchanged files into the output: hard links (18+; the inputs are
#: temporary and removed afterwards, so sharing their inodes is safe), reflinks, the kernel's
#: copy_file_range, or reads and writes (``osutil.copy_mode`` probes what the file system takes).
COMBINE_MODES = ("link", "clone", "copy-file-range", "copy")


def combinebackup_command(
    bindir: Path, inputs: Sequence[Path], output: Path, mode: str = "copy"
) -> list[str]:
    """pg_combinebackup of a lineage (the full backup first) into ``output``."""
    if mode not in COMBINE_MODES:
        raise ValueError(f"unknown copy mode {mode!r}: expected one of {COMBINE_MODES}")
    how = [] if mode == "copy" else [f"--{mode}"]
    return [
        str(bindir / "pg_combinebackup"),
        *how,
        "--no-sync",  # the restored server syncs its data directory when it starts
        "--output",
        str(output),
        *[str(p) for p in inputs],
    ]


def waldump_command(bindir: Path, segment: Path, *, timeline: int) -> list[str]:
    return [
        str(bindir / "pg_waldump"),
        "--rmgr",
        "Transaction",
        "--timeline",
        str(timeline),
        str(segment),
    ]


def client_options(host: str | Path, port: int, user: str) -> list[str]:
    """A client program's connection options.  No password: a client reads it from
    PGPASSWORD, its passfile or a prompt, never from argv (``ps`` shows argv to everyone)."""
    return ["--host", str(host), "--port", str(port), "--username", user]


def psql_command(bindir: Path, connection: Sequence[str], dbname: str) -> list[str]:
    """psql on DBNAME with ``connection`` (``client_options``)."""
    return [str(bindir / "psql"), *connection, "--dbname", dbname]


def amcheck_command(bindir: Path, connection: Sequence[str]) -> list[str]:
    """pg_amcheck over every database: heap, and B-tree indexes against their heap."""
    return [
        str(bindir / "pg_amcheck"),
        "--all",
        "--heapallindexed",
        "--install-missing",
        "--no-password",
        *connection,
    ]


def controldata_command(bindir: Path, datadir: Path) -> list[str]:
    return [str(bindir / "pg_controldata"), "-D", str(datadir)]


def verifybackup_command(bindir: Path, data: Path, wal_directory: Path | None = None) -> list[str]:
    """pg_verifybackup of the backup extracted in DATA; its WAL from ``wal_directory`` when the
    backup holds none (the segments fetched from the archive), else from the backup itself."""
    wal = ["--wal-directory", str(wal_directory)] if wal_directory is not None else []
    return [str(bindir / "pg_verifybackup"), "--quiet", *wal, str(data)]


def _conn_value(value: object) -> str:
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def receivewal_command(
    bindir: Path,
    directory: Path,
    conninfo: Mapping[str, object],
    *,
    slot: str,
    application_name: str,
    synchronous: bool,
) -> list[str]:
    """pg_receivewal on SLOT into ``directory``: one connection (``--no-loop``: the supervisor
    restarts it, with a pause it controls), a status report every second.  ``conninfo`` is a
    connection without its database (replication takes none) nor password: argv is readable
    by every user of the host (``ps``), so one is refused here."""
    if "password" in conninfo:
        raise ValueError("a password never goes into pg_receivewal's argv")
    dsn = " ".join(
        f"{key}={_conn_value(value)}"
        for key, value in {**conninfo, "application_name": application_name}.items()
        if key != "dbname"
    )
    argv = [
        str(bindir / "pg_receivewal"),
        "--directory",
        str(directory),
        "--slot",
        slot,
        "--dbname",
        dsn,
        "--no-loop",
        "--no-password",
        "--status-interval",
        "1",
    ]
    return argv + (["--synchronous"] if synchronous else [])
