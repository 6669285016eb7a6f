"""Where an account's password comes from: never argv (every user of the machine reads argv in
``ps``), but a hidden prompt, standard input or a file; none of them: pgpitr generates one."""

from __future__ import annotations

import stat
import sys
from pathlib import Path

import typer

from pgpitr.errors import InvalidInput


def read(*, prompt: bool, stdin: bool, file: Path | None) -> str | None:
    """The password asked for, or None when none was (the caller generates one)."""
    if prompt + stdin + (file is not None) > 1:
        raise InvalidInput(
            "give at most one of --password-prompt, --password-stdin, --password-file"
        )
    if prompt:
        return _checked(_from_terminal(), "the prompt")
    if stdin:
        return _checked(sys.stdin.read(), "standard input")
    if file is not None:
        return _checked(_from_file(file), str(file))
    return None


def _from_terminal() -> str:
    if not sys.stdin.isatty():
        raise InvalidInput(
            "--password-prompt needs a terminal", hint="pipe the password to --password-stdin"
        )
    # on stderr: stdout stays for what the command prints
    return typer.prompt("password", hide_input=True, confirmation_prompt=True, err=True)


def _from_file(path: Path) -> str:
    try:
        mode = path.stat().st_mode
        # like ~/.pgpass: a password file others may read is refused (a pipe, /dev/fd/N, is not
        # a regular file and has no such mode)
        if stat.S_ISREG(mode) and mode & 0o077:
            raise InvalidInput(
                f"{path} may be read by other users", hint=f"chmod 600 {path}, then run again"
            )
        return path.read_text()
    except OSError as exc:
        raise InvalidInput(f"cannot read the password file {path}: {exc.strerror}") from None


def _checked(text: str, source: str) -> str:
    """One line; its line ending (the one `echo` or an editor adds) is not part of it.  Errors
    never quote the text: it is the secret."""
    password = text.removesuffix("\n").removesuffix("\r")
    if not password:
        raise InvalidInput(f"the password from {source} is empty")
    if "\n" in password or "\r" in password or "\x00" in password:
        raise InvalidInput(f"the password from {source} is not one line")
    return password
