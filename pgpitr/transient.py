"""Which failures may succeed when tried again: the one question the task retries ask.

A PitrError says so itself (``transient``), set by whoever classified the failure: the S3
backend for 5xx, 429, throttling and dropped connections, the cluster facade for a server that
does not accept connections yet.  Errors that are not pgpitr's are judged by their type alone: a
psycopg OperationalError, a dropped or refused connection, a timeout.  A bad target time, a
missing backup, a checksum mismatch or an archive of another cluster fail the same way every
time, so retrying them only delays the message the user needs.
"""

from __future__ import annotations

import errno

from pgpitr.errors import PitrError

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
    if isinstance(exc, PitrError):
        return exc.transient
    flagged = getattr(exc, "transient", None)
    if isinstance(flagged, bool):  # e.g. the Kubernetes client's errors
        return flagged
    if type(exc).__name__ == "OperationalError" and type(exc).__module__.startswith("psycopg"):
        return True
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO
