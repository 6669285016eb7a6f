"""Where a restore stops: the one typed value of a restore target, parsed once at the edge.

A ``RestoreTarget`` is what ``cluster restore`` builds from its ``--restore-to-*`` options, what
the ``restore`` flow takes as its ``target`` parameter (so that Prefect's run form shows each kind
as a typed, described field, and a run started from the UI is checked the same way), and what the
plan and the recovery settings read.  At most one kind is given; none is ``latest``, the end of
the archived WAL.  ``kind`` may also be said outright (the form's first field): then its field
must be filled, so that a kind chosen in the form with its field left empty is refused rather
than read as ``latest``.  Every check that needs nothing but the value is made here: a malformed
LSN or xid, a time without a zone, two targets at once, a chosen kind with nothing to go with
it.  Whether the target can be reached (inside the archive, committed, a known restore point) is
the plan's to check (pgpitr/operations/restore/).

The model's validators raise ``ValueError`` as pydantic expects, so a flow run's parameters fail
the way Prefect reports them; ``RestoreTarget.of`` (the CLI's and the engine's door) turns that
into the ``InvalidInput`` a person reads.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    WithJsonSchema,
    field_validator,
    model_serializer,
    model_validator,
)

from pgpitr import timeparse
from pgpitr.errors import InvalidInput
from pgpitr.restore_point_name import POINT_NAME_RE, POINT_NAME_RULE
from pgpitr.wal.lsn import LSN_RE, Lsn

Kind = Literal["latest", "time", "lsn", "xid", "name", "immediate"]

#: 0-2 are PostgreSQL's reserved ids (invalid, bootstrap, frozen): no transaction has them, in
#: any epoch.
FIRST_NORMAL_XID = 3
#: A transaction id as WAL and ``xmin`` show it: 32 bits, wrapping around; ``txid_current()``
#: (``pg_current_xact_id()``) gives the 64-bit one, epoch * 2**32 + the 32 bits.
XID_SPACE = 2**32
MAX_XID = 2**64 - 1
#: What a restore point's name may be: safe in an object key, PostgreSQL's 63-byte limit.

KINDS: tuple[Kind, ...] = get_args(Kind)

_OPTIONS = {
    "time": "--restore-to-time",
    "lsn": "--restore-to-lsn",
    "xid": "--restore-to-xid",
    "name": "--restore-to-name",
    "immediate": "--restore-to-immediate",
}
#: What a kind's field holds, as its refusal names it.
_FILLED_BY = {
    "time": "time",
    "lsn": "LSN",
    "xid": "transaction id",
    "name": "restore point name",
    "immediate": "immediate",
}


def parse_lsn(text: str) -> str:
    """PostgreSQL's text form of an LSN (``0/3000028``), upper-cased; ValueError otherwise."""
    try:
        return str(Lsn.parse(text))
    except InvalidInput as exc:
        raise ValueError(exc.message) from None


def _no_default(schema: dict[str, Any]) -> None:
    # the schema says string: a null default beside it would contradict it (a form reading
    # the field's own default would start it at a value its type does not allow)
    schema.pop("default", None)


def check_point_name(name: str) -> str:
    if not isinstance(name, str) or not POINT_NAME_RE.fullmatch(name):
        raise ValueError(f"invalid restore point name {name!r}: use {POINT_NAME_RULE}")
    return name


class RestoreTarget(BaseModel):
    """Where recovery stops.  Give at most one of time, lsn, xid, name, immediate; none (or
    time "latest") restores to the end of the archived WAL."""

    model_config = ConfigDict(frozen=True, extra="forbid", title="Restore target")

    # Said outright, or else read from the field that is filled: always set once validated.
    # Schema: a plain enum, no null and no default, which the run form shows as a dropdown with
    # nothing chosen (an anyOf with null would be a pair of tabs).
    kind: Annotated[Kind | None, WithJsonSchema({"type": "string", "enum": list(KINDS)})] = Field(
        default=None,
        title="Kind of target",
        description=(
            "Which of the fields below says where recovery stops: time, lsn (LSN), xid "
            "(transaction id), name (restore point), immediate (the end of the backup) or "
            "latest (the end of the archived WAL). The chosen kind's field must be filled: "
            "a chosen kind with an empty field is refused, never read as latest. Not "
            "chosen: the kind of whichever field is filled, latest if none is."
        ),
        json_schema_extra=_no_default,
    )
    # Schema: a plain string, which the run form shows as a text field, so that it takes every
    # format the CLI takes (format date-time would give a date picker without a time of day).
    time: Annotated[datetime | None, WithJsonSchema({"type": "string"})] = Field(
        default=None,
        title="Restore to time",
        description=(
            "Recover every transaction committed by this time (to the microsecond), with its "
            "zone, written as the CLI takes it: RFC 3339 2023-04-17T11:56:40Z or "
            '2023-04-17T19:56:40+08:00, kbcli\'s "Apr 17,2023 19:56:40 UTC+0800", '
            '"2023-04-17 19:56:40 Asia/Shanghai", or "latest" (the end of the archived WAL).'
        ),
        json_schema_extra=_no_default,
    )
    lsn: str | None = Field(
        default=None,
        title="Restore to LSN",
        pattern=f"^{LSN_RE.pattern}$",
        description=(
            "Recover up to this WAL position, e.g. 0/3000028 (pg_current_wal_lsn() on the "
            "source). It must lie between the end of a backup and the end of the archived WAL."
        ),
    )
    xid: int | None = Field(
        default=None,
        title="Restore to transaction id",
        ge=FIRST_NORMAL_XID,
        le=MAX_XID,
        description=(
            "Recover up to the commit of this transaction id: the 64-bit one of txid_current() "
            "(its epoch is checked) or the 32-bit xmin of a row on the source. The transaction "
            "must have committed in the archived WAL."
        ),
    )
    name: str | None = Field(
        default=None,
        title="Restore to restore point",
        pattern=f"^{POINT_NAME_RE.pattern}$",
        description=(
            "Recover up to this named restore point, made with `pgpitr cluster "
            "create-restore-point` (listed by `pgpitr cluster describe`)."
        ),
    )
    immediate: bool = Field(
        default=False,
        title="Restore to the end of the backup",
        description=(
            "Stop as soon as the chosen backup is consistent: its content only, no later "
            "transaction."
        ),
    )
    inclusive: bool = Field(
        default=True,
        title="Include the target",
        description=(
            "For a time, LSN or transaction id: stop just after the target (on, as PostgreSQL "
            "does) or just before it (off: `--exclusive`)."
        ),
    )

    @field_validator("time", mode="before")
    @classmethod
    def _read_time(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        if isinstance(value, str):
            try:
                return timeparse.parse_restore_target(value)
            except InvalidInput as exc:
                raise ValueError(exc.message) from None
        if isinstance(value, datetime):
            if value.utcoffset() is None:
                raise ValueError(f"restore time {value.isoformat()} has no time zone")
            return value.astimezone(UTC)
        return value

    @field_validator("lsn", mode="before")
    @classmethod
    def _read_lsn(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return parse_lsn(value)

    @field_validator("xid", mode="before")
    @classmethod
    def _read_xid(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        text = str(value).strip()
        if isinstance(value, bool) or not re.fullmatch(r"\d{1,20}", text, re.ASCII):
            raise ValueError(
                f"cannot read the transaction id {value!r}: expected a whole number like 1234 "
                "(txid_current() on the source)"
            )
        xid = int(text)
        if xid > MAX_XID or xid % XID_SPACE < FIRST_NORMAL_XID:
            raise ValueError(
                f"transaction id {xid} is out of range: ids go from {FIRST_NORMAL_XID} to "
                f"{MAX_XID}, and 0-2 of every epoch are reserved by PostgreSQL"
            )
        return xid

    @field_validator("name", mode="before")
    @classmethod
    def _read_name(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return check_point_name(value)

    @model_validator(mode="before")
    @classmethod
    def _latest_alone(cls, data: Any) -> Any:
        # "latest" reads as no time: with another target it would silently give way to it
        if isinstance(data, dict) and str(data.get("time") or "").strip().lower() == "latest":
            others = [k for k in _OPTIONS if k != "time" and data.get(k) not in (None, False, "")]
            if others:
                shown = " and ".join(f"{_OPTIONS[k]} ({k})" for k in others)
                raise ValueError(
                    f"--restore-to-time latest and {shown} were given together: give one "
                    "restore target at most"
                )
        return data

    @field_validator("kind", mode="before")
    @classmethod
    def _read_kind(cls, value: Any) -> Any:
        if value is None or (isinstance(value, str) and not value.strip()):
            return None
        return value.strip().lower() if isinstance(value, str) else value

    @model_validator(mode="before")
    @classmethod
    def _immediate_chosen(cls, data: Any) -> Any:
        # choosing the kind is enough: the form always sends the checkbox, unticked by default
        if isinstance(data, dict) and str(data.get("kind") or "").strip().lower() == "immediate":
            return {**data, "immediate": True}
        return data

    @model_validator(mode="after")
    def _one_kind(self) -> RestoreTarget:
        filled = [k for k in _OPTIONS if getattr(self, k) not in (None, False)]
        if len(filled) > 1:
            shown = " and ".join(f"{_OPTIONS[k]} ({k})" for k in filled)
            raise ValueError(f"{shown} were given together: give one restore target at most")
        found: Kind = filled[0] if filled else "latest"  # type: ignore[assignment]
        chosen = self.kind
        if chosen is not None and chosen != found:
            if found == "latest":
                raise ValueError(
                    f"kind {chosen} was chosen but no {_FILLED_BY[chosen]} was given: fill it "
                    "in, or choose kind latest for the end of the archived WAL"
                )
            raise ValueError(
                f"kind {chosen} was chosen but the {_FILLED_BY[found]} field was filled "
                f"({getattr(self, found)}): choose kind {found}, or empty that field"
            )
        if not self.inclusive and found not in ("time", "lsn", "xid"):
            raise ValueError(
                "--exclusive (inclusive: false) stops just before a time, an LSN or a "
                f"transaction id; a target of kind {found} has nothing to stop before"
            )
        # the kind is part of the value: a target read from its field alone equals the same
        # target with its kind said outright (the JSON that as_parameter sends).  Set in place,
        # the model being frozen: pydantic keeps only `self` from a validator run by __init__.
        self.__dict__["kind"] = found
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        # A kind that was read, not said, is left out: reading the dump infers it again, and
        # the flow's default (the run form's starting value) chooses no kind for the person.
        if "kind" not in self.model_fields_set:
            data.pop("kind", None)
        return data

    # -- the one way in from text, for the CLI and the engine --------------------------------
    @classmethod
    def of(cls, **fields: Any) -> RestoreTarget:
        """The target of these fields, or InvalidInput naming what is wrong with them."""
        try:
            return cls.model_validate(fields)
        except ValidationError as exc:
            raise InvalidInput(_first_message(exc), hint=_HINT) from None

    # -- reading it ---------------------------------------------------------------------------
    @property
    def latest(self) -> bool:
        return self.kind == "latest"

    @property
    def lsn_int(self) -> Lsn:
        assert self.lsn is not None
        return Lsn.parse(self.lsn)

    def as_parameter(self) -> dict[str, Any]:
        """The JSON a flow run's ``target`` parameter carries: the kind, said outright (so the
        run's parameters read as what was meant), and the fields that differ from the
        defaults."""
        return {"kind": self.kind, **self.model_dump(mode="json", exclude_defaults=True)}

    @property
    def xid32(self) -> int | None:
        """The transaction id as WAL shows it (and ``recovery_target_xid`` takes it)."""
        return None if self.xid is None else self.xid % XID_SPACE

    @property
    def xid_epoch(self) -> int | None:
        """The epoch a 64-bit id gives (None for a 32-bit one, which names no epoch)."""
        return None if self.xid is None or self.xid < XID_SPACE else self.xid // XID_SPACE

    def describe(self) -> str:
        """For a person: ``transaction 1234 (inclusive)``, ``the end of the archived WAL``."""
        edge = "" if self.inclusive else ", stopping just before it"
        if self.time is not None:
            return f"time {timeparse.format_kbcli(self.time)}{edge}"
        if self.lsn is not None:
            return f"LSN {self.lsn}{edge}"
        if self.xid is not None:
            return f"transaction {self.xid}{edge}"
        if self.name is not None:
            return f"restore point {self.name!r}"
        if self.immediate:
            return "the end of the backup (immediate)"
        return "the end of the archived WAL"

    def __str__(self) -> str:
        kind = self.kind
        if kind == "latest":
            return "latest"
        if kind == "immediate":
            return "immediate"
        value = getattr(self, kind)
        shown = value.isoformat() if isinstance(value, datetime) else str(value)
        return f"{kind} {shown}" + ("" if self.inclusive else " (exclusive)")


_HINT = (
    "give one of --restore-to-time, --restore-to-lsn, --restore-to-xid, --restore-to-name or "
    "--restore-to-immediate (none: latest); see `pgpitr cluster restore --help`"
)


def _first_message(exc: ValidationError) -> str:
    messages = []
    for error in exc.errors():
        text = str(error.get("msg", "")).removeprefix("Value error, ")
        where = ".".join(str(p) for p in error.get("loc", ()))
        if error.get("type") != "value_error" and where:
            text = f"{where}: {text}"
        messages.append(text)
    return "; ".join(messages) or str(exc)
