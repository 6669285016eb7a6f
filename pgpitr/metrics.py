"""Prometheus metrics of this host's clusters, served by the agent on ``ADDRESS:PORT/metrics``.

A scrape reads memory only.  A refresher thread reads each cluster of this host in turn, one
pass every ``PGPITR_METRICS_REFRESH`` seconds (60 by default), and keeps a snapshot per cluster:

- the recoverable window and the backups as ``describe`` reads them (the catalog index, a
  constant number of listings per chain and one pg_waldump of a chain's last segment: never a
  listing of the whole repository);
- the drill records as ``describe`` reads them (one LIST of at most 100 keys, at most ten GETs),
  which give the last drill and the predicted RTO of a restore to ``latest``;
- ``pg_stat_archiver`` (one query), when the server runs with log backup on.

Why a thread rather than reading on each scrape: a scrape must answer within Prometheus's scrape
timeout (10 s by default) whatever the repository's latency, and fifty clusters read on every
scrape of every Prometheus that scrapes the agent would cost fifty describes a scrape.  With the
thread, 50 clusters cost 50 describe-sized reads a minute, one after the other, however often
anyone scrapes; a repository that fails leaves its cluster's last values in place, flagged
(``pgpitr_metrics_refresh_error``), and one that is slow delays the pass it is in
(``pgpitr_metrics_refresh_timestamp_seconds`` says how old each cluster's values are).
Measured on 2 vCPUs (file repository): a cluster's read 14-58 ms, a scrape of 50 clusters'
snapshots 2.6 ms (47 kB).

The archive lag is the one value computed at the scrape: now minus the cached window end (the
same definition as describe's ARCHIVE-LAG), so between two refreshes it reads up to one refresh
interval high, never low.  Lower the interval where the RPO target is tight.

Labels are the cluster's name and the host's: never a repository URL (it may carry credentials)
nor anything else a secret could hide in.  No Prefect here: the agent passes what it reads from
the Prefect API (runs late and running) as the ``runs`` callable.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pgpitr import cluster_repository, monitor, policy_store, scratch, timeparse
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import InvalidInput, PitrError
from pgpitr.operations import drill
from pgpitr.postgres.cluster import Cluster

log = logging.getLogger(__name__)

PORT_ENV = "PGPITR_METRICS_PORT"
ADDRESS_ENV = "PGPITR_METRICS_ADDRESS"
REFRESH_ENV = "PGPITR_METRICS_REFRESH"
#: 9100-9999 is Prometheus's range of exporter ports and is all allocated (9187 is
#: postgres_exporter's, which often runs beside PostgreSQL; 9854 pgbackrest_exporter's): a port
#: above it, postgres_exporter's plus 1000, clashes with no registered exporter
DEFAULT_PORT = 10187
DEFAULT_ADDRESS = "127.0.0.1"
DEFAULT_REFRESH = 60.0
_OFF = ("0", "off", "false", "no", "none", "disabled")

#: a drill's verdict as ``pgpitr_last_drill_result`` gives it
DRILL_VALUES = {"Passed": 1.0, "Failed": 0.0, "Unchecked": -1.0}


def port_setting(text: str | None) -> int | None:
    """The metrics port from ``PGPITR_METRICS_PORT`` (or ``--metrics-port``): None when off
    (0, "off"); DEFAULT_PORT when unset."""
    value = (text or "").strip().lower()
    if not value:
        return DEFAULT_PORT
    if value in _OFF:
        return None
    if value.isdigit() and 0 < int(value) < 65536:
        return int(value)
    raise InvalidInput(
        f"{PORT_ENV}={text!r} is not a port",
        hint=f"a port number (1-65535), or 0/off to serve no metrics; {DEFAULT_PORT} by default",
    )


def refresh_setting(text: str | None) -> float:
    """Seconds between two reads of a cluster: ``PGPITR_METRICS_REFRESH``, else 60."""
    try:
        value = float(text) if text else DEFAULT_REFRESH
    except ValueError:
        log.warning("%s=%r is not seconds; using %s", REFRESH_ENV, text, DEFAULT_REFRESH)
        return DEFAULT_REFRESH
    return value if value > 0 else DEFAULT_REFRESH


@dataclass(frozen=True)
class HostRuns:
    """This host's flow runs as the Prefect API counts them."""

    late: int
    running: int


@dataclass(frozen=True)
class Snapshot:
    """What the last refresh read of one cluster; times in unix seconds."""

    cluster: str
    host: str
    #: when it was read (the last successful refresh)
    refreshed: float
    #: the last attempt failed (the values are those of the refresh before it)
    failed: bool = False
    running: bool = False
    log_backup: bool = False
    rpo_max: float | None = None
    window_start: float | None = None
    window_end: float | None = None
    last_backup_time: float | None = None
    last_backup_bytes: int | None = None
    last_backup_stored_bytes: int | None = None
    archived: int | None = None
    archive_failed: int | None = None
    drill_result: str | None = None
    drill_time: float | None = None
    drill_rto: float | None = None
    predicted_rto: float | None = None

    def archive_lag(self, now: float) -> float | None:
        """Seconds from the window's end to NOW: describe's archive lag; None with log backup
        off (no RPO to keep) or no window yet."""
        if not self.log_backup or self.window_end is None:
            return None
        return max(0.0, now - self.window_end)


def _seconds(when: datetime | None) -> float | None:
    return when.timestamp() if when is not None else None


def read_cluster(cluster: Cluster, now: float | None = None) -> Snapshot:
    """One cluster's snapshot: its window, last backup, archiver and drills."""
    policy = policy_store.load_policy(cluster)
    repo = cluster_repository.repository(cluster)
    window = catalog_window.recoverable_window(repo, cluster.state.stanza, cluster.bindir)
    periods = window.periods
    completed = [b for b in window.backups if b.completed and b.stop_time is not None]
    last = max(completed, key=lambda b: (b.stop_time, b.name), default=None)
    running = cluster.is_running()
    archiver = _archiver(cluster) if running and policy.logfile_enabled else None
    drills = drill.describe_fields(cluster, window)
    last_drill = drills["last_drill"]
    return Snapshot(
        cluster=cluster.name,
        host=cluster.state.host,
        refreshed=time.time() if now is None else now,
        running=running,
        log_backup=policy.logfile_enabled,
        rpo_max=timeparse.parse_ttl(policy.rpo_max).total_seconds(),
        window_start=_seconds(periods[0][0]) if periods else None,
        window_end=_seconds(periods[-1][1]) if periods else None,
        last_backup_time=_seconds(last.stop_time) if last else None,
        last_backup_bytes=last.database_size if last else None,
        last_backup_stored_bytes=last.stored_size if last else None,
        archived=archiver.archived_count if archiver else None,
        archive_failed=archiver.failed_count if archiver else None,
        drill_result=last_drill["result"] if last_drill else None,
        drill_time=(datetime.fromisoformat(last_drill["time"]).timestamp() if last_drill else None),
        drill_rto=last_drill["rto_seconds"] if last_drill else None,
        predicted_rto=drills["predicted_rto_latest_seconds"],
    )


def _archiver(cluster: Cluster) -> monitor.ArchiverStatus | None:
    try:
        return monitor.archiver_status(cluster)
    except Exception as exc:  # starting up, refusing connections: the repository's part stands
        log.debug("pg_stat_archiver of %s not read: %s", cluster.name, _reason(exc))
        return None


def _clusters(host: str) -> list[Cluster]:
    """This host's clusters, without a drill's or a restore's scratch cluster."""
    return [
        c
        for c in Cluster.all()
        if c.state.host == host and not scratch.is_scratch(c.name) and not c.state.restore_source
    ]


def _reason(exc: Exception) -> str:
    # a PitrError's message names no secret; another exception's text might (a URL, a DSN)
    return exc.message if isinstance(exc, PitrError) else type(exc).__name__


class Exporter(Collector):
    """The snapshots of one host's clusters, turned into metrics at each scrape."""

    def __init__(self, host: str, runs: Callable[[], HostRuns | None] | None = None) -> None:
        self.host = host
        self._runs_source = runs
        self._runs: HostRuns | None = None
        self._snapshots: dict[str, Snapshot] = {}
        self._lock = threading.Lock()
        #: set after the first full pass
        self.refreshed = threading.Event()

    def refresh(self) -> None:
        """Read every cluster of the host once, one after the other; a cluster that fails keeps
        its last values, marked as failed."""
        clusters = _clusters(self.host)
        for cluster in clusters:
            try:
                snapshot = read_cluster(cluster)
            except Exception as exc:  # one cluster's failure must not hide the others
                log.warning("metrics of cluster %s not refreshed: %s", cluster.name, _reason(exc))
                old = self._snapshots.get(cluster.name)
                snapshot = replace(old, failed=True) if old else None
                if snapshot is None:
                    snapshot = Snapshot(cluster.name, self.host, 0.0, failed=True)
            with self._lock:
                self._snapshots[cluster.name] = snapshot
        names = {c.name for c in clusters}
        with self._lock:
            for gone in set(self._snapshots) - names:  # deleted, or moved to another host
                del self._snapshots[gone]
        if self._runs_source is not None:
            try:
                self._runs = self._runs_source()
            except Exception as exc:
                log.warning("runs of host %s not counted: %s", self.host, _reason(exc))
                self._runs = None
        self.refreshed.set()

    def snapshots(self) -> list[Snapshot]:
        with self._lock:
            return sorted(self._snapshots.values(), key=lambda s: s.cluster)

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self.snapshots(), self.host, self._runs, time.time())


Value = Callable[[Snapshot, float], float | int | None]

#: (type, name, help, value of a snapshot at a time): README.md's "Metrics" lists them all
CLUSTER_METRICS: tuple[tuple[str, str, str, Value], ...] = (
    ("gauge", "pgpitr_cluster_running", "1 when the server runs", lambda s, _: s.running),
    (
        "gauge",
        "pgpitr_log_backup_enabled",
        "1 when the policy archives WAL (log backup)",
        lambda s, _: s.log_backup,
    ),
    (
        "gauge",
        "pgpitr_window_start_timestamp_seconds",
        "start of the recoverable window (the oldest restorable time)",
        lambda s, _: s.window_start,
    ),
    (
        "gauge",
        "pgpitr_window_end_timestamp_seconds",
        "end of the recoverable window (the newest commit a restore reaches)",
        lambda s, _: s.window_end,
    ),
    (
        "gauge",
        "pgpitr_archive_lag_seconds",
        "now minus the window's end: what a loss now would lose (RPO)",
        lambda s, now: s.archive_lag(now),
    ),
    ("gauge", "pgpitr_rpo_max_seconds", "the policy's rpo.max", lambda s, _: s.rpo_max),
    (
        "gauge",
        "pgpitr_last_backup_timestamp_seconds",
        "stop time (consistency point) of the newest completed backup",
        lambda s, _: s.last_backup_time,
    ),
    (
        "gauge",
        "pgpitr_last_backup_size_bytes",
        "database size of the newest completed backup",
        lambda s, _: s.last_backup_bytes,
    ),
    (
        "gauge",
        "pgpitr_last_backup_stored_bytes",
        "bytes the newest completed backup takes in the repository",
        lambda s, _: s.last_backup_stored_bytes,
    ),
    (
        "counter",
        "pgpitr_wal_archived",
        "WAL files archived since the server's statistics were reset (pg_stat_archiver)",
        lambda s, _: s.archived,
    ),
    (
        "counter",
        "pgpitr_wal_archive_failed",
        "failed attempts to archive a WAL file (pg_stat_archiver)",
        lambda s, _: s.archive_failed,
    ),
    (
        "gauge",
        "pgpitr_last_drill_result",
        "the last drill: 1 passed, 0 failed, -1 unchecked (nothing to check against)",
        lambda s, _: DRILL_VALUES.get(s.drill_result) if s.drill_result else None,
    ),
    (
        "gauge",
        "pgpitr_last_drill_timestamp_seconds",
        "when the last drill started",
        lambda s, _: s.drill_time,
    ),
    (
        "gauge",
        "pgpitr_last_drill_rto_seconds",
        "the RTO the last drill measured",
        lambda s, _: s.drill_rto,
    ),
    (
        "gauge",
        "pgpitr_predicted_rto_seconds",
        "predicted duration of a restore to latest, from the passed drills",
        lambda s, _: s.predicted_rto,
    ),
    (
        "gauge",
        "pgpitr_metrics_refresh_timestamp_seconds",
        "when the cluster's values were last read",
        lambda s, _: s.refreshed or None,
    ),
    (
        "gauge",
        "pgpitr_metrics_refresh_error",
        "1 when the last attempt to read the cluster failed (see the agent's log)",
        lambda s, _: s.failed,
    ),
)


def metric_families(
    snapshots: Iterable[Snapshot], host: str, runs: HostRuns | None, now: float
) -> Iterator[Metric]:
    """Every metric of the snapshots at time NOW; an unknown value is absent, not 0."""
    snapshots = list(snapshots)
    for kind, name, doc, value_of in CLUSTER_METRICS:
        family_type = CounterMetricFamily if kind == "counter" else GaugeMetricFamily
        family = family_type(name, doc, labels=["cluster", "host"])
        for s in snapshots:
            value = value_of(s, now)
            if value is not None:
                family.add_metric([s.cluster, s.host], float(value))
        yield family
    if runs is not None:
        for name, count in (("late", runs.late), ("running", runs.running)):
            family = GaugeMetricFamily(
                f"pgpitr_runs_{name}", f"this host's flow runs that are {name}", labels=["host"]
            )
            family.add_metric([host], float(count))
            yield family


class MetricsServer:
    """The HTTP server of ``/metrics`` and the refresher thread behind it."""

    def __init__(self, exporter: Exporter, port: int, address: str, interval: float) -> None:
        self.exporter = exporter
        self.interval = interval
        registry = CollectorRegistry(auto_describe=False)
        registry.register(exporter)
        self._stop = threading.Event()
        self._refresher = threading.Thread(
            target=self._refresh_loop, name="pgpitr-metrics-refresh", daemon=True
        )
        self._httpd, self._thread = start_http_server(port, addr=address, registry=registry)
        self.address = address
        self.port: int = self._httpd.server_port
        self._refresher.start()

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}/metrics"

    def _refresh_loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.exporter.refresh()
            except Exception as exc:  # the next pass tries again; serving goes on
                log.warning("metrics not refreshed: %s", _reason(exc))
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._refresher.join(timeout=30)


def serve(
    host: str,
    port: int,
    address: str = DEFAULT_ADDRESS,
    interval: float = DEFAULT_REFRESH,
    runs: Callable[[], HostRuns | None] | None = None,
) -> MetricsServer:
    """Serve HOST's metrics on ADDRESS:PORT (0: a free port, see ``.port``), refreshed every
    INTERVAL seconds in a daemon thread; ``runs`` counts the host's late and running runs."""
    return MetricsServer(Exporter(host, runs), port, address, interval)


def settings() -> tuple[int | None, str, float]:
    """(port or None when off, address, refresh interval) from the environment."""
    return (
        port_setting(os.environ.get(PORT_ENV)),
        os.environ.get(ADDRESS_ENV) or DEFAULT_ADDRESS,
        refresh_setting(os.environ.get(REFRESH_ENV)),
    )
