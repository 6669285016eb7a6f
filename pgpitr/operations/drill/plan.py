"""A drill's plan: its target (``--at``, or a random time inside the recoverable window), the
scratch cluster's name and the drill's id (``DrillRequest``, ``DrillPlan``, ``choose_target``)."""

from __future__ import annotations

import logging
import random
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from pgpitr import cluster_repository, timeparse
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import RecoveryTargetError
from pgpitr.postgres.cluster import Cluster, validate_name

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrillPlan:
    cluster: str
    scratch: str
    target: datetime
    id: str  # 20261202T012345Z-ab12cd: sorts by time
    started: str


@dataclass(frozen=True)
class DrillRequest:
    """What a drill was asked for (CLI, flow, schedule): the cluster, and the time to restore
    (None: a random time inside the window), its form checked when it is made."""

    cluster: str
    at: datetime | None = None

    def __post_init__(self) -> None:
        validate_name(self.cluster)
        if self.at is not None and self.at.tzinfo is None:
            raise RecoveryTargetError(f"drill time {self.at!r} has no time zone")

    @classmethod
    def parse(cls, cluster: str, at: str | None) -> DrillRequest:
        """``--at`` and the flow's ``at``: a restore time (as ``restore --restore-to-time``
        reads it) or ``random``."""
        if at is None or at.strip().lower() in ("", "random"):
            return cls(cluster)
        when = timeparse.parse_restore_target(at)
        if when is None:
            raise RecoveryTargetError(
                "a drill restores to a time inside the window, not to latest",
                hint="pass --at TIME or --at random",
            )
        return cls(cluster, when)

    def parameters(self) -> dict[str, str]:
        """The drill flow's parameters (JSON: the same through a deployment)."""
        return {"cluster": self.cluster, "at": self.at.isoformat() if self.at else "random"}


def scratch_name(cluster: str) -> str:
    """``NAME-drill-XXXXXX``, within the length of a cluster name."""
    return f"{cluster[:34].rstrip('-')}-drill-{secrets.token_hex(3)}"


def choose_target(request: DrillRequest) -> DrillPlan:
    """The drill's target: the time asked for, or a random time inside the recoverable
    window."""
    cluster, at = request.cluster, request.at
    c = Cluster.get(cluster)
    window = catalog_window.recoverable_window(
        cluster_repository.repository(c), c.state.stanza, c.bindir
    )
    periods = window.periods
    if not periods:
        raise RecoveryTargetError(
            f"cluster {cluster!r} has no recoverable window yet: nothing to drill",
            hint=f"turn log backup on and take a backup (`pgpitr cluster backup {cluster}`)",
        )
    if at is None:
        target = random_time(periods)
    elif not any(a <= at < b for a, b in periods):  # at the last commit: see reach.py
        shown = ", ".join(timeparse.format_window(a, b) for a, b in periods)
        raise RecoveryTargetError(
            f"{timeparse.format_kbcli(at)} is outside the recoverable window of {cluster!r}: "
            f"{shown}",
            hint="pick a time inside it, or --at random",
        )
    else:
        target = at
    now = datetime.now(UTC)
    name = scratch_name(cluster)
    drill_id = f"{now.strftime('%Y%m%dT%H%M%SZ')}-{name[-6:]}"
    log.info("drill %s: %s to %s", drill_id, name, timeparse.format_kbcli(target))
    return DrillPlan(cluster, name, target, drill_id, now.isoformat(timespec="seconds"))


def random_time(periods: list[tuple[datetime, datetime]]) -> datetime:
    """A uniformly random time in the periods, on a whole second when one fits."""
    total = sum((b - a).total_seconds() for a, b in periods)
    offset = random.uniform(0, total)
    for a, b in periods:
        length = (b - a).total_seconds()
        if offset <= length:
            when = a + timedelta(seconds=offset)
            whole = when.replace(microsecond=0)
            return whole if a <= whole < b else min(when, b - timedelta(microseconds=1))
        offset -= length
    return periods[-1][1] - timedelta(microseconds=1)
