"""The ``pgpitr`` command: a thin shell over the engine.

Command groups live one per module (``cluster``, ``addon``, ``storageclass``, ``config``); this
module assembles them and is the one place that turns engine errors into messages and exit codes.
"""

from __future__ import annotations

import atexit
import sys

import typer

from cli import console
from pgpitr.errors import PitrError

app = typer.Typer(
    name="pgpitr",
    help="Point-in-time recovery for PostgreSQL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


@app.callback()
def _root(
    stats: bool = typer.Option(
        False, "--stats", help="Print the repository requests made, by kind, to stderr at exit."
    ),
) -> None:
    """Point-in-time recovery for PostgreSQL."""
    if stats:
        atexit.register(_print_stats)


def _print_stats() -> None:
    from pgpitr.repository.base import format_counts

    sys.stderr.write(format_counts() + "\n")


def _log_stats() -> None:
    """The repository requests of this command, in the debug log (``pgpitr.repository``)."""
    import logging

    log = logging.getLogger("pgpitr.repository")
    if log.isEnabledFor(logging.DEBUG):
        from pgpitr.repository.base import format_counts

        log.debug("%s", format_counts())


GROUPS = (
    "cluster",
    "addon",
    "storageclass",
    "config",
    "serve",
    "server",
    "agent",
    "repository",
    "info",
    "install",
)


def _register(argv: list[str]) -> None:
    """Import only the command group the command line names: each group pulls in its own
    libraries (the Kubernetes client alone takes 0.7 s), and `pgpitr cluster list` must be fast.
    Top-level help imports them all."""
    words = [a for a in argv if not a.startswith("-")][:1]  # after global options (--stats)
    wanted = [a for a in words if a in GROUPS] or list(GROUPS)
    for name in wanted:
        try:
            module = __import__(f"cli.{name}", fromlist=["app"])
        except ModuleNotFoundError as exc:  # a group not built yet
            if exc.name != f"cli.{name}":
                raise
            continue
        if isinstance(module.app, typer.Typer):
            app.add_typer(module.app, name=name)
        else:
            app.command(name)(module.app)


def run(argv: list[str]) -> None:
    """Run the command line; every PitrError becomes one message and its exit code."""
    _register(argv)
    atexit.register(_log_stats)
    try:
        # standalone: click reports usage errors itself (exit 2, usage line, no traceback)
        app(args=argv, prog_name="pgpitr", standalone_mode=True)
    except PitrError as exc:
        console.error(str(exc))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        console.error("interrupted")
        sys.exit(130)
