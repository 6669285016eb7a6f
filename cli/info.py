"""``pgpitr info``: every stanza of the backup repositories, like ``pgbackrest info``."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated

import typer

from cli import console, progress
from pgpitr import timeparse
from pgpitr.errors import InvalidInput, RepositoryError

if TYPE_CHECKING:
    from pgpitr.operations.info import RepositoryInfo


def app(
    backup_repo: Annotated[
        str | None,
        typer.Option(help="this repository only (default: this home's and its clusters')"),
    ] = None,
    output: Annotated[str, typer.Option("--output", "-o", help="table or json")] = "table",
) -> None:
    """Every stanza of the repositories, live or deleted clusters alike: backups, WAL range,
    recoverable window, stored size.  Reads the repositories only."""
    from pgpitr.operations import info as engine
    from pgpitr.repository import RepositoryUrl

    if output not in ("table", "json"):
        raise InvalidInput(f"unknown output format {output!r}: use table or json")
    url = RepositoryUrl.parse(backup_repo) if backup_repo is not None else None
    repositories = engine.info(url)
    if output == "json":
        console.as_json([r.as_dict() for r in repositories])
    elif not repositories:
        console.info(
            "no repository to read: this home has no cluster and its default repository is "
            "empty (--backup-repo URL reads one)"
        )
    else:
        for repo in repositories:
            _print_repository(repo)
    failed = [r for r in repositories if r.error]
    if failed:  # each was shown with the others; the exit code says one could not be read
        raise RepositoryError(
            f"{len(failed)} of {len(repositories)} repositories could not be read",
            hint="see the error under each; `--backup-repo URL` reads one repository",
        )


def _when(value: datetime | None) -> str:
    return timeparse.format_kbcli(value) if value else ""


def _print_repository(repo: RepositoryInfo) -> None:
    console.out.print(f"Repository: {repo.url}")
    if repo.error:
        console.out.print(f"  error: {repo.error}")
        return
    if not repo.stanzas:
        console.out.print("  no stanza")
    for s in repo.stanzas:
        console.out.print(
            f"\nstanza: {s.stanza}  cluster: {s.ownership}"
            + (f"  host: {s.host}" if s.host else "")
        )
        console.out.print(
            f"  PostgreSQL {s.pg_version or '?'}, system identifier {s.system_identifier or '?'}"
            f", {len(s.backups)} backup(s), stored {progress.size(s.stored_bytes)}"
        )
        wal = "; ".join(
            f"timeline {tli}: {first} ~ {last}" for tli, (first, last) in sorted(s.wal.items())
        )
        console.out.print(f"  wal archive: {wal or 'none'}")
        if s.window_error:
            recoverable = f"unknown ({s.window_error})"
        else:
            recoverable = (
                ", ".join(timeparse.format_window(a, b) for a, b in s.periods) or "nowhere yet"
            )
        console.out.print(f"  recoverable: {recoverable}")
        if not s.backups:
            continue
        console.table(
            ["  NAME", "TYPE", "PARENT", "STATUS", "START-TIME", "STOP-TIME", "SIZE", "STORED"],
            [
                [
                    f"  {b.name}",
                    b.type,
                    b.parent or "",
                    f"{b.status} (unusable: {s.unusable[b.name]})"
                    if b.name in s.unusable
                    else b.status,
                    _when(b.start_time),
                    _when(b.stop_time if b.completed else None),
                    progress.size(b.database_size),
                    progress.size(s.backup_bytes.get(b.name)),
                ]
                for b in s.backups
            ],
        )
    console.out.print("")
