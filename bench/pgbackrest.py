"""pgBackRest, the reference: one configuration, repository, lock and spool directory per run.

Settings match pgpitr's where a setting exists on both sides: zstd level 3, the same parallelism,
a local-directory (posix) repository, a fast start checkpoint.  Its commands run as the account
that runs PostgreSQL, as its documentation asks.

The binary is ``PGBACKREST=/path`` when set (a build of a newer release: the distribution's 2.45
cannot back up PostgreSQL 17), else ``pgbackrest`` on PATH.  A binary that does not know the
server's version fails ``stanza-create`` with pgBackRest's own hint; that is
``UnsupportedServer``, so that a bench can say so and skip the comparison.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import datetime
from pathlib import Path

from bench.proc import PG_BINDIR, BenchError, User, make_dir, run, timed, wait_until

STANZA = "bench"
#: pgBackRest's hint when pg_control is of a PostgreSQL it does not know (src/postgres/interface.c)
_UNKNOWN_SERVER = "is this version of PostgreSQL supported"


class UnsupportedServer(BenchError):
    """This pgBackRest binary cannot back up the server's PostgreSQL version."""


def find(explicit: str | None = None) -> str | None:
    """The pgBackRest binary: ``explicit``, else ``$PGBACKREST``, else PATH's; None if none."""
    chosen = explicit or os.environ.get("PGBACKREST")
    if chosen:
        if not os.access(chosen, os.X_OK):
            raise BenchError(f"pgBackRest binary {chosen} is not an executable file")
        return chosen
    return shutil.which("pgbackrest")


def version(binary: str) -> str:
    """``pgBackRest 2.59.1``."""
    return run([binary, "version"]).stdout.strip()


def ensure_installed() -> str:
    """Install pgBackRest from the distribution when none is found; return its version line."""
    if find() is None:
        run(["apt-get", "update", "-qq"], timeout=600)
        run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "pgbackrest"],
            env={"DEBIAN_FRONTEND": "noninteractive"},
            timeout=900,
        )
    binary = find()
    assert binary is not None
    return version(binary)


class PgBackRest:
    def __init__(
        self,
        workdir: Path,
        user: User,
        *,
        pg_path: Path,
        socket_dir: Path,
        port: int,
        process_max: int = 1,
        archive_async: bool = False,
        compress_level: int = 3,
        binary: str | None = None,
        block_repo: bool = False,
    ) -> None:
        """``block_repo`` adds a second repository (``--repo=2``) with bundles and block
        incremental (``repo2-bundle``, ``repo2-block``); archive-push stores into both."""
        self.binary = binary or find() or "pgbackrest"
        self.dir = make_dir(workdir, user, 0o750)
        self.user = user
        self.repo = make_dir(workdir / "repo", user, 0o750)
        repos = f"repo1-path={self.repo}\nrepo1-type=posix\nrepo1-retention-full=9\n"
        self.block_repo = make_dir(workdir / "repo-block", user, 0o750) if block_repo else None
        if self.block_repo is not None:
            repos += (
                f"repo2-path={self.block_repo}\nrepo2-type=posix\nrepo2-retention-full=9\n"
                "repo2-bundle=y\nrepo2-block=y\n"
            )
        for sub in ("lock", "spool", "log"):
            make_dir(workdir / sub, user, 0o750)
        self.config = workdir / "pgbackrest.conf"
        self.config.write_text(
            "[global]\n"
            f"{repos}"
            "compress-type=zst\n"
            f"compress-level={compress_level}\n"
            f"process-max={process_max}\n"
            "start-fast=y\n"
            f"archive-async={'y' if archive_async else 'n'}\n"
            f"spool-path={workdir / 'spool'}\n"
            f"lock-path={workdir / 'lock'}\n"
            f"log-path={workdir / 'log'}\n"
            "log-level-console=warn\n"
            "log-level-stderr=warn\n"
            "log-level-file=off\n"
            f"\n[{STANZA}]\n"
            f"pg1-path={pg_path}\n"
            f"pg1-socket-path={socket_dir}\n"
            f"pg1-port={port}\n"
            "pg1-user=postgres\n"
        )
        self.config.chmod(0o644)

    def argv(self, command: str, *options: str) -> list[str]:
        return [self.binary, f"--config={self.config}", f"--stanza={STANZA}", *options, command]

    def archive_command(self) -> str:
        return " ".join(self.argv("archive-push")) + " %p"

    def stanza_create(self) -> None:
        """Create the stanza; ``UnsupportedServer`` when this binary does not know the server."""
        result = run(self.argv("stanza-create"), user=self.user, timeout=300, check=False)
        if result.returncode != 0:
            message = f"{self.binary} stanza-create exited {result.returncode}:\n"
            message += (result.stderr or result.stdout)[-3000:]
            if _UNKNOWN_SERVER in result.stderr + result.stdout:
                raise UnsupportedServer(message)
            raise BenchError(message)

    def backup(
        self, log: Path, timeout: float = 7200, *, kind: str = "full", repo: int | None = None
    ) -> float:
        """A backup (``--type=full|diff|incr``, into ``--repo=N`` when given); its seconds."""
        options = [f"--type={kind}"] + ([f"--repo={repo}"] if repo else [])
        result = timed(self.argv("backup", *options), user=self.user, timeout=timeout, log=log)
        return result.seconds

    def latest_backup(self, repo: int = 1) -> dict:
        """``pgbackrest info --output=json`` of the newest backup in ``repo``: label, type,
        and ``info.repository.delta``, the bytes this backup added to the repository."""
        import json

        info = json.loads(
            run(self.argv("info", "--output=json", f"--repo={repo}"), user=self.user).stdout
        )
        return info[0]["backup"][-1]

    def backup_dir(self, label: str, repo: int = 1) -> Path:
        root = self.repo if repo == 1 else self.block_repo
        assert root is not None, f"no repository {repo}"
        return root / "backup" / STANZA / label

    def restore_and_start(
        self,
        target: datetime,
        new_pgdata: Path,
        socket_dir: Path,
        port: int,
        log: Path,
        timeout: float = 7200,
    ) -> dict[str, float]:
        """Restore to ``target``, start the server and wait until promoted and accepting
        connections; returns the seconds of each part and the total from the restore's start."""
        import time

        make_dir(new_pgdata, self.user, 0o700)
        make_dir(socket_dir, self.user, 0o700)
        started = time.perf_counter()
        restore = timed(
            self.argv(
                "restore",
                "--type=time",
                f"--target={target.isoformat(sep=' ')}",
                "--target-action=promote",
                f"--pg1-path={new_pgdata}",
            ),
            user=self.user,
            timeout=timeout,
            log=log,
        )
        # The restored files are the source's: give the new server its own port and socket,
        # and no archiving (the equivalent of pgpitr's restored cluster, whose log backup is off).
        managed = new_pgdata / "pgpitr.conf"
        managed.write_text(
            f"port = {port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{socket_dir}'\narchive_mode = off\n"
        )
        shutil.chown(managed, self.user.name, self.user.name)
        run(
            [
                PG_BINDIR / "pg_ctl",
                "start",
                "--pgdata",
                new_pgdata,
                "--wait",
                "--timeout",
                str(int(timeout)),
                "--silent",
                "--log",
                log.with_suffix(".server.log"),
            ],
            user=self.user,
            timeout=timeout + 10,
        )
        wait_until(
            lambda: _promoted(socket_dir, port), timeout, "pgBackRest restore promotion", 0.05
        )
        total = time.perf_counter() - started
        return {
            "seconds": total,
            "restore_command_seconds": restore.seconds,
            "start_and_replay_seconds": total - restore.seconds,
        }


def _promoted(socket_dir: Path, port: int) -> bool:
    result = subprocess.run(
        [
            str(PG_BINDIR / "psql"),
            "-X",
            "-A",
            "-t",
            "-h",
            str(socket_dir),
            "-p",
            str(port),
            "-U",
            "postgres",
            "-c",
            "SELECT pg_is_in_recovery()",
            "postgres",
        ],
        capture_output=True,
        text=True,
        timeout=10,
        stdin=subprocess.DEVNULL,
    )
    return result.returncode == 0 and result.stdout.strip() == "f"


def stop_server(pgdata: Path, user: User) -> None:
    if (pgdata / "postmaster.pid").exists():
        run(
            [PG_BINDIR / "pg_ctl", "stop", "--pgdata", pgdata, "--mode", "immediate", "--wait"],
            user=user,
            timeout=120,
            check=False,
        )


__all__ = [
    "BenchError",
    "PgBackRest",
    "UnsupportedServer",
    "ensure_installed",
    "find",
    "stop_server",
    "version",
]
