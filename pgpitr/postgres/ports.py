"""TCP ports for the clusters pgpitr creates or restores: the range it takes them from
(``PGPITR_PORTS``) and a free one in it."""

from __future__ import annotations

import os
import socket

from pgpitr.errors import ClusterStateError, InvalidInput


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


#: Where pgpitr looks for a port for a cluster it creates or restores ("FIRST-LAST"): homes on
#: one host that must never take a port another home's stopped cluster owns get ranges apart.
PORTS_ENV = "PGPITR_PORTS"
DEFAULT_PORTS = (5433, 7432)


def port_range() -> tuple[int, int]:
    text = os.environ.get(PORTS_ENV, "").strip()
    if not text:
        return DEFAULT_PORTS
    first, sep, last = text.partition("-")
    try:
        low, high = int(first), int(last)
    except ValueError:
        low = high = 0
    if not sep or not 1024 <= low <= high <= 65535:
        raise InvalidInput(
            f"cannot read ${PORTS_ENV}={text!r}: expected FIRST-LAST, e.g. 5433-7432, "
            "within 1024-65535"
        )
    return low, high


def free_port(taken: set[int]) -> int:
    """A port of ``port_range()`` that no cluster of this home has and nothing listens on."""
    low, high = port_range()
    for port in range(low, high + 1):
        if port not in taken and port_is_free(port):
            return port
    raise ClusterStateError(
        f"no free TCP port between {low} and {high}",
        hint=f"set ${PORTS_ENV} to a range with free ports, or give --port",
    )
