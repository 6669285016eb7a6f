"""Each setting of a backup policy, by its kbcli key: the attribute of ``BackupPolicy`` it sets and
the check that brings a value to its canonical form or raises InvalidInput.

``pgpitr/policy.py`` builds the policy on these; ``--set``, the editor's YAML and ``policy.json``
all go through them, so a value is judged the same whichever way it came.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from pgpitr.errors import InvalidInput
from pgpitr.repository.url import RepositoryUrl
from pgpitr.timeparse import canonical_zone, parse_ttl

__all__ = ["OWN_MINUTE", "SETTINGS", "SETTING_KEYS", "parse_size"]


_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower() if isinstance(value, str | int) else None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise InvalidInput(f"{value!r} is not a boolean: expected true or false (also yes/no, on/off)")


#: a cron expression's minute that means "the cluster's own minute" (pgpitr/policy.py)
OWN_MINUTE = "H"


def _cron(value: Any) -> str:
    expected = (
        'expected a 5-field cron expression like "0 18 * * 0" (minute hour day month weekday; '
        "H as the minute is the cluster's own)"
    )
    if not isinstance(value, str):
        raise InvalidInput(f"{value!r} is not text: {expected}")
    fields = value.split()
    # croniter would read a 6th field as seconds and @daily as a macro; kbcli and Prefect
    # deployments take the five classic fields, so refuse anything else rather than reinterpret.
    if len(fields) != 5:
        raise InvalidInput(f"{value!r} has {len(fields)} fields: {expected}")
    if fields[0].upper() == OWN_MINUTE:
        fields[0] = OWN_MINUTE
    normal = " ".join(fields)
    checked = " ".join(["0", *fields[1:]]) if fields[0] == OWN_MINUTE else normal
    try:
        # A valid-looking expression can still never fire ("0 0 30 2 *"): ask for one run.
        croniter(checked, datetime(2000, 1, 1, tzinfo=UTC)).get_next(datetime)
    except Exception as exc:  # croniter raises many types; none of them is ours to pass on
        raise InvalidInput(
            f"{value!r} is not a cron schedule that runs ({exc}): {expected}"
        ) from None
    return normal


def _timezone(value: Any) -> str:
    return canonical_zone(value)


def _ttl(value: Any) -> str:
    if not isinstance(value, str):
        raise InvalidInput(f"{value!r} is not text: expected a TTL like 7d, 12h or 30m")
    parse_ttl(value)
    # Kept as written (``90s`` stays ``90s``) so that the user finds their own words again.
    return value.strip()


_COMPRESSION = re.compile(r"(?:zstd)(?::(\d{1,2}))?|none", re.IGNORECASE)


def _compression(value: Any) -> str:
    expected = "expected zstd:N with a level from 1 to 19 (zstd alone is zstd:3), or none"
    if not isinstance(value, str):
        raise InvalidInput(f"{value!r} is not text: {expected}")
    match = _COMPRESSION.fullmatch(value.strip())
    if not match:
        raise InvalidInput(f"{value!r} is not a compression: {expected}")
    if value.strip().lower() == "none":
        return "none"
    level = int(match.group(1) or 3)
    if not 1 <= level <= 19:
        raise InvalidInput(f"{value!r} has level {level}: {expected}")
    return f"zstd:{level}"


def _one_of(choices: tuple[str, ...], refusal: str) -> Callable[[Any], str]:
    """A check that takes one of CHOICES (any case, spaces around); REFUSAL follows the value
    in the error."""

    def check(value: Any) -> str:
        text = value.strip().lower() if isinstance(value, str) else None
        if text not in choices:
            raise InvalidInput(f"{value!r} is not {refusal}")
        return text

    return check


_method = _one_of(
    ("archive", "stream"),
    "a log backup method: expected archive (archive_command) or stream (pg_receivewal under "
    "the agent)",
)
_backup_source = _one_of(
    ("primary", "standby", "prefer-standby"),
    "a backup source: expected primary, standby or prefer-standby (a streaming standby of an "
    "HA cluster when there is one, else the primary)",
)


_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|kB|KB|MB|GB|TB)?", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1 << 10, "mb": 1 << 20, "gb": 1 << 30, "tb": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes of a size like 512MB, 1GB or 1.5GB (PostgreSQL's units, powers of 1024)."""
    match = _SIZE.fullmatch(text.strip()) if isinstance(text, str) else None
    if not match or float(match.group(1)) <= 0:
        raise InvalidInput(f"{text!r} is not a size: expected a positive size like 512MB or 1GB")
    return int(float(match.group(1)) * _UNITS[(match.group(2) or "B").lower()])


def _size(value: Any) -> str:
    parse_size(value)
    return value.strip()


def _repository(value: Any) -> RepositoryUrl | None:
    """A repository URL, normalised (file://localhost/x is file:///x); None (empty text) for the
    default."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        return RepositoryUrl.parse(value.strip() if isinstance(value, str) else value)
    except InvalidInput as exc:
        raise InvalidInput(f"{exc.message} (empty for the default repository)") from None


# kbcli key -> (BackupPolicy attribute, check).  Order is the order shown to people.
SETTINGS: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "schedule.datafile.enable": ("datafile_enabled", _bool),
    "schedule.datafile.cronExpression": ("cron", _cron),
    "schedule.datafile.timezone": ("timezone", _timezone),
    "schedule.datafile.compression": ("compression", _compression),
    "schedule.incremental.enable": ("incremental_enabled", _bool),
    "schedule.incremental.cronExpression": ("incremental_cron", _cron),
    "schedule.logfile.enable": ("logfile_enabled", _bool),
    "schedule.logfile.method": ("logfile_method", _method),
    "schedule.logfile.synchronous": ("logfile_synchronous", _bool),
    "retention.ttl": ("ttl", _ttl),
    "backupRepo": ("repository", _repository),
    "schedule.drill.enable": ("drill_enabled", _bool),
    "schedule.drill.cronExpression": ("drill_cron", _cron),
    "heartbeat.enable": ("heartbeat_enabled", _bool),
    "rpo.max": ("rpo_max", _ttl),
    "stream.maxRetained": ("stream_max_retained", _size),
    "backup.source": ("backup_source", _backup_source),
}
SETTING_KEYS: tuple[str, ...] = tuple(SETTINGS)
