"""pgBackRest, the reference: one configuration, repository, lock and spool directory per run.

Settings match pgpitr's where a setting exists on both sides: zstd level 3, the same parallelism,
a local-directory (posix) repository, a fast start checkpoint.  Its commands run as the account
that runs PostgreSQL, as its documentation asks.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import datetime
from pathlib import Path

from bench.proc import PG_BINDIR, BenchError, User, make_dir, run, timed, wait_until

STANZA = "bench"


def ensure_installed() -> str:
    """Install pgBackRest from the distribution when missing; return its version line."""
    if shutil.which("pgbackrest") is None:
        run(["apt-get", "update", "-qq"], timeout=600)
        run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "pgbackrest"],
            env={"DEBIAN_FRONTEND": "noninteractive"},
            timeout=900,
        )
    return run(["pgbackrest", "version"]).stdout.strip()


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
    ) -> None:
        self.dir = make_dir(workdir, user, 0o750)
        self.user = user
        self.repo = make_dir(workdir / "repo", user, 0o750)
        for sub in ("lock", "spool", "log"):
            make_dir(workdir / sub, user, 0o750)
        self.config = workdir / "pgbackrest.conf"
        self.config.write_text(
            "[global]\n"
            f"repo1-path={self.repo}\n"
            "repo1-type=posix\n"
            "repo1-retention-full=9\n"
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
        return ["pgbackrest", f"--config={self.config}", f"--stanza={STANZA}", *options, command]

    def archive_command(self) -> str:
        return " ".join(self.argv("archive-push")) + " %p"

    def stanza_create(self) -> None:
        run(self.argv("stanza-create"), user=self.user, timeout=300)

    def backup(self, log: Path, timeout: float = 7200) -> float:
        """A full backup; returns the command's seconds."""
        result = timed(self.argv("backup", "--type=full"), user=self.user, timeout=timeout, log=log)
        return result.seconds

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


__all__ = ["BenchError", "PgBackRest", "ensure_installed", "stop_server"]
