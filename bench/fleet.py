"""Fifty clusters on one host: do their scheduled runs start on time, and what does the agent cost?
(issue 24; DESIGN's targets: every scheduled run starts within 10 s of its time, p99; the agent
under 500 MiB resident at rest.)

``python -m bench fleet [COUNT] [sqlite|postgresql] [placed|same-minute]`` as pgpitr's service
account (or any account but root); JSON in bench/results/ (also when interrupted: what was seen
until then).

How. A home of its own, with pgpitr's local Prefect server on a free port: on its SQLite
database (the embedded default), or moved to PostgreSQL first (`cluster create prefect-db`, then
`server use-postgresql --cluster prefect-db`, as the README's fleet layout does). COUNT clusters
(PostgreSQL 15) are made by the engine's create, each with the default policy (WAL archiving
off, the host's housekeeping every 10 minutes, a drill daily at 03:MM UTC, MM the minute its
policy was given when it was made) plus a daily full backup: at that same minute (layout
"placed": the fifty spread over an hour, observed for that hour) or all at one minute (layout
"same-minute": the worst moment a host can have). Then `pgpitr agent start`, as an operator
starts it.

- At rest (after the agent serves, before the first backup is due): the resident memory of the
  agent's own processes (the agent and its serving process; the flow runs they start are not the
  agent) and their CPU over ``REST_SECONDS``.
- From the agent's start until every daily backup due, and every housekeeping run due at the
  next ten-minute mark after the last (each cluster's window refresh), has ended: every
  scheduled run of the host as the Prefect API records it; its lateness is its start time minus
  its expected start time. A run still Scheduled (Late) when the bench ends counts with the
  lateness it has then.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx

from bench.proc import ROOT, free_port, home_with_local_server, say
from bench.results import save, stamp

HOST = "bench-fleet"
COUNT = 50
REST_SECONDS = 60.0
#: the lateness and memory DESIGN asks for
TARGET_P99_SECONDS = 10.0
TARGET_RSS_MIB = 500.0
#: when the clusters' daily backups are due: each at the minute its policy was given when it was
#: made (the default: they spread over an hour), or all at one minute (the worst a host can have)
LAYOUTS = ("placed", "same-minute")


def _pgpitr(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "pgpitr", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pgpitr {' '.join(args)} failed: {done.stderr[-2000:]}")
    return done.stdout


def _api(method: str, path: str, body: Any = None) -> Any:
    from deployments.api import api_url, auth_headers

    url = api_url()
    assert url, "no Prefect API"
    answer = httpx.request(method, url + path, json=body, headers=auth_headers(), timeout=30)
    answer.raise_for_status()
    return answer.json()


def _host_runs(since: datetime) -> list[dict[str, Any]]:
    """Every run of the host's deployments expected since SINCE (all pages)."""
    deployments = _api("POST", "/deployments/filter", {"limit": 200})
    ours = [d["id"] for d in deployments if d["name"] == f"pgpitr-{HOST}"]
    found: list[dict[str, Any]] = []
    while True:
        page = _api(
            "POST",
            "/flow_runs/filter",
            {
                "flow_runs": {
                    "deployment_id": {"any_": ours},
                    "expected_start_time": {"after_": since.isoformat()},
                },
                "sort": "EXPECTED_START_TIME_ASC",
                "limit": 200,
                "offset": len(found),
            },
        )
        found += page
        if len(page) < 200:
            return found


def _lateness(run: dict[str, Any], now: datetime) -> float | None:
    """Seconds between a scheduled run's expected start and its start (or now, still waiting);
    None for a run that is not due yet or that no schedule made."""
    if not run.get("auto_scheduled"):
        return None
    expected = datetime.fromisoformat(run["expected_start_time"])
    if expected > now:
        return None
    started = run.get("start_time")
    until = datetime.fromisoformat(started) if started else now
    return max(0.0, (until - expected).total_seconds())


def _agent_processes(home: Path) -> list[int]:
    """The agent and its serving process (not the flow runs they start)."""
    agent = json.loads((home / "agent" / "agent.json").read_text())["pid"]
    found = [agent]
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        if parent == agent and b"deployments.serve" in cmdline:
            found.append(int(entry.name))
    return found


def _rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total / 1024


def _cpu_seconds(pids: list[int]) -> float:
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime: the process's own
    return total / ticks


def _stats(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))], 2)

    return {
        "count": len(ordered),
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": round(ordered[-1], 2),
        "mean": round(statistics.fmean(ordered), 2),
    }


def _observe(
    first: datetime, last: datetime, count: int, pids: list[int], out: dict[str, Any]
) -> None:
    """Until every daily backup due from FIRST to LAST, and every run due at the first
    housekeeping minute after LAST, has ended (20 minutes after LAST at most): the agent's peak
    memory, and how often the API did not answer in time."""
    housekeeping = (last + timedelta(minutes=10 - last.minute % 10)).replace(second=0)
    out["housekeeping_due"] = housekeeping.isoformat()
    out["agent_peak_rss_mib"] = 0.0
    out["api_timeouts_while_observing"] = 0
    ended_types = ("COMPLETED", "FAILED", "CRASHED")
    while datetime.now(UTC) < last + timedelta(minutes=20):
        out["agent_peak_rss_mib"] = round(max(out["agent_peak_rss_mib"], _rss_mib(pids)), 1)
        try:
            runs = _host_runs(first - timedelta(seconds=1))
        except httpx.TimeoutException:  # a busy server: counted, asked again
            out["api_timeouts_while_observing"] += 1
            continue
        backups = [r for r in runs if _daily_backup(r) and _expected(r) <= last]
        ended = [r for r in backups if r["state"]["type"] in ended_types]
        tidy = [r for r in runs if _expected(r) == housekeeping]
        if (
            datetime.now(UTC) > housekeeping + timedelta(seconds=30)
            and len(ended) == count
            and tidy
            and all(r["state"]["type"] in ended_types for r in tidy)
        ):
            return
        time.sleep(5)


def _daily_backup(run: dict[str, Any]) -> bool:
    parameters = run.get("parameters") or {}
    return bool(parameters.get("apply_retention_after")) and "backup_type" not in parameters


def _expected(run: dict[str, Any]) -> datetime:
    return datetime.fromisoformat(run["expected_start_time"])


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat()


def _daily_times(names: list[str], layout: str, first: datetime) -> dict[str, datetime]:
    """When each cluster's daily backup is due: at its own minute (the one its policy was
    given when it was made) within the hour from FIRST, or all at FIRST."""
    from pgpitr import policy_store
    from pgpitr.postgres.cluster import Cluster

    due = {}
    for name in names:
        cluster = Cluster.get(name)
        policy = policy_store.load_policy(cluster)
        at = first
        if layout == "placed":
            minute = int(policy.cron.split()[0])
            at = first + timedelta(minutes=(minute - first.minute) % 60)
        cron = f"{at.minute} {at.hour} * * *"
        policy_store.save_policy(cluster, replace(policy, cron=cron))
        due[name] = at
    return due


def run(count: int = COUNT, database: str = "sqlite", layout: str = "placed") -> dict[str, Any]:
    from pgpitr.operations import create

    home, env = home_with_local_server(
        "pgpitr-bench-fleet-", PGPITR_HOST=HOST, PGPITR_METRICS_PORT=str(free_port())
    )
    out: dict[str, Any] = {
        **stamp(),
        "postgresql": 15,
        "clusters": count,
        "prefect_database": database,
        "layout": layout,
        "method": __doc__.split("How.")[1].strip(),
    }
    try:
        started = time.monotonic()
        _pgpitr(env, "server", "start")
        if database == "postgresql":
            _pgpitr(env, "cluster", "create", "prefect-db")
            _pgpitr(env, "server", "use-postgresql", "--cluster", "prefect-db")
            # the server's database is one more cluster of the host (weekly backup, housekept)
        names = [f"f{n:03d}" for n in range(count)]
        for name in names:
            create.create(name)
        out["create_seconds"] = round(time.monotonic() - started, 1)
        say(f"{count} clusters made in {out['create_seconds']} s")
        # far enough ahead for the agent to serve and rest first; the same-minute layout on a
        # minute that is no window refresh's (every 10 minutes), so that its lateness is its own
        first = (datetime.now(UTC) + timedelta(minutes=5)).replace(second=0, microsecond=0)
        if layout == "same-minute" and first.minute % 10 == 0:
            first += timedelta(minutes=1)
        due = _daily_times(names, layout, first)
        last = max(due.values())
        out["backups_due"] = {
            "layout": layout,
            "first": _iso(first),
            "last": _iso(last),
            "most_at_one_minute": max(Counter(due.values()).values()),
        }
        agent_started = datetime.now(UTC)
        _pgpitr(env, "agent", "start")
        while True:
            try:
                if _api("GET", f"/deployments/name/backup/pgpitr-{HOST}")["status"] == "READY":
                    break
            except Exception:  # not deployed yet
                pass
            time.sleep(1)
        out["agent_serving_seconds"] = round((datetime.now(UTC) - agent_started).total_seconds())
        say(f"the agent serves after {out['agent_serving_seconds']} s; backups due {first}-{last}")
        pids = _agent_processes(home)
        cpu_before, rest_started = _cpu_seconds(pids), time.monotonic()
        time.sleep(min(REST_SECONDS, max(5.0, (first - datetime.now(UTC)).total_seconds() - 20)))
        rested = time.monotonic() - rest_started
        cpu = _cpu_seconds(pids) - cpu_before
        out["at_rest"] = {
            "agent_processes": len(pids),
            "rss_mib": round(_rss_mib(pids), 1),
            "seconds": round(rested, 1),
            "cpu_seconds": round(cpu, 2),
            "cpu_percent_of_a_core": round(100 * cpu / rested, 2),
            "cpu_seconds_per_cluster_per_hour": round(cpu / rested * 3600 / count, 2),
        }
        say(f"at rest: {out['at_rest']}")
        try:
            _observe(first, last, count, pids, out)
            out["interrupted"] = False
        except KeyboardInterrupt:  # what was seen until then is written
            out["interrupted"] = True
        finished = datetime.now(UTC)
        out["observed_until_seconds_after_first_due"] = round((finished - first).total_seconds())
        runs = _host_runs(agent_started - timedelta(seconds=1))
        by_flow: dict[str, list[float]] = {}
        states: dict[str, int] = {}
        for r in runs:
            late = _lateness(r, finished)
            if late is None:
                continue
            flow = r["name"].split(f"-{HOST}")[0]
            by_flow.setdefault(flow, []).append(late)
            states[r["state"]["name"]] = states.get(r["state"]["name"], 0) + 1
        every = [late for values in by_flow.values() for late in values]
        out["lateness_seconds"] = {flow: _stats(v) for flow, v in sorted(by_flow.items())}
        out["lateness_seconds"]["all"] = _stats(every)
        out["run_states"] = states
        p99 = out["lateness_seconds"]["all"].get("p99", 0.0)
        out["targets"] = {
            "p99_start_within_10s": p99 <= TARGET_P99_SECONDS,
            "agent_rss_under_500mib_at_rest": out["at_rest"]["rss_mib"] < TARGET_RSS_MIB,
        }
        say(json.dumps(out["lateness_seconds"]["all"]))
    finally:
        subprocess.run(
            [sys.executable, "-m", "pgpitr", "agent", "stop"], env=env, capture_output=True
        )
        from pgpitr.postgres.cluster import Cluster as C

        for c in C.all():
            if c.is_running():
                c.stop()
        subprocess.run(
            [sys.executable, "-m", "pgpitr", "server", "stop"], env=env, capture_output=True
        )
        shutil.rmtree(home, ignore_errors=True)
    path = save(out, f"fleet-{count}")
    say(f"wrote {path}")
    return out


def cli(argv: list[str]) -> int:
    count = int(argv[0]) if argv else COUNT
    database = argv[1] if len(argv) > 1 else "sqlite"
    layout = argv[2] if len(argv) > 2 else "placed"
    if database not in ("sqlite", "postgresql") or layout not in LAYOUTS:
        raise SystemExit(f"python -m bench fleet [COUNT] [sqlite|postgresql] [{'|'.join(LAYOUTS)}]")
    result = run(count, database, layout)
    return 0 if all(result["targets"].values()) else 1
