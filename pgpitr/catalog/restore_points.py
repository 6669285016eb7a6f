"""Restore points recorded in the repository: a name, its LSN and time, readable by any later
restore (``--restore-to-point``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pgpitr.errors import InvalidInput, NotFound, TamperedObject
from pgpitr.repository import Repository
from pgpitr.restore_point_name import POINT_NAME_RE, POINT_NAME_RULE
from pgpitr.wal.lsn import Lsn


@dataclass(frozen=True)
class RestorePoint:
    name: str
    time: datetime  # the server's clock when the point was made
    lsn: Lsn  # pg_create_restore_point's result: the end of the point's WAL record
    timeline: int
    cluster: str

    def __post_init__(self) -> None:
        # a flow's result reads back with the LSN as its JSON text
        object.__setattr__(self, "lsn", Lsn.parse(self.lsn))

    @property
    def lsn_int(self) -> Lsn:
        return self.lsn

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "time": self.time.isoformat(),
            "lsn": str(self.lsn),
            "timeline": self.timeline,
            "cluster": self.cluster,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestorePoint:
        return cls(
            name=data["name"],
            time=datetime.fromisoformat(data["time"]),
            lsn=data["lsn"],
            timeline=int(data["timeline"]),
            cluster=data.get("cluster", ""),
        )


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not POINT_NAME_RE.fullmatch(name):
        raise InvalidInput(
            f"invalid restore point name {name!r}: use {POINT_NAME_RULE}",
            hint="e.g. before-upgrade-2026-12-01",
        )
    return name


def point_key(stanza: str, name: str) -> str:
    return f"{stanza}/restore_points/{name}.json"


def _read(repo: Repository, stanza: str, name: str) -> RestorePoint:
    """The point stored as ``name``, refused when it says it is another point or another
    cluster's: copied over another's record, it would send a restore to its LSN."""
    key = point_key(stanza, name)
    point = RestorePoint.from_dict(repo.get_json(key))
    if point.name != name or point.cluster not in ("", stanza):  # "": written before it was kept
        raise TamperedObject(
            f"object {repo.url}/{key} records restore point {point.name!r} of cluster "
            f"{point.cluster!r}, not {name!r} of cluster {stanza!r}: it was copied or moved in "
            "the repository, and is refused",
            hint="the repository was changed behind pgpitr's back: find who changes it",
        )
    return point


def list_points(repo: Repository, stanza: str) -> list[RestorePoint]:
    """Every recorded point of a stanza, oldest (lowest LSN) first."""
    folder = f"{stanza}/restore_points/"
    found = [
        _read(repo, stanza, info.key[len(folder) : -len(".json")])
        for info in repo.list(folder)
        if info.key.endswith(".json")
    ]
    return sorted(found, key=lambda p: (p.timeline, p.lsn_int, p.name))


def get_point(repo: Repository, stanza: str, name: str) -> RestorePoint:
    key = point_key(stanza, validate_name(name))
    if not repo.exists(key):
        known = ", ".join(p.name for p in list_points(repo, stanza)) or "none"
        raise NotFound(
            f"cluster {stanza!r} has no restore point {name!r} (known: {known})",
            hint=f"see `pgpitr cluster describe {stanza}`; make one with `pgpitr cluster "
            f"create-restore-point {stanza} --name NAME`",
        )
    return _read(repo, stanza, name)
