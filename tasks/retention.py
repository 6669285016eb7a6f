"""Tasks that remove backups and WAL (pgpitr/operations/retention.py and delete_backup.py
compose them): the TTL's choice, its deletes, and the deletes a user asks for."""

from __future__ import annotations

from pgpitr.operations import delete_backup, retention
from tasks._common import RETRYING, step_task

choose_expired = step_task(retention.choose_expired, "choose-expired-backups", **RETRYING)
delete_expired = step_task(retention.delete_expired, "delete-backups", **RETRYING)
delete_objects = step_task(delete_backup.delete_named, "delete-objects", **RETRYING)
