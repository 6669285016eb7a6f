"""Collected runs, their medians and ranges, the ratios to the peers, the table and the JSON file.

Every ratio is defined so that the DESIGN.md target reads the same way in the table and in the
README: ``pgpitr / peer`` for times (lower is better), ``pgpitr rate / peer rate`` for WAL
archiving and ``pg_basebackup time / pgpitr time`` for the share of pg_basebackup's speed.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.proc import ROOT, say

#: where every bench writes its JSON (committed: the README's numbers come from these)
RESULTS_DIR = ROOT / "bench" / "results"


def stamp() -> dict[str, str]:
    """When and where a result was measured: its JSON's first keys."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": f"{platform.node()}, {os.cpu_count()} cores, {platform.machine()}",
    }


def save(out: dict[str, Any], what: str, at: datetime | None = None) -> Path:
    """OUT as bench/results/STAMP-WHAT.json (STAMP: AT, or now, in UTC); the path."""
    RESULTS_DIR.mkdir(exist_ok=True)
    path = RESULTS_DIR / f"{(at or datetime.now(UTC)).astimezone(UTC):%Y%m%d-%H%M%S}-{what}.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    return path


#: (ratio name, numerator key, denominator key, how the ratio is formed, target, holds when):
#: the one place the bench's targets are written, DESIGN.md's "Performance targets" as they
#: stand (a ratio DESIGN.md sets no target for is "info": shown, not judged)
RATIOS: list[tuple[str, str, str, str, float, str]] = [
    ("backup_local_p1", "backup.local.pgpitr.w1", "backup.local.pgbackrest.p1", "time", 0.6, "<="),
    ("backup_local_p2", "backup.local.pgpitr.w2", "backup.local.pgbackrest.p2", "time", 0.6, "<="),
    ("backup_s3_vs_barman", "backup.s3.pgpitr.w2", "backup.s3.barman.j2", "time", 0.0, "info"),
    ("restore_time", "restore.pgpitr", "restore.pgbackrest", "time", 0.8, "<="),
    ("wal_vs_async", "wal.pgpitr", "wal.pgbackrest.async", "rate", 1.5, ">="),
    ("wal_vs_sync", "wal.pgpitr", "wal.pgbackrest.sync", "rate", 0.0, "info"),
    ("wal_limit_share", "limit.wal.compress_hash", "wal.pgpitr", "time", 0.9, ">="),
    (
        "engine_overhead_zstd1",
        "backup.local.pgpitr.zstd1",
        "limit.pg_basebackup.zstd1",
        "time",
        0.0,
        "info",
    ),
    (
        "uncompressed_share",
        "limit.pg_basebackup.none",
        "backup.local.pgpitr.none",
        "time",
        0.9,
        ">=",
    ),
]


@dataclass
class Results:
    meta: dict[str, Any]
    measurements: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, label: str, seconds: float, **extra: Any) -> None:
        entry = self.measurements.setdefault(key, {"label": label, "runs": []})
        entry["runs"].append({"seconds": round(seconds, 3), **extra})
        say(f"{key}: {seconds:.2f} s")

    def skip(self, key: str, reason: str) -> None:
        self.skipped[key] = reason

    # -- statistics --------------------------------------------------------------------------
    def summary(self) -> dict[str, dict[str, Any]]:
        out = {}
        for key, entry in self.measurements.items():
            secs = [r["seconds"] for r in entry["runs"]]
            item: dict[str, Any] = {
                "label": entry["label"],
                "n": len(secs),
                "median_seconds": round(statistics.median(secs), 3),
                "min_seconds": min(secs),
                "max_seconds": max(secs),
            }
            rates = [r["segments"] / r["seconds"] for r in entry["runs"] if r.get("segments")]
            if rates:
                item["median_segments_per_second"] = round(statistics.median(rates), 2)
            rss = [r["peak_rss_kb"] for r in entry["runs"] if r.get("peak_rss_kb")]
            if rss:
                item["max_peak_rss_mb"] = round(max(rss) / 1024, 1)
            self_rss = [r["self_peak_rss_kb"] for r in entry["runs"] if r.get("self_peak_rss_kb")]
            if self_rss:
                item["max_python_peak_rss_mb"] = round(max(self_rss) / 1024, 1)
            out[key] = item
        return out

    def ratios(self, summary: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, a, b, kind, target, sense in RATIOS:
            if a not in summary or b not in summary:
                continue
            if kind == "rate":
                value = summary[a]["median_segments_per_second"] / max(
                    summary[b]["median_segments_per_second"], 1e-9
                )
                formed = f"{a} segments/s ÷ {b} segments/s (medians)"
            else:
                value = summary[a]["median_seconds"] / max(summary[b]["median_seconds"], 1e-9)
                formed = f"{a} ÷ {b} (median seconds)"
            if sense == "info":
                out[name] = {"value": round(value, 3), "definition": formed, "target": None}
                continue
            holds = value <= target if sense == "<=" else value >= target
            out[name] = {
                "value": round(value, 3),
                "definition": formed,
                "target": f"{sense} {target}",
                "holds": holds,
            }
        rss = [
            r["self_peak_rss_kb"]
            for key, e in self.measurements.items()
            if key.startswith("backup.") and ".pgpitr." in key
            for r in e["runs"]
            if r.get("self_peak_rss_kb")
        ]
        if rss:
            peak = max(rss) / 1024
            out["backup_peak_rss_mb"] = {
                "value": round(peak, 1),
                "definition": "largest VmHWM of pgpitr's backup process (Python) over all runs",
                "target": "< 300",
                "holds": peak < 300,
            }
        return out

    # -- output ------------------------------------------------------------------------------
    def document(self) -> dict[str, Any]:
        summary = self.summary()
        return {
            **self.meta,
            "summary": summary,
            "ratios": self.ratios(summary),
            "skipped": self.skipped,
            "measurements": self.measurements,
        }

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.document(), indent=1, default=str) + "\n")

    def print_table(self) -> None:
        from rich.console import Console
        from rich.table import Table

        doc = self.document()
        console = Console(width=None if sys.stdout.isatty() else 120)
        table = Table(title=f"pgpitr bench, scale {self.meta.get('scale')}")
        for column in ("measurement", "n", "median s", "min–max s", "seg/s", "peak RSS MB"):
            table.add_column(column, justify="left" if column == "measurement" else "right")
        for key, item in doc["summary"].items():
            rss = item.get("max_python_peak_rss_mb") or item.get("max_peak_rss_mb")
            table.add_row(
                f"{key}\n[dim]{item['label']}[/dim]",
                str(item["n"]),
                f"{item['median_seconds']:.2f}",
                f"{item['min_seconds']:.2f}–{item['max_seconds']:.2f}",
                str(item.get("median_segments_per_second", "")),
                "" if rss is None else f"{rss:.0f}",
            )
        console.print(table)
        ratios = Table(title="ratios (targets from DESIGN.md)")
        for column in ("ratio", "value", "target", "holds"):
            ratios.add_column(column)
        for name, r in doc["ratios"].items():
            if r["target"] is None:
                mark = "[dim]info[/dim]"
            else:
                mark = "[green]yes[/green]" if r["holds"] else "[red]no[/red]"
            ratios.add_row(
                f"{name}\n[dim]{r['definition']}[/dim]", str(r["value"]), r["target"] or "", mark
            )
        console.print(ratios)
        for key, reason in doc["skipped"].items():
            console.print(f"[yellow]skipped[/yellow] {key}: {reason}")
