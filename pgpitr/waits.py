"""How long pgpitr waits for something another process holds, and the error when it gives up.

Every wait is bounded: a wait without an end turns a stuck holder (a hung backup, an agent that
never comes back) into a command or a scheduled run that hangs silently, which an operator only
finds by its absence.  Each bound has a default that fits its job and an environment variable
that changes it, read where the wait happens (the agent's environment for scheduled runs, the
shell's for the CLI):

- ``PGPITR_BACKUP_WAIT_TIMEOUT``: a backup waiting for the cluster's backup slot while another
  backup of it runs (an hour: a full backup of a large cluster takes that long; the next
  scheduled run then tries again);
- ``PGPITR_WAIT_START_TIMEOUT``: ``--wait`` waiting for an agent to start the queued run (five
  minutes: a serving agent polls every few seconds);
- ``PGPITR_WAIT_TIMEOUT``: ``--wait`` waiting for a started run to end (a day: a large restore).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from pgpitr.errors import InvalidInput, PitrError


@dataclass(frozen=True)
class Bound:
    env: str
    default: float

    def seconds(self) -> float:
        """The environment's value, else the default; a value that is not a positive number
        is refused rather than read as "forever" or "never"."""
        text = os.environ.get(self.env, "").strip()
        if not text:
            return self.default
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0 or value == float("inf"):
            raise InvalidInput(
                f"{self.env}={text!r} is not a positive number of seconds",
                hint=f"unset it for the default ({shown(self.default)}), or give seconds",
            )
        return value


BACKUP_SLOT = Bound("PGPITR_BACKUP_WAIT_TIMEOUT", 3600.0)
RUN_START = Bound("PGPITR_WAIT_START_TIMEOUT", 300.0)
RUN_END = Bound("PGPITR_WAIT_TIMEOUT", 86400.0)


def shown(seconds: float) -> str:
    """``90 s``, ``5 min``, ``1 h``, ``1 day``: the unit an operator would set it in."""
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def poll(
    done: Callable[[], bool], seconds: float, every: float, give_up: Callable[[], PitrError]
) -> None:
    """Until ``done()`` holds, asking every EVERY seconds; past SECONDS, raise ``give_up()``."""
    deadline = time.monotonic() + seconds
    while not done():
        if time.monotonic() > deadline:
            raise give_up()
        time.sleep(every)
