"""The RTO model: how long a restore takes, from what the drills measured.

A restore takes the fixed time of planning and promotion, plus the backup's size over the
materialise rate, plus the WAL to replay over the replay rate; the rates and the fixed time are
those of the newest passed drills (pgpitr/operations/drill/), weighted by volume.  With no drill,
there is no prediction, rather than an invented number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from pgpitr.catalog import window as catalog_window
from pgpitr.wal import archive


class Measured(Protocol):
    """What a drill measured (a ``drill.DrillResult``)."""

    @property
    def phases(self) -> dict[str, float]: ...

    @property
    def materialised_bytes(self) -> int | None: ...

    @property
    def replayed_bytes(self) -> int | None: ...


@dataclass(frozen=True)
class Rates:
    materialise: float  # bytes per second
    replay: float  # WAL bytes per second
    fixed: float  # seconds of plan and promote
    drills: int


def rates(history: Sequence[Measured]) -> Rates | None:
    """The rates of passed drills, volume-weighted; None when there is none."""

    def total(phase: str) -> float:
        return sum(d.phases.get(phase, 0.0) for d in history)

    if not history or total("materialise") <= 0 or total("replay") <= 0:
        return None
    return Rates(
        materialise=sum(d.materialised_bytes or 0 for d in history) / total("materialise"),
        replay=sum(d.replayed_bytes or 0 for d in history) / total("replay"),
        fixed=(total("plan") + total("promote")) / len(history),
        drills=len(history),
    )


def predict(history: Sequence[Measured], size: int, wal_bytes: int) -> float | None:
    """Seconds a restore of ``size`` bytes of data and ``wal_bytes`` of WAL should take."""
    measured = rates(history)
    if measured is None or measured.materialise <= 0 or measured.replay <= 0:
        return None
    return measured.fixed + size / measured.materialise + wal_bytes / measured.replay


def latest_volumes(window: catalog_window.Window) -> tuple[int, int, str] | None:
    """(data bytes, WAL bytes, backup) of a restore to ``latest``: from the backup it chooses
    to the end of that backup's archived chain."""
    backup = window.latest_backup
    if backup is None:
        return None
    end = next((r for r in window.ranges if r.backup == backup.name), None)
    if end is not None:
        segment = archive.Segment.parse(end.end_segment, backup.wal_segment_size)
        end_lsn = (segment.number + 1) * backup.wal_segment_size
    else:
        end_lsn = backup.stop_lsn_int
    return backup.database_size or 0, max(0, end_lsn - backup.start_lsn_int), backup.name
