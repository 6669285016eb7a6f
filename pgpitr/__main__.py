"""Entry point of the ``pgpitr`` command.

``wal-push`` and ``wal-fetch`` run once per WAL segment under PostgreSQL's archiver and startup
process, so they are dispatched before anything heavy (typer, rich, Prefect) is imported.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("wal-push", "wal-fetch", "wal-prefetch") for a in args[:3]):
        from pgpitr.walcli import main as wal_main

        sys.exit(wal_main(args))
    from pgpitr.cli import run

    run(args)


if __name__ == "__main__":
    main()
