"""Tasks that read what a cluster can be restored to, and whether WAL archiving keeps up
(pgpitr/window.py composes them)."""

from __future__ import annotations

from pgpitr import window
from tasks._common import RETRYING, step_task

read_window = step_task(window.read_window, "read-recoverable-window", **RETRYING)
check_archiver = step_task(window.check_archiver, "check-archiver", **RETRYING)
