"""Which failures may succeed when tried again, and which never will.

Orchestrators (the Prefect tasks) retry only what this module calls transient: the repository
or the network answering 5xx, 429 or throttling, a dropped connection, PostgreSQL not ready yet.
A bad target time, a missing backup, a checksum mismatch or an archive of another cluster fail
the same way every time, so retrying them only delays the message the user needs.
"""

from __future__ import annotations

import errno
import re

from pgpitr.errors import (
    ChecksumMismatch,
    ClusterStateError,
    CommandError,
    PitrError,
    RepositoryError,
    SystemIdMismatch,
    WalConflict,
)

# What the S3 backend and botocore put in a RepositoryError's message when the store is busy
# or briefly down; a 4xx other than 429 (403, 404) is a configuration problem, never transient.
_REPOSITORY_TRANSIENT = re.compile(
    r"answered (5\d\d|429)\b"
    r"|\((SlowDown|Throttling|ThrottlingException|RequestTimeout|RequestTimeTooSkewed"
    r"|InternalError|ServiceUnavailable|RequestLimitExceeded)\)"
    r"|connection failed|cannot reach|timed out|Resource temporarily unavailable",
    re.IGNORECASE,
)
_SERVER_NOT_READY = re.compile(
    r"starting up|shutting down|not yet accepting connections|too many clients"
    r"|could not connect|connection refused|server closed the connection|timeout expired"
    r"|Connection reset",
    re.IGNORECASE,
)
_TRANSIENT_ERRNO = {
    errno.ECONNRESET,
    errno.ECONNREFUSED,
    errno.ETIMEDOUT,
    errno.EAGAIN,
    errno.EPIPE,
    errno.EHOSTUNREACH,
}


def is_transient(exc: BaseException) -> bool:
    """True when the same call may succeed on a later attempt."""
    flagged = getattr(exc, "transient", None)
    if isinstance(flagged, bool):  # a backend that knows better says so
        return flagged
    if isinstance(exc, ChecksumMismatch | WalConflict | SystemIdMismatch):
        return False
    if isinstance(exc, RepositoryError):
        return bool(_REPOSITORY_TRANSIENT.search(exc.message))
    if isinstance(exc, CommandError):
        return bool(_SERVER_NOT_READY.search(exc.stderr))
    if isinstance(exc, ClusterStateError):
        return bool(_SERVER_NOT_READY.search(exc.message))
    if isinstance(exc, PitrError):
        return False
    if type(exc).__name__ == "OperationalError" and type(exc).__module__.startswith("psycopg"):
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO
