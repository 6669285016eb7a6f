"""Lsn: PostgreSQL's X/Y text, read and written, ordered as positions."""

from __future__ import annotations

import json

import pytest

from pgpitr.errors import InvalidInput
from pgpitr.wal.lsn import Lsn


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/0", 0),
        ("0/3000028", 0x3000028),
        ("1/2000028", (1 << 32) | 0x2000028),
        ("a/ff", (0xA << 32) | 0xFF),
        (" 0/16B3748 ", 0x16B3748),
        ("FFFFFFFF/FFFFFFFF", (1 << 64) - 1),
    ],
)
def test_parse_reads_postgresql_text(text: str, value: int) -> None:
    assert Lsn.parse(text) == value
    assert isinstance(Lsn.parse(text), Lsn)


def test_str_is_postgresql_form_upper_case_without_leading_zeros() -> None:
    assert str(Lsn.parse("a/00ff")) == "A/FF"
    assert str(Lsn(0x3000028)) == "0/3000028"
    assert f"at {Lsn.parse('1/2')}" == "at 1/2"
    assert f"{Lsn(255):x}" == "ff"  # a numeric format is the number's
    assert repr(Lsn(0x28)) == "Lsn('0/28')"


def test_round_trip() -> None:
    for text in ("0/0", "0/3000028", "16/B374D848", "FFFFFFFF/FFFFFFFF"):
        assert str(Lsn.parse(text)) == text
        assert Lsn.parse(str(Lsn.parse(text))) == Lsn.parse(text)


def test_ordering_is_by_position_not_text() -> None:
    a, b, c = Lsn.parse("0/FFFFFFFF"), Lsn.parse("1/0"), Lsn.parse("A/0")
    assert a < b < c
    assert sorted([c, a, b]) == [a, b, c]
    assert b - a == 1 and Lsn.parse("0/3000000") // (16 << 20) == 3
    assert max(Lsn.parse("9/0"), c) is c  # "9/0" > "A/0" as text


def test_parse_passes_an_lsn_through() -> None:
    lsn = Lsn(42)
    assert Lsn.parse(lsn) is lsn


@pytest.mark.parametrize(
    "text", ["", "0", "0/", "/1", "0/G", "1/2/3", "123456789/0", "0x1/0", "-1/0", "0 /1", None, 7]
)
def test_malformed_text_is_refused_clearly(text: object) -> None:
    with pytest.raises(InvalidInput, match="cannot read the LSN .*like 0/3000028"):
        Lsn.parse(text)  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [-1, 1 << 64, True, 1.5])
def test_out_of_range_numbers_are_refused(value: object) -> None:
    with pytest.raises(InvalidInput, match="not a WAL position"):
        Lsn(value)  # type: ignore[arg-type]


def test_json_of_a_number_stays_a_number() -> None:
    # an int subclass: a field that was a number in JSON stays one (records' positions)
    assert json.dumps({"lsn": Lsn(40)}) == '{"lsn": 40}'
