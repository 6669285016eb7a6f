"""pgpitr.timeparse: every accepted and refused form, and the format/parse round trips."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgpitr.errors import InvalidInput
from pgpitr.timeparse import (
    canonical_zone,
    format_duration,
    format_kbcli,
    format_ttl,
    format_window,
    parse_restore_target,
    parse_ttl,
)

FAST = settings(max_examples=200, deadline=None)


def utc(*fields: int) -> datetime:
    return datetime(*fields, tzinfo=UTC)


@contextmanager
def tz_env(name: str | None) -> Iterator[None]:
    """TZ set for the block; a context manager because hypothesis tests cannot use monkeypatch."""
    old = os.environ.get("TZ")
    if name is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = name
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = old


# --- parse_restore_target: accepted ----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # kbcli exactly as it prints, and the tolerated variants
        ("Apr 17,2023 19:56:40 UTC+0800", utc(2023, 4, 17, 11, 56, 40)),
        ("Apr 17, 2023 19:56:40 UTC+0800", utc(2023, 4, 17, 11, 56, 40)),
        ("Apr 17,2023 19:56:40 UTC-0530", utc(2023, 4, 18, 1, 26, 40)),
        ("Apr 17,2023 19:56:40 UTC+08:00", utc(2023, 4, 17, 11, 56, 40)),
        ("Apr 17,2023 19:56:40 UTC", utc(2023, 4, 17, 19, 56, 40)),
        ("Apr 17,2023 19:56:40 UTC+0000", utc(2023, 4, 17, 19, 56, 40)),
        ("apr 17,2023 19:56:40 utc+0800", utc(2023, 4, 17, 11, 56, 40)),
        ("Jan 01,2024 00:30:00 UTC+0100", utc(2023, 12, 31, 23, 30, 0)),
        ("Dec 31,2023 23:59:59 UTC-1200", utc(2024, 1, 1, 11, 59, 59)),
        ("  Apr 17,2023 19:56:40 UTC+0800\n", utc(2023, 4, 17, 11, 56, 40)),
        ("Apr 7,2023 9:56:40 UTC+0800", utc(2023, 4, 7, 1, 56, 40)),
        # RFC 3339 / ISO 8601 with an offset or Z
        ("2023-04-17T11:56:40Z", utc(2023, 4, 17, 11, 56, 40)),
        ("2023-04-17t11:56:40z", utc(2023, 4, 17, 11, 56, 40)),
        ("2023-04-17T19:56:40+08:00", utc(2023, 4, 17, 11, 56, 40)),
        ("2023-04-17 11:56:40.123+02:00", utc(2023, 4, 17, 9, 56, 40, 123000)),
        ("2023-04-17T11:56:40.123456789Z", utc(2023, 4, 17, 11, 56, 40, 123456)),
        ("2023-04-17T11:56:40-0330", utc(2023, 4, 17, 15, 26, 40)),
        # psql's timestamptz output, copied from `select now()`
        ("2023-04-17 19:56:40.5+08", utc(2023, 4, 17, 11, 56, 40, 500000)),
        ("2023-04-17 11:56:40 +00:00", utc(2023, 4, 17, 11, 56, 40)),
    ],
)
def test_parse_restore_target_accepts(text: str, expected: datetime) -> None:
    got = parse_restore_target(text)
    assert got == expected
    assert got is not None and got.tzinfo is UTC and type(got) is datetime


@pytest.mark.parametrize("text", ["latest", "LATEST", "  Latest  ", "\tlatest\n"])
def test_parse_restore_target_latest(text: str) -> None:
    assert parse_restore_target(text) is None


# --- parse_restore_target: refused -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("Apr 17,2023 19:56:40", '"Apr 17,2023 19:56:40 UTC+0800" or 2023-04-17T19:56:40+08:00'),
        ("2023-04-17T19:56:40", '"Apr 17,2023 19:56:40 UTC+0800" or 2023-04-17T19:56:40+08:00'),
        ("2023-04-17 08:00:00.25", '"Apr 17,2023 08:00:00 UTC+0800" or 2023-04-17T08:00:00+08:00'),
    ],
)
def test_time_without_zone_says_how_to_add_one(text: str, shown: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_restore_target(text)
    message = str(info.value)
    assert "no time zone" in message
    assert text in message
    assert shown in message


ACCEPTED = ['"Apr 17,2023 19:56:40 UTC+0800"', "2023-04-17T19:56:40+08:00", "latest"]


@pytest.mark.parametrize(
    ("text", "because"),
    [
        ("", "cannot read"),
        ("   ", "cannot read"),
        ("yesterday", "cannot read"),
        ("now", "cannot read"),
        ("1681732600", "cannot read"),
        ("2023-04-17", "cannot read"),
        ("2023-04-17T19:56+08:00", "cannot read"),
        ("Apr 17 2023 19:56:40 UTC+0800", "cannot read"),
        ("Apr 17,2023 19:56:40 GMT+0800", "cannot read"),
        ("Apr 17,2023 19:56:40 UTC+8", "cannot read"),
        ("Apr 17,2023 19:56:40.5 UTC+0800", "cannot read"),
        ("2023-04-17T19:56:40+08:00 extra", "cannot read"),
        ("２０２３-04-17T19:56:40Z", "cannot read"),
        ("Feb 29,2023 10:00:00 UTC", "not a real date"),
        ("2023-13-01T00:00:00Z", "not a real date"),
        ("2023-04-17T24:00:00Z", "not a real date"),
        ("2023-04-17T23:60:00Z", "not a real date"),
        ("2016-12-31T23:59:60Z", "not a real date"),
        ("0000-01-01T00:00:00Z", "not a real date"),
        ("0001-01-01T00:30:00+01:00", "outside the years"),
        ("9999-12-31T23:30:00-01:00", "outside the years"),
    ],
)
def test_parse_restore_target_refuses(text: str, because: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_restore_target(text)
    message = str(info.value)
    assert because in message
    assert repr(text) in message
    for form in ACCEPTED:
        assert form in message


@pytest.mark.parametrize(
    ("text", "because", "expected"),
    [
        ("Foo 17,2023 19:56:40 UTC+0800", "unknown month 'Foo'", "Jan, Feb"),
        ("Apr 17,2023 19:56:40 UTC+2400", "beyond ±14:00", "UTC+0800 or +08:00"),
        ("Apr 17,2023 19:56:40 UTC+1401", "beyond ±14:00", "Asia/Shanghai"),
        ("2023-04-17T19:56:40-14:30", "beyond ±14:00", "UTC+0800 or +08:00"),
        ("2023-04-17 19:56:40 Mars/Olympus", "'Mars/Olympus' is not a known time zone", "UTC"),
        ("2023-03-26 02:30:00 Europe/Paris", "does not exist in Europe/Paris", "skipped"),
        ("2023-10-29 02:30:00 Europe/Paris", "happened twice", "UTC+0200 and at UTC+0100"),
        ("2023-04-17T19:56:40+08:60", "minutes go to 59", "2023-04-17T19:56:40+08:00"),
    ],
)
def test_parse_restore_target_refuses_fields(text: str, because: str, expected: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_restore_target(text)
    assert because in str(info.value)
    assert expected in str(info.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-04-17 19:56:40 Asia/Shanghai", utc(2023, 4, 17, 11, 56, 40)),
        ("2023-04-17T19:56:40 asia/shanghai", utc(2023, 4, 17, 11, 56, 40)),
        ("Apr 17,2023 19:56:40 Asia/Shanghai", utc(2023, 4, 17, 11, 56, 40)),
        ("2023-04-17 19:56:40 UTC", utc(2023, 4, 17, 19, 56, 40)),
        ("2023-04-17 19:56:40.25 Europe/Paris", utc(2023, 4, 17, 17, 56, 40, 250000)),
        ("2023-01-17 19:56:40 Europe/Paris", utc(2023, 1, 17, 18, 56, 40)),  # winter time
        ("2023-04-17 19:56:40 America/Argentina/Buenos_Aires", utc(2023, 4, 17, 22, 56, 40)),
        ("Apr 17,2023 19:56:40 UTC+1400", utc(2023, 4, 17, 5, 56, 40)),
        ("2023-04-17T19:56:40-14:00", utc(2023, 4, 18, 9, 56, 40)),
    ],
)
def test_named_zones_and_offsets_up_to_14_hours(text: str, expected: datetime) -> None:
    assert parse_restore_target(text) == expected


@pytest.mark.parametrize("value", [None, 12, b"latest", datetime(2023, 4, 17, tzinfo=UTC)])
def test_parse_restore_target_refuses_non_text(value: object) -> None:
    with pytest.raises(InvalidInput, match="not text"):
        parse_restore_target(value)  # type: ignore[arg-type]


# Text near the accepted forms reaches the deeper checks, where arbitrary text rarely gets.
_digits = st.integers(0, 99).map(lambda n: f"{n:02d}")
near_targets = st.one_of(
    st.builds(
        "{} {},{} {}:{}:{} {}".format,
        st.sampled_from(["Apr", "Feb", "feb", "Xyz", "Ap"]),
        st.integers(0, 40).map(str),
        st.integers(0, 10000).map(lambda n: f"{n:04d}"),
        _digits,
        _digits,
        _digits,
        st.sampled_from(["UTC", "UTC+0800", "UTC-2359", "UTC+9999", "UTC+08:61", "", "UTC+"]),
    ),
    st.builds(
        "{}-{}-{}T{}:{}:{}{}{}".format,
        st.integers(0, 10000).map(lambda n: f"{n:04d}"),
        _digits,
        _digits,
        _digits,
        _digits,
        _digits,
        st.sampled_from(["", ".1", ".1234567890"]),
        st.sampled_from(["Z", "", "+08", "-99:99", "+23:59", "-2400", "+0", "z"]),
    ),
)


@FAST
@given(st.one_of(st.text(), near_targets))
def test_parse_restore_target_never_raises_anything_else(text: str) -> None:
    try:
        got = parse_restore_target(text)
    except InvalidInput:
        return
    assert got is None or (got.tzinfo is UTC and type(got) is datetime)


# --- format_kbcli and the round trips --------------------------------------------------------


def test_format_kbcli_examples() -> None:
    instant = utc(2023, 4, 17, 11, 56, 40, 999999)
    assert format_kbcli(instant, "Asia/Shanghai") == "Apr 17,2023 19:56:40 UTC+0800"
    assert format_kbcli(instant, "UTC") == "Apr 17,2023 11:56:40 UTC+0000"
    assert format_kbcli(instant, "Asia/Kolkata") == "Apr 17,2023 17:26:40 UTC+0530"
    assert format_kbcli(instant, "America/St_Johns") == "Apr 17,2023 09:26:40 UTC-0230"
    assert format_kbcli(utc(2023, 1, 5, 12), "America/New_York") == "Jan 05,2023 07:00:00 UTC-0500"
    assert format_kbcli(utc(5, 3, 1), "UTC") == "Mar 01,0005 00:00:00 UTC+0000"


def test_format_kbcli_zone_with_seconds_keeps_the_instant() -> None:
    # Amsterdam was UTC+00:19:32 in 1900: shown at +0019 with the wall clock moved to match.
    instant = utc(1900, 1, 1, 12)
    text = format_kbcli(instant, "Europe/Amsterdam")
    assert text == "Jan 01,1900 12:19:00 UTC+0019"
    assert parse_restore_target(text) == instant


def test_format_kbcli_uses_tz_env_by_default() -> None:
    instant = utc(2023, 4, 17, 11, 56, 40)
    with tz_env("Asia/Shanghai"):
        assert format_kbcli(instant) == "Apr 17,2023 19:56:40 UTC+0800"
    with tz_env(":America/New_York"):
        assert format_kbcli(instant) == "Apr 17,2023 07:56:40 UTC-0400"
    with tz_env("UTC"):
        assert format_kbcli(instant) == "Apr 17,2023 11:56:40 UTC+0000"


def test_format_kbcli_refusals() -> None:
    with pytest.raises(InvalidInput, match="expected a datetime with a time zone"):
        format_kbcli(datetime(2023, 4, 17))
    with pytest.raises(InvalidInput, match="expected an IANA name like UTC or Asia/Shanghai"):
        format_kbcli(utc(2023, 4, 17), "Mars/Olympus")
    with pytest.raises(InvalidInput, match="expected an IANA name"):
        format_kbcli(utc(2023, 4, 17), "../../etc/passwd")
    with pytest.raises(InvalidInput, match="outside the years 1 to 9999"):
        format_kbcli(datetime.max.replace(tzinfo=UTC), "Asia/Shanghai")


def test_format_window() -> None:
    start, end = utc(2023, 4, 17, 11, 55, 48), utc(2023, 4, 17, 11, 57, 1)
    assert (
        format_window(start, end, "Asia/Shanghai")
        == "Apr 17,2023 19:55:48 UTC+0800 ~ Apr 17,2023 19:57:01 UTC+0800"
    )
    with tz_env("UTC"):
        assert (
            format_window(start, end)
            == "Apr 17,2023 11:55:48 UTC+0000 ~ Apr 17,2023 11:57:01 UTC+0000"
        )


ZONES = [
    "UTC",
    "Asia/Shanghai",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "America/St_Johns",
    "America/New_York",
    "Europe/Amsterdam",
    "Pacific/Chatham",
    "Pacific/Kiritimati",
    "Pacific/Pago_Pago",
]
# A day of margin at both ends keeps every zone's wall clock inside years 1..9999.
aware = st.datetimes(
    min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.timezones()
)


@FAST
@given(aware, st.sampled_from([*ZONES, None]))
def test_kbcli_round_trip(dt: datetime, zone: str | None) -> None:
    with tz_env("Asia/Kolkata"):
        text = format_kbcli(dt, zone)
    assert parse_restore_target(text) == dt.astimezone(UTC).replace(microsecond=0)


@FAST
@given(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(-14 * 60, 14 * 60),
)
def test_rfc3339_round_trip(wall: datetime, offset_minutes: int) -> None:
    dt = wall.replace(tzinfo=timezone(timedelta(minutes=offset_minutes)))
    assert parse_restore_target(dt.isoformat()) == dt
    assert parse_restore_target(dt.isoformat(sep=" ")) == dt


# --- TTL -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", timedelta(days=7)),
        ("12h", timedelta(hours=12)),
        ("30m", timedelta(minutes=30)),
        ("90s", timedelta(seconds=90)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("1d2h3m4s", timedelta(days=1, hours=2, minutes=3, seconds=4)),
        ("2h30m", timedelta(hours=2, minutes=30)),
        ("0d1s", timedelta(seconds=1)),
        ("168h", timedelta(days=7)),
        ("7D", timedelta(days=7)),
        (" 1d 12h ", timedelta(days=1, hours=12)),
        ("36500d", timedelta(days=36500)),
    ],
)
def test_parse_ttl_accepts(text: str, expected: timedelta) -> None:
    assert parse_ttl(text) == expected


@pytest.mark.parametrize(
    ("text", "because"),
    [
        ("", "cannot read"),
        ("7", "cannot read"),
        ("d", "cannot read"),
        ("1.5d", "cannot read"),
        ("-1d", "cannot read"),
        ("12h1d", "cannot read"),
        ("1d1d", "cannot read"),
        ("7 days", "cannot read"),
        ("P7D", "cannot read"),
        ("1y", "cannot read"),
        ("0d", "not positive"),
        ("0s", "not positive"),
        ("0h0m", "not positive"),
        ("36600d", "longer than 100 years"),
        ("9" * 30 + "d", "longer than 100 years"),
        ("9" * 5000 + "s", "longer than 100 years"),
    ],
)
def test_parse_ttl_refuses(text: str, because: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_ttl(text)
    assert because in str(info.value)
    assert "a TTL like 7d, 12h or 30m" in str(info.value)


def test_parse_ttl_weeks_hint() -> None:
    with pytest.raises(InvalidInput) as info:
        parse_ttl("2w")
    assert "a TTL like 7d, 12h or 30m" in str(info.value)
    assert info.value.hint == "write weeks as days, e.g. 14d"


@pytest.mark.parametrize(
    ("td", "text"),
    [
        (timedelta(days=7), "7d"),
        (timedelta(days=1, hours=12), "1d12h"),
        (timedelta(hours=12), "12h"),
        (timedelta(minutes=30), "30m"),
        (timedelta(seconds=90), "1m30s"),
        (timedelta(days=2, seconds=5), "2d5s"),
        (timedelta(seconds=5, microseconds=900000), "5s"),
    ],
)
def test_format_ttl(td: timedelta, text: str) -> None:
    assert format_ttl(td) == text


@pytest.mark.parametrize("td", [timedelta(0), timedelta(seconds=-5), timedelta(microseconds=5)])
def test_format_ttl_refuses_non_positive(td: timedelta) -> None:
    with pytest.raises(InvalidInput, match="expected a positive duration"):
        format_ttl(td)


near_ttls = st.lists(
    st.tuples(st.integers(0, 10**12).map(str), st.sampled_from("dhmswDHMS. -")),
    max_size=5,
).map(lambda parts: "".join(n + u for n, u in parts))


@FAST
@given(st.one_of(st.text(), near_ttls))
def test_parse_ttl_never_raises_anything_else(text: str) -> None:
    try:
        ttl = parse_ttl(text)
    except InvalidInput:
        return
    assert ttl > timedelta(0)


@FAST
@given(st.integers(1, 36525 * 86400).map(lambda s: timedelta(seconds=s)))
def test_ttl_round_trip(ttl: timedelta) -> None:
    text = format_ttl(ttl)
    assert parse_ttl(text) == ttl
    assert format_ttl(parse_ttl(text)) == text


# --- DURATION --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.4, "0s"),
        (5, "5s"),
        (5.6, "6s"),
        (59, "59s"),
        (60, "1m"),
        (63, "1m3s"),
        (3599, "59m59s"),
        (3600, "1h"),
        (7440, "2h4m"),
        (7459, "2h4m"),
        (86400 + 3600, "1d1h"),
        (3 * 86400 + 59, "3d"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize("seconds", [-1, float("nan"), float("inf"), "5", None, True])
def test_format_duration_refuses(seconds: object) -> None:
    with pytest.raises(InvalidInput, match="expected seconds >= 0"):
        format_duration(seconds)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "zone"),
    [("Asia/Shanghai", "Asia/Shanghai"), ("asia/shanghai", "Asia/Shanghai"), (" utc ", "UTC")],
)
def test_canonical_zone(name: str, zone: str) -> None:
    assert canonical_zone(name) == zone
    assert format_kbcli(utc(2023, 4, 17, 11, 56, 40), name).endswith(
        "UTC+0800" if zone != "UTC" else "UTC+0000"
    )


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "+08:00", "local", "posixrules", None])
def test_canonical_zone_refuses(name: str) -> None:
    with pytest.raises(InvalidInput, match="expected an IANA name like UTC or Asia/Shanghai"):
        canonical_zone(name)
