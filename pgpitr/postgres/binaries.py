"""Which PostgreSQL binaries a cluster uses: found once, recorded with the cluster.

Each cluster keeps its own bindir (``ClusterState.bindir``): pgpitr takes whatever binaries
the user's server has.  Where none is named, the installed majors are found in the usual places
(Debian's /usr/lib/postgresql/N/bin, PGDG's /usr/pgsql-N/bin, ``pg_config --bindir`` on PATH,
and PGPITR_PG_BINDIR), and a major of a cluster or a backup is matched to one of them.
"""

from __future__ import annotations

import functools
import glob
import os
import re
import shutil
import subprocess
from pathlib import Path

from pgpitr.errors import ClusterStateError, InvalidInput

SUPPORTED = range(13, 19)  # 13 to 18
BINDIR_ENV = "PGPITR_PG_BINDIR"
_SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin", "/usr/local/pgsql/bin")
_VERSION = re.compile(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?")


@functools.cache
def major_of(bindir: Path) -> int:
    """The major version of the server binaries in ``bindir`` (``postgres --version``)."""
    postgres = Path(bindir) / "postgres"
    if not postgres.exists():
        raise InvalidInput(
            f"no PostgreSQL server binaries in {bindir}",
            hint="name the directory holding postgres, pg_ctl and pg_basebackup",
        )
    try:
        out = subprocess.run(
            [str(postgres), "--version"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise ClusterStateError(f"cannot run {postgres} --version: {exc}") from None
    found = _VERSION.search(out)
    if not found:
        raise ClusterStateError(f"cannot read the version of {postgres}: {out.strip()!r}")
    return int(found.group(1))


def installed() -> dict[int, Path]:
    """Every installed major and its bindir; PGPITR_PG_BINDIR first, then the usual places."""
    candidates: list[Path] = []
    explicit = os.environ.get(BINDIR_ENV)
    if explicit:
        candidates.append(Path(explicit))
    for pattern in _SEARCH:
        candidates += sorted(Path(p) for p in glob.glob(pattern))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=30
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
        except (OSError, subprocess.SubprocessError):
            pass
    found: dict[int, Path] = {}
    for bindir in candidates:
        if not (bindir / "postgres").exists():
            continue
        try:
            major = major_of(bindir)
        except (InvalidInput, ClusterStateError):
            continue
        found.setdefault(major, bindir)
    return found


def resolve(major: int | None = None, bindir: Path | str | None = None) -> Path:
    """The bindir to use: the one given (of ``major``, when a major is asked for too), or the
    installed one of ``major``, or PGPITR_PG_BINDIR, or the newest installed."""
    if bindir is not None:
        path = Path(bindir)
        have = major_of(path)
        if major is not None and have != major:
            raise InvalidInput(
                f"{path} holds PostgreSQL {have}, not {major}",
                hint=f"pass the bindir of PostgreSQL {major}",
            )
        _check_supported(have, path)
        return path
    available = installed()
    if major is not None:
        if major not in available:
            raise ClusterStateError(
                f"no PostgreSQL {major} binaries on this host"
                + (f" (found {', '.join(map(str, sorted(available)))})" if available else ""),
                hint=f"install postgresql-{major} or pass --bindir",
            )
        _check_supported(major, available[major])
        return available[major]
    explicit = os.environ.get(BINDIR_ENV)
    if explicit:
        return resolve(None, explicit)
    supported = {m: p for m, p in available.items() if m in SUPPORTED}
    if not supported:
        raise ClusterStateError(
            "no PostgreSQL server binaries found on this host",
            hint=f"install PostgreSQL (apt-get install postgresql-17), or set {BINDIR_ENV} or "
            "pass --bindir",
        )
    return supported[max(supported)]


def _check_supported(major: int, path: Path) -> None:
    if major not in SUPPORTED:
        raise InvalidInput(
            f"{path} holds PostgreSQL {major}; pgpitr supports {SUPPORTED.start} to "
            f"{SUPPORTED.stop - 1}"
        )


@functools.cache
def basebackup_compresses_zstd(bindir: Path) -> bool:
    """Whether this build's pg_basebackup can compress with zstd itself (13/14 cannot at all,
    and a build without libzstd says so).  Asked without a server: the compression option is
    checked before pg_basebackup connects."""
    if major_of(bindir) < 15:
        return False
    probe = subprocess.run(
        [
            str(Path(bindir) / "pg_basebackup"),
            "--pgdata=-",
            "--format=tar",
            "--compress=client-zstd:1",
            "--dbname=host=/nonexistent-pgpitr-probe port=1 connect_timeout=1",
            "--no-password",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    return "does not support compression" not in probe.stderr
