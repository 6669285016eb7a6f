"""A WAL position (log sequence number): one type for every LSN pgpitr reads, compares or shows.

``Lsn`` is an ``int`` (the byte position), so LSNs order, subtract and divide into segments as
numbers; ``str()`` gives PostgreSQL's text form ``X/Y`` (``0/3000028``), and ``Lsn.parse`` reads
it.  JSON keeps LSNs as that text: the text form is what PostgreSQL prints and people paste.
Standard library only: the per-segment WAL commands import it.
"""

from __future__ import annotations

import re

from pgpitr.errors import InvalidInput

__all__ = ["LSN_RE", "Lsn"]

LSN_RE = re.compile(r"[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}", re.ASCII)
_MAX = (1 << 64) - 1


class Lsn(int):
    """A WAL position: ``Lsn.parse("0/3000028")``, ``Lsn(0x3000028)``."""

    __slots__ = ()

    def __new__(cls, value: int) -> Lsn:
        # bool is an int too, and a float would be truncated silently: neither is a position
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX:
            raise InvalidInput(f"{value!r} is not a WAL position: expected 0 to 2**64-1")
        return super().__new__(cls, value)

    @classmethod
    def parse(cls, text: str | Lsn) -> Lsn:
        """The LSN PostgreSQL's text ``text`` names (case and surrounding blanks aside)."""
        if isinstance(text, Lsn):
            return text
        if not isinstance(text, str) or not LSN_RE.fullmatch(text.strip()):
            raise InvalidInput(
                f"cannot read the LSN {text!r}: expected PostgreSQL's form, two hexadecimal "
                "numbers of up to 8 digits separated by '/', like 0/3000028 (see "
                "pg_current_wal_lsn())"
            )
        high, _, low = text.strip().partition("/")
        return cls((int(high, 16) << 32) | int(low, 16))

    def __str__(self) -> str:
        return f"{self >> 32:X}/{self & 0xFFFFFFFF:X}"

    def __format__(self, spec: str) -> str:
        # an f-string shows the text form; a numeric spec ("x", "d") formats the number
        return str(self) if not spec else int(self).__format__(spec)

    def __repr__(self) -> str:
        return f"Lsn('{self}')"
