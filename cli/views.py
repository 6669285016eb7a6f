"""How ``pgpitr cluster``'s reading commands show what they read: kbcli-like tables, or JSON.

Each view takes what the engine returned (typed where the engine types it: ``describe``'s
``Description``) and prints it; the commands in cli/cluster.py only parse options, read or run a
flow, and hand the result here.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cli import console, progress, runner
from pgpitr import timeparse
from pgpitr.operations.describe import (
    Description,
    Lineage,
    Recovery,
    RestorePointRow,
    Streaming,
)
from pgpitr.patroni.members import Membership


def check_output(output: str) -> None:
    from pgpitr.errors import InvalidInput

    if output not in ("table", "json"):
        raise InvalidInput(f"unknown output format {output!r}: use table or json")


def _when(value: str | datetime | None) -> str:
    if not value:
        return ""
    return timeparse.format_kbcli(
        value if isinstance(value, datetime) else datetime.fromisoformat(value)
    )


def _seconds(value: float | None) -> str:
    return f"{value:.1f}s" if value is not None else ""


def protection_warnings(rows: Sequence[dict[str, Any]]) -> None:
    """Each unprotected cluster's warning, under the table that lists it."""
    for row in rows:
        if row.get("protection_warning"):
            console.warning(row["protection_warning"])


# -- list, list-backup, list-backup-policy, list-drill -------------------------------------------


def clusters(rows: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        console.as_json(rows)
        return
    columns = ["NAME", "STATUS", "TYPE", "VERSION", "PORT", "BACKUP-REPO", "CREATED-TIME"]
    console.table(columns, [list(r.values())[: len(columns)] for r in rows])
    protection_warnings(rows)


def backups(rows: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        console.as_json(rows)
        return
    console.table(
        ["NAME", "CLUSTER", "TYPE", "PARENT", "STATUS", "TOTAL-SIZE", "DURATION"]
        + ["CREATE-TIME", "COMPLETION-TIME"],
        [
            [
                r["name"],
                r["cluster"],
                r["type"],
                r["parent"] or "",
                f"{r['status']} (unusable: {r['unusable']})" if r["unusable"] else r["status"],
                progress.size(r["total_size"]),
                timeparse.format_duration(r["duration_seconds"]) if r["duration_seconds"] else "",
                _when(r["create_time"]),
                _when(r["completion_time"]),
            ]
            for r in rows
        ],
    )


def policies(rows: list[dict[str, Any]], output: str) -> None:
    if output == "json":
        console.as_json(rows)
        return
    console.table(
        ["NAME", "DEFAULT", "CLUSTER", "CREATE-TIME", "STATUS", "SCHEDULE", "AGENT", "NEXT-RUN"]
        + ["LAST-RUN"],
        [
            [
                r["name"],
                "true",
                r["cluster"],
                _when(r["create_time"]),
                r["status"],
                f"{r['backup_schedule']} {r['schedule_timezone']}"
                + ("" if r["auto_backup"] else " (paused)"),
                r["agent"],
                r["next_run"] or "",
                f"{r['last_run']} {r['last_run_state']}" if r["last_run"] else "",
            ]
            for r in rows
        ],
    )
    protection_warnings(rows)


def drills(found: Sequence[Any], output: str) -> None:
    """A cluster's drills (pgpitr/operations/drill/ ``DrillResult``), newest first."""
    if output == "json":
        console.as_json([d.as_dict() for d in found])
        return
    console.table(
        ["NAME", "TARGET", "RESULT", "RTO", "PREDICTED", "ERROR", "BACKUP", "DETAIL"],
        [
            [
                d.id,
                _when(d.target),
                d.result,
                _seconds(d.rto_seconds),
                _seconds(d.predicted_rto_seconds),
                f"{d.prediction_error_percent:+.0f}%"
                if d.prediction_error_percent is not None
                else "",
                d.backup or "",
                d.error or d.heartbeat.get("detail", ""),
            ]
            for d in found
        ],
    )


# -- describe ------------------------------------------------------------------------------------


def described(d: Description, schedule: dict[str, Any], output: str) -> None:
    """``describe``; ``schedule`` (cli/runner.py ``schedule_fields``) is the schedule as the
    deployment has it, which the JSON's and the table's schedule fields show over the policy's."""
    if output == "json":
        console.as_json({**d.as_json(), **schedule})
        return
    console.out.print(f"Name: {d.name}\t Platform: {d.platform}\t Status: {d.status}")
    warning = d.protection.warning()
    if warning:
        console.warning(warning)
    console.out.print("\nEndpoints:")
    console.table(["HOST", "PORT", "SOCKET"], [["127.0.0.1", d.port, d.socket_dir]])
    if d.membership:
        members_block(d.membership)
    console.out.print("\nStorage:")
    console.table(
        ["DATA-DIR", "VERSION", "SYSTEM-IDENTIFIER", "BACKUP-REPO"],
        [[d.datadir, d.pg_version, d.system_identifier, d.repository]],
    )
    console.out.print("\nData Protection:")
    console.table(
        ["AUTO-BACKUP", "BACKUP-SCHEDULE", "TYPE", "BACKUP-TTL", "LAST-SCHEDULE"]
        + ["RECOVERABLE-TIME"],
        [
            [
                "Enabled" if schedule["auto_backup"] else "Disabled",
                schedule["backup_schedule"],
                d.type,
                d.backup_ttl,
                _when(d.last_schedule),
                ", ".join(timeparse.format_window(a, b) for a, b in d.recoverable_time),
            ]
        ],
    )
    # how fresh the guarantee is that no segment is missing inside a chain (the window refresh
    # lists every log directory; describe itself only each chain's ends)
    console.out.print("WAL checked: " + (_when(d.wal_checked_at) or "never"))
    for line in runner.health_lines(schedule):
        console.out.print(line)
    lineages_block(d.lineages)
    restore_points_block(d.restore_points)
    recovery_block(d.recovery)
    streaming_block(d.streaming)


def members_block(membership: Membership) -> None:
    """An HA cluster's members, as Patroni describes them now (its primary is the one above)."""
    console.out.print(f"\nMembers (Patroni {membership.patroni}):")
    if membership.problem:
        console.warning(f"members unknown: {membership.problem}; the primary last seen is shown")
    if membership.primary_host:
        console.info(
            f"the primary runs on host {membership.primary_host}: its agent archives it, and "
            "backups and what else needs the primary are handed to it"
        )
    console.table(
        ["MEMBER", "ROLE", "STATE", "HOST", "PGPITR-HOST", "PORT", "TIMELINE", "LAG"],
        [
            [
                m.name,
                m.role,
                m.state,
                m.host,
                _pgpitr_host(membership, m),
                m.port,
                "" if m.timeline is None else m.timeline,
                "" if m.is_primary else progress.size(m.lag or 0),
            ]
            for m in membership.members
        ],
    )


def _pgpitr_host(membership: Membership, member: Any) -> str:
    """Which pgpitr host serves MEMBER: "this", another's name, or "" when not kept here."""
    host = membership.pgpitr_host(member)
    return "this" if host == "" else host or ""


def stanza(info: dict[str, Any], output: str) -> None:
    """describe from the repository alone (pgpitr/operations/info.py ``describe_stanza``): no
    server, policy or schedule to show."""
    if output == "json":
        console.as_json(info)
        return
    console.out.print(f"Name: {info['name']}\t Cluster: {info['cluster']}")
    console.out.print("\nStorage:")
    console.table(
        ["BACKUP-REPO", "VERSION", "SYSTEM-IDENTIFIER", "HOST", "STORED"],
        [
            [
                info["repository"],
                info["pg_version"],
                info["system_identifier"],
                info["host"],
                progress.size(info["stored_bytes"]),
            ]
        ],
    )
    console.out.print("\nData Protection:")
    recoverable = ", ".join(
        timeparse.format_window(datetime.fromisoformat(a), datetime.fromisoformat(b))
        for a, b in info["recoverable_time"]
    )
    console.table(
        ["BACKUPS", "WAL", "RECOVERABLE-TIME"],
        [
            [
                info["backups"],
                "; ".join(
                    f"timeline {w['timeline']}: {w['first']} ~ {w['last']}" for w in info["wal"]
                ),
                f"unknown ({info['window_error']})" if info["window_error"] else recoverable,
            ]
        ],
    )
    lineages_block(
        [
            Lineage(r["end"], tuple(r["links"]), r["restorable"], r["reason"])
            for r in info["lineages"]
        ]
    )
    restore_points_block([RestorePointRow.of(p) for p in info["restore_points"]])
    if "agent" in info:
        console.out.print()
        for line in runner.health_lines(info):
            console.out.print(line)


def lineages_block(lineages: Sequence[Lineage]) -> None:
    """Each backup lineage (a full backup and the incrementals taken on it), oldest link first."""
    if not lineages:
        return
    console.out.print("\nBackup Lineages:")
    console.table(
        ["END", "LINKS", "RESTORABLE"],
        [
            [
                lineage.end,
                " <- ".join(lineage.links),
                "yes" if lineage.restorable else f"no: {lineage.reason}",
            ]
            for lineage in lineages
        ],
    )


def restore_points_block(points: Sequence[RestorePointRow]) -> None:
    if not points:
        return
    console.out.print("\nRestore Points:")
    console.table(
        ["NAME", "TIME", "LSN", "TIMELINE", "RESTORABLE"],
        [
            [
                p.name,
                _when(p.time),
                p.lsn,
                p.timeline,
                "yes" if p.restorable else "no (WAL not archived or no backup before it)",
            ]
            for p in points
        ],
    )


def recovery_block(recovery: Recovery) -> None:
    """The last drill, the predicted RTO and the RPO (pgpitr/operations/drill/)."""
    last = recovery.last_drill
    predicted = recovery.predicted_rto_latest_seconds
    lag = recovery.archive_lag_seconds
    console.out.print("\nDrills and RPO:")
    console.table(
        ["LAST-DRILL", "TARGET", "RESULT", "RTO", "PREDICTED-RTO(latest)", "ARCHIVE-LAG(RPO)"],
        [
            [
                _when(last.time) if last else "no drill yet",
                _when(last.target) if last else "",
                last.result if last else "",
                _seconds(last.rto_seconds) if last else "",
                _seconds(predicted) if predicted is not None else recovery.predicted_rto_note,
                (
                    f"{_seconds(lag)} (max {_seconds(recovery.rpo_max_seconds)})"
                    + (" EXCEEDED" if recovery.rpo_exceeded else "")
                )
                if lag is not None
                else "log backup off",
            ]
        ],
    )
    if last and last.result == "Failed":
        console.out.print(f"LAST DRILL FAILED: {last.error}")
    elif last and last.result == "Unchecked":
        console.out.print(
            "LAST DRILL UNCHECKED: no heartbeat at or before its target to check the restore "
            "against; it proves the archive restores, not that it stops at the right time"
        )


def streaming_block(streaming: Streaming) -> None:
    """The receiver of stream mode (pgpitr/wal/stream/), and its warnings, loud."""
    receiver = streaming.receiver
    if not receiver:
        return
    retained = receiver.retained_bytes
    console.out.print("\nWAL Streaming:")
    console.table(
        ["METHOD", "SYNCHRONOUS", "RECEIVER", "SLOT", "RETAINED", "MAX-RETAINED"],
        [
            [
                "stream (+ archive_command)",
                "yes" if receiver.synchronous else "no",
                f"running (pid {receiver.receiver_pid})" if receiver.receiver_running else "down",
                receiver.slot + ("" if receiver.slot_active else " (inactive)"),
                f"{retained / 2**20:.1f}MB" if retained is not None else "",
                receiver.max_retained,
            ]
        ],
    )
    for warning in streaming.warnings:
        console.warning(warning)
