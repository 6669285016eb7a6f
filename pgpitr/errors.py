"""The PitrError family: every failure the engine reports to a person.

The engine raises these and never exits; the CLI maps them to messages and exit codes in one
place (cli/__init__.py).  Messages name the cause and the next step, and never carry a
secret.

``transient`` says whether the same call may succeed later (an S3 5xx, throttling, a dropped
connection, PostgreSQL starting up).  It is decided where the failure is classified, by whoever
raises the error, and it is the only thing the Prefect tasks' retry condition reads.  An error
keeps its message, hint, exit code and ``transient`` in a flow run's stored failure (JSON,
tasks/results.py: the type by name, only from pgpitr's packages), so that a failure inside a
flow run on another process reaches the CLI as the same error; it also pickles whole.
"""

from __future__ import annotations


class PitrError(Exception):
    """Base of every error pgpitr reports.  ``exit_code`` is what the CLI exits with."""

    exit_code = 1
    #: Whether trying the same call again may succeed; an instance may say otherwise.
    transient = False

    def __init__(
        self, message: str, *, hint: str | None = None, transient: bool | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if transient is not None:
            self.transient = transient

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"

    def __reduce__(self) -> tuple:
        # Exceptions pickle as cls(*args); subclasses take other arguments, so rebuild the
        # instance from its attributes instead.
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(kind: type[PitrError], attributes: dict) -> PitrError:
    error = kind.__new__(kind)
    Exception.__init__(error, attributes.get("message", ""))
    error.__dict__.update(attributes)
    return error


class InvalidInput(PitrError):
    """A value given by the user is malformed or out of range (time, TTL, cron, --set key)."""

    exit_code = 2


class NotFound(PitrError):
    """A named thing (cluster, backup, WAL segment, account) does not exist."""

    exit_code = 3


class AlreadyExists(PitrError):
    """A thing to create exists already (cluster, account, backup name)."""

    exit_code = 4


class Busy(PitrError):
    """Another operation holds the lock this one needs (a second backup while one runs)."""

    exit_code = 5


class RepositoryError(PitrError):
    """The backup repository refused or failed an operation (unreachable, 403, missing bucket)."""

    exit_code = 6


class DeleteIncomplete(RepositoryError):
    """A batched delete whose answer refused some keys (S3's DeleteObjects answers 200 and lists
    the refusals per key).  ``failed`` names the keys still stored, ``deleted`` how many went."""

    def __init__(
        self,
        message: str,
        *,
        failed: list[str],
        deleted: int,
        hint: str | None = None,
        transient: bool | None = None,
    ) -> None:
        super().__init__(message, hint=hint, transient=transient)
        self.failed = failed
        self.deleted = deleted


class ChecksumMismatch(RepositoryError):
    """An object read back from the repository is not what was written."""


class TamperedObject(ChecksumMismatch):
    """An object is intact but not the one written under its name: swapped with another,
    renamed or moved in the repository (an encrypted object bound to another key, a backup
    manifest under another backup's path).  A ChecksumMismatch, so that every caller that
    treats an object as unusable treats this one so too."""


class WalConflict(RepositoryError):
    """A WAL file already archived under this name has different content."""


class SystemIdMismatch(RepositoryError):
    """The repository's archive belongs to another PostgreSQL cluster."""


class EncryptionKeyError(RepositoryError):
    """An encrypted repository's key is missing, unreadable or not the one its objects name."""


class CommandError(PitrError):
    """An external program (initdb, pg_ctl, pg_basebackup, ...) failed.  Carries its stderr."""

    exit_code = 7

    def __init__(
        self,
        argv: list[str],
        returncode: int,
        stderr: str,
        *,
        hint: str | None = None,
        transient: bool | None = None,
    ):
        program = argv[0].rsplit("/", 1)[-1] if argv else "?"
        tail = stderr.strip().splitlines()[-5:]
        detail = "\n    ".join(tail) if tail else "(no output)"
        super().__init__(
            f"{program} exited with code {returncode}:\n    {detail}",
            hint=hint,
            transient=transient,
        )
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class ClusterStateError(PitrError):
    """The cluster is not in the state the operation needs (stopped, in recovery, ...)."""

    exit_code = 8


class UnsafeFile(ClusterStateError):
    """A state file, lock, log or secret that is a link, or that another account could have
    put or changed: refused, never followed, truncated or trusted."""


class RecoveryTargetError(PitrError):
    """A restore target lies outside the recoverable window or cannot be reached."""

    exit_code = 9


class KubernetesError(PitrError):
    """The Kubernetes API server refused or failed a request."""

    exit_code = 10


class DrillFailed(PitrError):
    """A drill ran and found that the archive does not restore as it should (see its report)."""

    exit_code = 11
