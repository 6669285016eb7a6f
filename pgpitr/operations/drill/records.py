"""A drill's record (``DrillResult``), stored under the source's stanza as ``drills/ID.json``: the
newest KEEP_RECORDS kept, listed, the passed ones the RTO model's history; and describe's drill
block.

A drill is Passed, Failed or Unchecked: Unchecked when nothing failed but its heartbeat oracle had
nothing to check against (no heartbeat at or before the target: heartbeat.enable off, or no agent
wrote one), so that it proves only that the archive restores and pg_amcheck is content, not that
the restore stopped at the right place.  An unchecked drill is no proof: it is not shown as
Passed, and it does not feed the RTO model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pgpitr import cluster_repository, rto, timeparse
from pgpitr.catalog import window as catalog_window
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import Repository

#: drill records kept per cluster (older ones go when a drill records its result)
KEEP_RECORDS = 100
#: how many of the newest passed drills measure the rates
RATE_SAMPLE = 5


@dataclass(frozen=True)
class DrillResult:
    id: str
    cluster: str
    scratch: str
    target: str
    started: str
    finished: str = ""
    #: no check failed (an unchecked drill has passed True and checked False)
    passed: bool = False
    #: the heartbeat oracle had something to check against
    checked: bool = True
    backup: str | None = None
    #: seconds of plan, materialise, replay, promote (the RTO), then of the checks
    phases: dict[str, float] = field(default_factory=dict)
    rto_seconds: float | None = None
    predicted_rto_seconds: float | None = None
    prediction_error_percent: float | None = None
    materialised_bytes: int | None = None
    replayed_bytes: int | None = None
    heartbeat: dict[str, Any] = field(default_factory=dict)
    amcheck: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    scratch_removed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DrillResult:
        names = {f.name for f in dataclasses.fields(cls)}
        found = {k: v for k, v in data.items() if k in names}
        if "checked" not in found:  # recorded before drills said so: their oracle's status
            found["checked"] = (data.get("heartbeat") or {}).get("status") != "unchecked"
        return cls(**found)

    @property
    def result(self) -> str:
        """Passed, Failed or Unchecked (nothing failed, but the oracle had nothing to check)."""
        if not self.passed:
            return "Failed"
        return "Passed" if self.checked else "Unchecked"

    def summary(self) -> str:
        """One line: what a person reads first."""
        when = timeparse.format_kbcli(datetime.fromisoformat(self.target))
        rto = f"RTO {self.rto_seconds:.1f} s" if self.rto_seconds is not None else "no RTO"
        if self.predicted_rto_seconds is not None and self.prediction_error_percent is not None:
            rto += (
                f" (predicted {self.predicted_rto_seconds:.1f} s, "
                f"{self.prediction_error_percent:+.0f} %)"
            )
        elif self.rto_seconds is not None:
            rto += " (no prediction: no drill before this one)"
        why = f": {self.error}" if self.error else ""
        if self.result == "Unchecked":
            why = f": {self.heartbeat.get('detail') or 'no heartbeat to check against'}"
        return f"drill {self.id} of {self.cluster} to {when}: {self.result}, {rto}{why}"


def records_prefix(stanza: str) -> str:
    return f"{stanza}/drills/"


def record(result: DrillResult) -> str:
    """Store the result under the source's stanza; keep the newest KEEP_RECORDS."""
    c = Cluster.get(result.cluster)
    repo = cluster_repository.repository(c)
    prefix = records_prefix(c.state.stanza)
    key = f"{prefix}{result.id}.json"
    repo.put_json(key, result.as_dict())
    keys = _record_keys(repo, c.state.stanza)
    for old in keys[:-KEEP_RECORDS]:
        repo.delete(old)
    return key


def _record_keys(repo: Repository, stanza: str) -> list[str]:
    return sorted(i.key for i in repo.list(records_prefix(stanza)) if i.key.endswith(".json"))


def list_drills(cluster: Cluster, limit: int | None = None) -> list[DrillResult]:
    """The cluster's drills, newest first (the newest ``limit`` only: one LIST, limit GETs)."""
    repo = cluster_repository.repository(cluster)
    keys = _record_keys(repo, cluster.state.stanza)
    chosen = keys if limit is None else keys[-limit:]
    return [DrillResult.from_dict(repo.get_json(k)) for k in reversed(chosen)]


def _newest(repo: Repository, stanza: str) -> list[DrillResult]:
    """The newest 2 x RATE_SAMPLE drills, newest first: one LIST, at most that many GETs."""
    keys = _record_keys(repo, stanza)[-(RATE_SAMPLE * 2) :]
    return [DrillResult.from_dict(repo.get_json(k)) for k in reversed(keys)]


def _passed(drills: list[DrillResult]) -> list[DrillResult]:
    """The drills whose rates count: passed (checked), with an RTO; the newest RATE_SAMPLE."""
    return [d for d in drills if d.result == "Passed" and d.rto_seconds is not None][:RATE_SAMPLE]


def history(repo: Repository, stanza: str) -> list[DrillResult]:
    return _passed(_newest(repo, stanza))


def describe_fields(cluster: Cluster, window: catalog_window.Window) -> dict[str, Any]:
    """describe's drill block: the last drill, the predicted RTO of a restore to latest.
    Bounded: one LIST of the drill records (at most KEEP_RECORDS) and 2 x RATE_SAMPLE reads."""
    newest = _newest(cluster_repository.repository(cluster), cluster.state.stanza)
    history = _passed(newest)
    last = newest[0] if newest else None
    volumes = rto.latest_volumes(window)
    predicted = rto.predict(history, volumes[0], volumes[1]) if volumes else None
    if predicted is not None:
        note = f"from {len(history)} passed drill(s)"
    elif not history:
        note = "no drill yet" if last is None else "no passed drill yet"
    else:
        note = "no backup to restore"
    return {
        "last_drill": (
            {
                "id": last.id,
                "time": last.started,
                "target": last.target,
                "result": last.result,
                "rto_seconds": last.rto_seconds,
                "predicted_rto_seconds": last.predicted_rto_seconds,
                "prediction_error_percent": last.prediction_error_percent,
                "error": last.error,
            }
            if last
            else None
        ),
        "predicted_rto_latest_seconds": round(predicted, 1) if predicted is not None else None,
        "predicted_rto_note": note,
    }
