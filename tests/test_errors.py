"""pgpitr/errors.py and pgpitr/transient.py: an error carries whether a retry may help, and
survives pickling (how a failure inside a flow run reaches the CLI) with all it says."""

from __future__ import annotations

import errno
import pickle

import pytest

from pgpitr import errors
from pgpitr.transient import is_transient


@pytest.mark.parametrize(
    "error",
    [
        errors.PitrError("plain", hint="do this"),
        errors.RepositoryError("answered 503", hint="wait", transient=True),
        errors.CommandError(["/usr/bin/pg_basebackup", "-D", "-"], 1, "line1\nline2", hint="h"),
        errors.RecoveryTargetError("outside the window", hint="pick a time"),
        errors.WalConflict("different content"),
    ],
)
def test_an_error_pickles_with_its_type_message_hint_code_and_transient(error) -> None:
    back = pickle.loads(pickle.dumps(error))
    assert type(back) is type(error)
    assert (back.message, back.hint, back.exit_code, back.transient) == (
        error.message,
        error.hint,
        error.exit_code,
        error.transient,
    )
    assert str(back) == str(error)


def test_command_error_keeps_its_argv_and_stderr_through_pickling() -> None:
    error = errors.CommandError(["/x/initdb"], 2, "boom")
    back = pickle.loads(pickle.dumps(error))
    assert (back.argv, back.returncode, back.stderr) == (["/x/initdb"], 2, "boom")
    assert back.message.startswith("initdb exited with code 2")


def test_transient_is_what_the_error_says_never_its_text() -> None:
    assert is_transient(errors.RepositoryError("whatever", transient=True))
    # the words that regexes used to look for do not make an error transient any more
    assert not is_transient(errors.RepositoryError("answered 503 (SlowDown): timed out"))
    assert not is_transient(errors.ChecksumMismatch("damaged"))
    assert errors.ClusterStateError("x", transient=True).transient


def test_foreign_exceptions_are_judged_by_type() -> None:
    assert is_transient(ConnectionResetError())
    assert is_transient(TimeoutError())
    assert is_transient(OSError(errno.ECONNREFUSED, "refused"))
    assert not is_transient(OSError(errno.ENOSPC, "full"))
    assert not is_transient(ValueError("bad"))
