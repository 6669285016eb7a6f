"""Restore targets, TTLs and durations as people type and read them.

kbcli prints and accepts times as ``Apr 17,2023 19:56:40 UTC+0800`` (Go layout
``Jan 02,2006 15:04:05 UTC-0700``); pgpitr reads that and RFC 3339, and writes kbcli's form.
Parsing is done with strict regular expressions rather than a general date parser so that every
accepted form is listed here and nothing else slips through; pendulum supplies the time zones.
"""

from __future__ import annotations

import math
import os
import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

import pendulum

from pgpitr.errors import InvalidInput

__all__ = [
    "canonical_zone",
    "format_duration",
    "format_kbcli",
    "format_ttl",
    "format_window",
    "parse_restore_target",
    "parse_ttl",
]

_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH_NUMBER = {name.lower(): number for number, name in enumerate(_MONTHS, start=1)}

_KBCLI_EXAMPLE = '"Apr 17,2023 19:56:40 UTC+0800"'
_RFC3339_EXAMPLE = "2023-04-17T19:56:40+08:00"
_ZONE_EXAMPLE = "2023-04-17 19:56:40 Asia/Shanghai"
_ACCEPTED_TARGETS = (
    f"a time like {_KBCLI_EXAMPLE} (kbcli's format), an RFC 3339 time like "
    f"{_RFC3339_EXAMPLE} or 2023-04-17T11:56:40Z, a time in a named zone like "
    f"{_ZONE_EXAMPLE}, or latest"
)
#: The widest offsets any zone has used (Pacific/Kiritimati +14:00, Baker Island -12:00); more is
#: a typo that would move the restore by up to a day.
_MAX_OFFSET_MINUTES = 14 * 60
# An IANA zone name: letters first (so kbcli-like "GMT+0800" is not read as a zone), then
# slash-separated parts such as America/Argentina/Buenos_Aires or Etc/GMT-14.
_ZONE_NAME = r"(?P<zone>[A-Za-z][A-Za-z_]*(?:/[A-Za-z0-9_+-]+){0,2})"

# re.ASCII: \d and \s must not match other scripts' digits and spaces.
_KBCLI = re.compile(
    r"(?P<month>[A-Za-z]{3})\s+(?P<day>\d{1,2})\s*,\s*(?P<year>\d{4})\s+"
    r"(?P<hour>\d{1,2}):(?P<minute>\d{2}):(?P<second>\d{2})"
    r"(?:\s+(?:(?P<utc>UTC)(?:(?P<sign>[+-])(?P<oh>\d{2}):?(?P<om>\d{2}))?|" + _ZONE_NAME + r"))?",
    re.ASCII | re.IGNORECASE,
)
_ISO = re.compile(
    r"(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[Tt ]"
    r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})(?:\.(?P<fraction>\d{1,9}))?"
    # psql prints offsets as +08, so the minutes are optional.
    r"(?:\s*(?:(?P<zulu>[Zz])|(?P<sign>[+-])(?P<oh>\d{2})(?::?(?P<om>\d{2}))?)|\s+"
    + _ZONE_NAME
    + r")?",
    re.ASCII,
)

_TTL = re.compile(
    r"(?:(?P<d>\d+)\s*d)?\s*(?:(?P<h>\d+)\s*h)?\s*(?:(?P<m>\d+)\s*m)?\s*(?:(?P<s>\d+)\s*s)?",
    re.ASCII | re.IGNORECASE,
)
_TTL_EXPECTED = "a TTL like 7d, 12h or 30m (units d, h, m, s, combined largest first: 1d12h)"
# A TTL beyond this is a typo, and timedelta itself stops at 999999999 days.
_TTL_MAX = timedelta(days=36525)


def parse_restore_target(text: str) -> datetime | None:
    """Read a restore target; an aware UTC datetime, or None for ``latest``."""
    if not isinstance(text, str):
        raise InvalidInput(f"restore time {text!r} is not text: expected {_ACCEPTED_TARGETS}")
    stripped = text.strip()
    if stripped.lower() == "latest":
        return None
    kbcli = _KBCLI.fullmatch(stripped)
    if kbcli:
        return _from_kbcli(text, kbcli)
    iso = _ISO.fullmatch(stripped)
    if iso:
        return _from_iso(text, iso)
    raise InvalidInput(f"cannot read the restore time {text!r}: expected {_ACCEPTED_TARGETS}")


def _from_kbcli(text: str, m: re.Match[str]) -> datetime:
    month = _MONTH_NUMBER.get(m["month"].lower())
    if month is None:
        raise InvalidInput(
            f"restore time {text!r} has an unknown month {m['month']!r}: expected one of "
            f"{', '.join(_MONTHS)}, as in {_KBCLI_EXAMPLE}"
        )
    fields = (int(m["year"]), month, int(m["day"]), int(m["hour"]), int(m["minute"]))
    local = _checked_wall_time(text, *fields, int(m["second"]), 0)
    if m["zone"]:
        return _from_zone(text, local, m["zone"])
    if not m["utc"]:
        raise _no_zone(text, local)
    return _to_utc(text, local, m["sign"], m["oh"], m["om"])


def _from_iso(text: str, m: re.Match[str]) -> datetime:
    # Microseconds are what PostgreSQL's recovery_target_time keeps; finer digits are dropped.
    micro = int((m["fraction"] or "0").ljust(6, "0")[:6])
    fields = (int(m["year"]), int(m["month"]), int(m["day"]), int(m["hour"]), int(m["minute"]))
    local = _checked_wall_time(text, *fields, int(m["second"]), micro)
    if m["zone"]:
        return _from_zone(text, local, m["zone"])
    if not m["zulu"] and not m["sign"]:
        raise _no_zone(text, local)
    return _to_utc(text, local, m["sign"], m["oh"], m["om"])


def _checked_wall_time(text: str, *fields: int) -> datetime:
    try:
        return datetime(*fields)
    except ValueError as exc:
        raise InvalidInput(
            f"restore time {text!r} is not a real date and time ({exc}): expected "
            f"{_ACCEPTED_TARGETS}"
        ) from None


def _no_zone(text: str, local: datetime) -> InvalidInput:
    # Guessing the zone is how a restore lands hours away from the intended second: refuse, and
    # show the person's own time in both accepted forms so that adding the zone is a copy-edit.
    kbcli = _kbcli_wall(local)
    iso = local.replace(microsecond=0).isoformat()
    return InvalidInput(
        f"restore time {text!r} has no time zone: add the one it is in, e.g. "
        f'"{kbcli} UTC+0800" or {iso}+08:00 (use UTC+0000 or Z for UTC)'
    )


def _to_utc(
    text: str, local: datetime, sign: str | None, hours: str | None, minutes: str | None
) -> datetime:
    offset = 0
    if sign:
        if int(minutes or 0) > 59:
            raise InvalidInput(
                f"restore time {text!r} has a bad UTC offset: minutes go to 59, as in "
                f"{_KBCLI_EXAMPLE} or {_RFC3339_EXAMPLE}"
            )
        offset = int(hours or 0) * 60 + int(minutes or 0)
        offset = -offset if sign == "-" else offset
        if abs(offset) > _MAX_OFFSET_MINUTES:
            raise InvalidInput(
                f"restore time {text!r} has a UTC offset beyond ±14:00, which no time zone "
                f"has: expected an offset like UTC+0800 or +08:00, or a zone name like "
                f"{_ZONE_EXAMPLE}"
            )
    try:
        return local.replace(tzinfo=timezone(timedelta(minutes=offset))).astimezone(UTC)
    except OverflowError:
        raise InvalidInput(
            f"restore time {text!r} is outside the years 1 to 9999 in UTC: expected "
            f"{_ACCEPTED_TARGETS}"
        ) from None


def _from_zone(text: str, local: datetime, name: str) -> datetime:
    """A wall time in a named zone, refused where that wall time is not one instant there
    (skipped or repeated by a daylight-saving change): guessing would move the restore."""
    try:
        zone = _zone(name)
    except InvalidInput:
        raise InvalidInput(
            f"cannot read the restore time {text!r}: {name!r} is not a known time zone (an "
            f"IANA name like Asia/Shanghai or UTC); expected {_ACCEPTED_TARGETS}"
        ) from None
    try:
        first, second = local.replace(tzinfo=zone, fold=0), local.replace(tzinfo=zone, fold=1)
        instant = first.astimezone(UTC)
        round_trip = instant.astimezone(zone).replace(tzinfo=None)
    except OverflowError:
        raise InvalidInput(
            f"restore time {text!r} is outside the years 1 to 9999 in UTC: expected "
            f"{_ACCEPTED_TARGETS}"
        ) from None
    if round_trip != local:
        raise InvalidInput(
            f"restore time {text!r} does not exist in {zone}: the clocks skipped it "
            "(daylight saving time)",
            hint="give the time with its UTC offset, e.g. 2023-03-26T02:30:00+01:00",
        )
    if first.utcoffset() != second.utcoffset():
        earlier, later = (_offset_text(d) for d in (first, second))
        raise InvalidInput(
            f"restore time {text!r} happened twice in {zone} (daylight saving time ended): "
            f"at UTC{earlier} and at UTC{later}",
            hint=f"give the time with the offset you mean, UTC{earlier} or UTC{later}",
        )
    return instant


def _offset_text(dt: datetime) -> str:
    minutes = int((dt.utcoffset() or timedelta(0)).total_seconds()) // 60
    hh, mm = divmod(abs(minutes), 60)
    return f"{'-' if minutes < 0 else '+'}{hh:02d}{mm:02d}"


def format_kbcli(dt: datetime, tz: str | None = None) -> str:
    """``Apr 17,2023 19:56:40 UTC+0800`` in IANA zone ``tz``, by default the local zone."""
    if not isinstance(dt, datetime) or dt.utcoffset() is None:
        raise InvalidInput(f"cannot format {dt!r}: expected a datetime with a time zone")
    zone = _zone(tz) if tz is not None else _local_zone()
    try:
        local = dt.astimezone(zone)
        offset = local.utcoffset() or timedelta(0)
        # The format carries whole minutes only; zones whose offset has seconds (local mean time
        # before ~1900) are shown at the offset rounded down so that the instant stays exact.
        whole = timedelta(minutes=math.floor(offset.total_seconds() / 60))
        wall = (dt.astimezone(UTC).replace(tzinfo=None) + whole).replace(microsecond=0)
    except OverflowError:
        raise InvalidInput(f"cannot format {dt!r}: it is outside the years 1 to 9999") from None
    minutes = int(whole.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hh, mm = divmod(abs(minutes), 60)
    return f"{_kbcli_wall(wall)} UTC{sign}{hh:02d}{mm:02d}"


def format_window(start: datetime, end: datetime, tz: str | None = None) -> str:
    """A recoverable window as kbcli shows it: ``<start> ~ <end>``."""
    return f"{format_kbcli(start, tz)} ~ {format_kbcli(end, tz)}"


def _kbcli_wall(wall: datetime) -> str:
    # Built by hand: strftime's %Y does not zero-pad years below 1000 on every platform.
    return (
        f"{_MONTHS[wall.month - 1]} {wall.day:02d},{wall.year:04d} "
        f"{wall.hour:02d}:{wall.minute:02d}:{wall.second:02d}"
    )


_ZONES_BY_LOWER: dict[str, str] = {}


def canonical_zone(name: str) -> str:
    """The IANA spelling of a zone name given in any case (``asia/shanghai`` -> Asia/Shanghai)."""
    if not _ZONES_BY_LOWER:
        _ZONES_BY_LOWER.update({zone.lower(): zone for zone in pendulum.timezones()})
    # Looked up in the list of zones: a junk name never reaches the file system via zoneinfo.
    zone = _ZONES_BY_LOWER.get(name.strip().lower()) if isinstance(name, str) else None
    if zone is None:
        raise InvalidInput(
            f"unknown time zone {name!r}: expected an IANA name like UTC or Asia/Shanghai"
        )
    return zone


def _zone(name: str) -> tzinfo:
    return pendulum.timezone(canonical_zone(name))


def _local_zone() -> tzinfo:
    # pendulum caches the local zone on first use; read TZ on every call so that a changed TZ
    # (a test, a long-lived process told otherwise) is honoured.
    env = os.environ.get("TZ", "").lstrip(":")
    if env and env in pendulum.timezones():
        return pendulum.timezone(env)
    return pendulum.local_timezone()


def parse_ttl(text: str) -> timedelta:
    """Read a positive TTL such as ``7d``, ``12h``, ``30m``, ``90s`` or ``1d12h``."""
    if not isinstance(text, str):
        raise InvalidInput(f"TTL {text!r} is not text: expected {_TTL_EXPECTED}")
    stripped = text.strip()
    m = _TTL.fullmatch(stripped)
    if not stripped or not m:
        hint = "write weeks as days, e.g. 14d" if re.fullmatch(r"\d+\s*w", stripped, re.I) else None
        raise InvalidInput(f"cannot read the TTL {text!r}: expected {_TTL_EXPECTED}", hint=hint)
    try:
        parts = {unit: int(m[unit] or 0) for unit in "dhms"}
        ttl = timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"])
    except (OverflowError, ValueError):
        ttl = _TTL_MAX * 2
    if ttl <= timedelta(0):
        raise InvalidInput(f"TTL {text!r} is not positive: expected {_TTL_EXPECTED}")
    if ttl > _TTL_MAX:
        raise InvalidInput(f"TTL {text!r} is longer than 100 years: expected {_TTL_EXPECTED}")
    return ttl


def format_ttl(td: timedelta) -> str:
    """The canonical text of a TTL (``7d``, ``1d12h``, ``1m30s``); sub-seconds are dropped."""
    seconds = int(td.total_seconds()) if isinstance(td, timedelta) else 0
    if seconds <= 0:
        raise InvalidInput(f"cannot format the TTL {td!r}: expected a positive duration")
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = zip((days, hours, minutes, secs), "dhms", strict=True)
    return "".join(f"{value}{unit}" for value, unit in parts if value)


def format_duration(seconds: float) -> str:
    """kbcli's DURATION column: ``5s``, ``1m3s``, ``2h4m``, ``1d2h`` (two units at most)."""
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds < 0
    ):
        raise InvalidInput(f"cannot format the duration {seconds!r}: expected seconds >= 0")
    total = int(seconds + 0.5)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    units = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    # Start at the largest non-zero unit and show it with the next one, omitting a trailing zero.
    first = next((i for i, (value, _) in enumerate(units) if value), len(units) - 1)
    shown = [units[first]] + [u for u in units[first + 1 : first + 2] if u[0]]
    return "".join(f"{value}{unit}" for value, unit in shown)
