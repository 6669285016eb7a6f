"""Terminal output shared by every command group: tables, JSON, errors."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.table import Table

# Off a terminal (pipes, scripts, tests) tables keep their rows on one line.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 300)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 300)


def error(message: str) -> None:
    from rich.markup import escape

    # the message is text, not markup: brackets in it ("pgpitr[kubernetes]") must show
    err.print(f"[bold red]error:[/] {escape(message)}", markup=True)


def info(message: str) -> None:
    err.print(message, markup=False)


def warning(message: str) -> None:
    """A loud line on stdout, beside what it warns about (a stopped cluster, a stuck receiver)."""
    from rich.markup import escape

    out.print(f"[bold red]WARNING:[/bold red] {escape(message)}", markup=True)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """A kbcli-like table: upper-case headers, no borders."""
    t = Table(box=None, show_edge=False, pad_edge=False, header_style="bold")
    for column in columns:
        t.add_column(column, overflow="fold")
    for row in rows:
        t.add_row(*("" if v is None else str(v) for v in row))
    out.print(t)


def as_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
