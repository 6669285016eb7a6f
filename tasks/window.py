"""Tasks that read what a cluster can be restored to, and whether WAL archiving keeps up
(pgpitr/catalog/describe.py composes them)."""

from __future__ import annotations

from pgpitr.operations import describe
from tasks._common import RETRYING, step_task

read_window = step_task(describe.read_window, "read-recoverable-window", **RETRYING)
check_archiver = step_task(describe.check_archiver, "check-archiver", **RETRYING)
