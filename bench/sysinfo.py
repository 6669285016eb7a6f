"""The machine and the versions a result was measured with."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.proc import PG_BINDIR, ROOT


def _output(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return ""
    return done.stdout.strip()


def _meminfo_kb(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    return 0


def _disk(path: Path) -> dict[str, Any]:
    usage = shutil.disk_usage(path)
    device = _output(["findmnt", "-n", "-o", "SOURCE", "--target", str(path)])
    fstype = _output(["findmnt", "-n", "-o", "FSTYPE", "--target", str(path)])
    info: dict[str, Any] = {
        "path": str(path),
        "device": device,
        "fstype": fstype,
        "size_bytes": usage.total,
        "free_bytes": usage.free,
    }
    name = Path(device).name.rstrip("0123456789") if device.startswith("/dev/") else ""
    rotational = Path(f"/sys/block/{name}/queue/rotational")
    if name and rotational.exists():
        info["rotational"] = rotational.read_text().strip() == "1"
    return info


def machine(workdir: Path) -> dict[str, Any]:
    return {
        "nproc": os.cpu_count(),
        "cpu": next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        ),
        "memory_bytes": _meminfo_kb("MemTotal") * 1024,
        "kernel": platform.release(),
        "loadavg_at_start": list(os.getloadavg()),
        "disk": _disk(workdir),
    }


def versions(pgbackrest: str | None, barman: str | None) -> dict[str, Any]:
    from importlib import metadata

    def pkg(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    commit = _output(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    dirty = bool(_output(["git", "-C", str(ROOT), "status", "--porcelain", "--", "pgpitr"]))
    return {
        "postgresql": _output([str(PG_BINDIR / "postgres"), "--version"]),
        "pgbackrest": pgbackrest,
        "barman_cloud": barman,
        "pgpitr": pkg("pgpitr"),
        "pgpitr_commit": commit + ("+uncommitted" if dirty else ""),
        "python": sys.version.split()[0],
        "zstandard": pkg("zstandard"),
        "boto3": pkg("boto3"),
        "moto": pkg("moto"),
    }
