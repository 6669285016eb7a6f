"""Entry point of the ``pgpitr`` command.

``wal-push`` and ``wal-fetch`` run once per WAL segment under PostgreSQL's archiver and startup
process, so they are dispatched before anything heavy (typer, rich, Prefect) is imported.

Started by root, the command first leaves root for pgpitr's service account (pgpitr/privilege.py),
except the install steps that only root can take.
"""

from __future__ import annotations

import os
import sys

from pgpitr.osutil import no_collection_at_exit

#: what root runs as root: installing (the account, the home, the credentials, systemd units)
#: and reading the help
ROOT_COMMANDS = (("install",), ("agent", "install-service"))


def _stays_root(args: list[str]) -> bool:
    words = [a for a in args if not a.startswith("-")]
    if not words or "--help" in args or "-h" in args:
        return True
    return any(tuple(words[: len(command)]) == command for command in ROOT_COMMANDS)


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    no_collection_at_exit()
    if os.geteuid() == 0 and not _stays_root(args):
        from pgpitr import privilege, state
        from pgpitr.errors import PitrError

        try:
            privilege.leave_root(state.home())
        except PitrError as exc:
            sys.stderr.write(f"error: {exc}\n" + (f"hint: {exc.hint}\n" if exc.hint else ""))
            sys.exit(exc.exit_code)
    if any(a in ("wal-push", "wal-fetch", "wal-prefetch") for a in args[:3]):
        from pgpitr.wal.commands import main as wal_main

        sys.exit(wal_main(args))
    from cli import run

    run(args)


if __name__ == "__main__":
    main()
