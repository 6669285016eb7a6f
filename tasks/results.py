"""How a pgpitr flow's result and failure are kept in Prefect's result storage: JSON, never pickle.

The CLI reads a served run's result back from result storage (``--wait``, cli/runner.py).
Prefect's default serializer is pickle, so reading a result would run whatever code the stored
bytes name.  ``PitrJSON`` writes data instead:

- JSON values as they are (an LSN as its text, 0/3000028, which the dataclass holding it reads
  back); tuples, sets, datetimes, dates, times, timedeltas, paths, UUIDs and dicts with keys
  other than strings as small tagged objects (``{"__pgpitr__": "datetime", ...}``);
- dataclasses, pydantic models and enums of pgpitr's own packages (a backup manifest, a restore
  result with its target, a drill result, a restore point) with their qualified type name, their
  fields encoded the same way;
- a ``PitrError`` (any subclass: the Kubernetes ones too) with its type, message, hint, exit code,
  ``transient`` and its other attributes; any other exception becomes a plain ``PitrError`` that
  names its type and message (and keeps the type's name in ``raised_as``).

Reading back rebuilds the same types, but imports a type only when its name is in pgpitr's own
packages (``pgpitr.``, ``tasks.``, ``flows.``) and it is of the kind the payload says (a
dataclass, a model, an enum, a PitrError); any other name is refused, never imported.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
import re
import uuid
from datetime import date, datetime, time, timedelta
from pathlib import Path, PurePath
from typing import Any, Literal

from prefect.serializers import Serializer
from pydantic import BaseModel

from pgpitr.errors import PitrError
from pgpitr.wal.lsn import Lsn

__all__ = ["ALLOWED_PREFIXES", "TYPE", "PitrJSON", "RefusedType", "decode", "encode"]

#: The serializer's ``type``: what a result record names, and what the CLI accepts to read.
TYPE = "pgpitr-json"
#: The only modules a stored type name may come from.
ALLOWED_PREFIXES = ("pgpitr.", "tasks.", "flows.")
_TAG = "__pgpitr__"
#: A qualified name as Python writes one: identifiers joined by dots, nothing else.
_QUALIFIED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)+", re.ASCII)


class RefusedType(PitrError):
    """A stored result names a type that is not pgpitr's own, or not of the kind it claims."""


# -- encoding ----------------------------------------------------------------------------------


def encode(value: Any) -> Any:
    """VALUE as JSON-ready data (dicts, lists, strings, numbers, booleans, None)."""
    if isinstance(value, enum.Enum):  # before str and int: a StrEnum is a str
        return {_TAG: "enum", "type": _name(type(value)), "value": encode(value.value)}
    if isinstance(value, Lsn):  # before int: an LSN is an int, kept in PostgreSQL's text form
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        if all(isinstance(k, str) for k in value) and _TAG not in value:
            return {k: encode(v) for k, v in value.items()}
        return {_TAG: "dict", "items": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, BaseException):
        return _encode_error(value)
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return {_TAG: "tuple", "items": [encode(v) for v in value]}
    if isinstance(value, set | frozenset):
        kind = "set" if isinstance(value, set) else "frozenset"
        return {_TAG: kind, "items": [encode(v) for v in value]}
    if isinstance(value, datetime):
        return {_TAG: "datetime", "value": value.isoformat()}
    if isinstance(value, date):
        return {_TAG: "date", "value": value.isoformat()}
    if isinstance(value, time):
        return {_TAG: "time", "value": value.isoformat()}
    if isinstance(value, timedelta):
        return {_TAG: "timedelta", "value": value.total_seconds()}
    if isinstance(value, PurePath):
        return {_TAG: "path", "value": str(value)}
    if isinstance(value, uuid.UUID):
        return {_TAG: "uuid", "value": str(value)}
    if isinstance(value, BaseModel):
        return {
            _TAG: "model",
            "type": _name(type(value)),
            "data": value.model_dump(mode="json"),
        }
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {_TAG: "dataclass", "type": _name(type(value)), "fields": fields}
    raise TypeError(
        f"a pgpitr result cannot hold a {type(value).__module__}.{type(value).__qualname__}: "
        "return JSON values, or a dataclass, pydantic model or enum of pgpitr's own packages"
    )


def _name(kind: type) -> str:
    name = f"{kind.__module__}.{kind.__qualname__}"
    if not name.startswith(ALLOWED_PREFIXES):
        raise TypeError(f"a pgpitr result cannot hold a {name}: not one of pgpitr's own types")
    return name


def _encode_error(error: BaseException) -> dict[str, Any]:
    raised_as = f"{type(error).__module__}.{type(error).__qualname__}"
    if not isinstance(error, PitrError) or not raised_as.startswith(ALLOWED_PREFIXES):
        message = str(getattr(error, "message", error)).strip() or "no message"
        hint = getattr(error, "hint", None) if isinstance(error, PitrError) else None
        error = PitrError(f"{type(error).__name__}: {message}", hint=hint)
        error.raised_as = raised_as  # what was raised: not the engine's (the CLI says so)
    kind = type(error)
    attributes = dict(error.__dict__)
    message = attributes.pop("message", str(error))
    hint = attributes.pop("hint", None)
    encoded: dict[str, Any] = {}
    for key, value in attributes.items():
        if key in ("transient", "exit_code") or key.startswith("_"):
            continue
        try:
            encoded[key] = encode(value)
        except TypeError:  # an attribute that is not data: its text, so nothing is lost silently
            encoded[key] = str(value)
    return {
        _TAG: "error",
        "type": _name(kind),
        "message": message,
        "hint": hint,
        "exit_code": error.exit_code,
        "transient": error.transient,
        "attributes": encoded,
    }


# -- decoding ----------------------------------------------------------------------------------


def decode(data: Any) -> Any:
    """The value ``encode`` turned into DATA."""
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict):
        return data
    tag = data.get(_TAG)
    if tag is None:
        return {k: decode(v) for k, v in data.items()}
    decoder = _DECODERS.get(tag)
    if decoder is None:
        raise RefusedType(f"a stored pgpitr result has an unknown tag {tag!r}")
    return decoder(data)


def _load_type(name: Any, check: Any, kind: str) -> Any:
    """The class NAME, imported only from pgpitr's own packages and only when CHECK holds."""
    if (
        not isinstance(name, str)
        or not name.startswith(ALLOWED_PREFIXES)
        or not _QUALIFIED.fullmatch(name)
    ):
        raise RefusedType(
            f"a stored pgpitr result names the type {name!r}, which is not pgpitr's own: "
            "refused, not imported",
            hint="results of pgpitr's flows hold only pgpitr's types; check who wrote it",
        )
    found: Any = None
    # the longest module prefix that imports; then the attributes (a nested class)
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        module_name, qualname = ".".join(parts[:cut]), ".".join(parts[cut:])
        try:
            found = importlib.import_module(module_name)
        except ImportError:
            continue
        for attribute in qualname.split("."):
            found = getattr(found, attribute, None)
        break
    if not isinstance(found, type) or not check(found):
        raise RefusedType(f"a stored pgpitr result names {name!r}, which is not a pgpitr {kind}")
    if not f"{found.__module__}.{found.__qualname__}".startswith(ALLOWED_PREFIXES):
        raise RefusedType(f"a stored pgpitr result names {name!r}, which is not pgpitr's own")
    return found


def _decode_dataclass(data: dict[str, Any]) -> Any:
    kind = _load_type(data.get("type"), dataclasses.is_dataclass, "dataclass")
    values = {k: decode(v) for k, v in data.get("fields", {}).items()}
    known = {f.name: f for f in dataclasses.fields(kind)}
    given = {k: v for k, v in values.items() if k in known and known[k].init}
    instance = kind(**given)
    for key, value in values.items():
        if key in known and not known[key].init:
            object.__setattr__(instance, key, value)
    return instance


def _decode_model(data: dict[str, Any]) -> Any:
    kind = _load_type(data.get("type"), lambda k: issubclass(k, BaseModel), "pydantic model")
    return kind.model_validate(data.get("data"))


def _decode_enum(data: dict[str, Any]) -> Any:
    kind = _load_type(data.get("type"), lambda k: issubclass(k, enum.Enum), "enum")
    return kind(decode(data.get("value")))


def _decode_error(data: dict[str, Any]) -> PitrError:
    message = str(data.get("message", ""))
    try:
        kind = _load_type(data.get("type"), lambda k: issubclass(k, PitrError), "error")
    except RefusedType:
        kind = PitrError
        message = f"{data.get('type')}: {message}"
    error = kind.__new__(kind)
    Exception.__init__(error, message)
    attributes = {k: decode(v) for k, v in (data.get("attributes") or {}).items()}
    error.__dict__.update(attributes)
    error.message = message
    error.hint = data.get("hint")
    if data.get("transient") is not None and data["transient"] != kind.transient:
        error.transient = bool(data["transient"])
    if isinstance(data.get("exit_code"), int) and data["exit_code"] != kind.exit_code:
        error.exit_code = data["exit_code"]
    return error


def _items(data: dict[str, Any]) -> list[Any]:
    return [decode(v) for v in data.get("items", [])]


_DECODERS: dict[str, Any] = {
    "dict": lambda d: {decode(k): decode(v) for k, v in d.get("items", [])},
    "tuple": lambda d: tuple(_items(d)),
    "set": lambda d: set(_items(d)),
    "frozenset": lambda d: frozenset(_items(d)),
    "datetime": lambda d: datetime.fromisoformat(d["value"]),
    "date": lambda d: date.fromisoformat(d["value"]),
    "time": lambda d: time.fromisoformat(d["value"]),
    "timedelta": lambda d: timedelta(seconds=d["value"]),
    "path": lambda d: Path(d["value"]),
    "uuid": lambda d: uuid.UUID(d["value"]),
    "dataclass": _decode_dataclass,
    "model": _decode_model,
    "enum": _decode_enum,
    "error": _decode_error,
}


# -- the serializer ----------------------------------------------------------------------------


class PitrJSON(Serializer):
    """Prefect's serializer for pgpitr's flows: ``encode``/``decode`` as UTF-8 JSON."""

    type: Literal["pgpitr-json"] = "pgpitr-json"

    def dumps(self, obj: Any) -> bytes:
        data = encode(obj)
        if _is_record(data):  # a value that looks like a whole record: tagged, so never taken so
            data = {_TAG: "dict", "items": [[k, v] for k, v in data.items()]}
        return json.dumps(data, ensure_ascii=False, allow_nan=True).encode()

    def loads(self, blob: bytes) -> Any:
        return decode(json.loads(blob.decode()))


# -- reading a run's result back -----------------------------------------------------------------


def decode_record(blob: bytes) -> Any:
    """The value in a stored result, read as pgpitr's JSON only.  A flow's result file holds
    the serializer's output alone (Prefect keeps its metadata in the run's state); a whole
    Prefect record (``{"metadata": ..., "result": ...}``, as tasks write them) is read only when
    it says it was written by ``PitrJSON``.  Anything else, a pickle above all, is refused,
    never loaded."""
    try:
        data = json.loads(blob)
    except ValueError:
        raise RefusedType("a stored result is not JSON: not loaded (a pickle?)") from None
    if not _is_record(data):
        return decode(data)
    serializer = data["metadata"].get("serializer")
    kind = serializer.get("type") if isinstance(serializer, dict) else None
    if kind != TYPE or not isinstance(data.get("result"), str):
        raise RefusedType(
            f"a stored result was written with the serializer {kind!r}, not pgpitr's "
            f"{TYPE!r}: refused, not loaded",
            hint="pgpitr's flows keep their results as JSON; check the agent's version and "
            "who else writes to the result storage",
        )
    return SERIALIZER.loads(data["result"].encode())


def _is_record(data: Any) -> bool:
    """Whether DATA has the shape of a whole Prefect result record (``dumps`` never writes a
    value of that shape untagged)."""
    return (
        isinstance(data, dict)
        and set(data) == {"metadata", "result"}
        and isinstance(data["metadata"], dict)
    )


def read_stored(metadata: Any) -> Any:
    """The value a finished run keeps in result storage, named by its state's METADATA (a
    ``ResultRecordMetadata``), read as ``decode_record`` does.  Prefect's own reading
    (``state.result()``) would load the record with whatever serializer the stored file
    names; this reads its bytes and decides itself."""
    from prefect.utilities.asyncutils import run_coro_as_sync

    serializer = getattr(metadata, "serializer", None)
    if getattr(serializer, "type", None) != TYPE:
        raise RefusedType(
            f"the run's result was written with the serializer "
            f"{getattr(serializer, 'type', None)!r}, not pgpitr's {TYPE!r}: not loaded"
        )
    return decode_record(run_coro_as_sync(_read_bytes(metadata)))


async def _read_bytes(metadata: Any) -> bytes:
    import asyncio

    from prefect._internal.compatibility.blocks import call_explicitly_async_block_method
    from prefect.filesystems import LocalFileSystem
    from prefect.results import aget_default_result_storage, aresolve_result_storage

    key = metadata.storage_key
    if not key:
        raise RefusedType("the run's result names no storage key")
    if metadata.storage_block_id is not None:
        storage = await aresolve_result_storage(metadata.storage_block_id)
    elif Path(key).is_absolute():
        storage = LocalFileSystem(basepath=str(Path(key).parent))
    else:
        storage = await aget_default_result_storage()
    for attempt in range(3):  # Prefect may write a result just after its state
        try:
            return await call_explicitly_async_block_method(storage, "read_path", (key,), {})
        except (OSError, ValueError):
            if attempt == 2:
                raise
            await asyncio.sleep(1)
    raise AssertionError("unreachable")


#: What every pgpitr flow passes as ``result_serializer``.
SERIALIZER = PitrJSON()
#: Options of a pgpitr flow whose result the CLI reads back.
PERSISTED: dict[str, Any] = {"persist_result": True, "result_serializer": SERIALIZER}
