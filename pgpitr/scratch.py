"""Markers of drills' scratch clusters: ``PGPITR_HOME/drills/NAME.json`` (pid, host, source).

A drill writes its marker before it restores into the scratch cluster and removes it last, so a
marker whose process no longer runs names what a killed drill left (pgpitr/operations/drill/
removes it),
and the heartbeat loop (pgpitr/heartbeat.py) leaves a marked cluster alone: a beat written into
a scratch cluster after its promotion would look like a row restored past the target.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from pgpitr import state as st
from pgpitr.osutil import process_alive


def directory() -> Path:
    return st.home() / "drills"


def path(name: str) -> Path:
    return directory() / f"{name}.json"


def write(name: str, **fields: Any) -> None:
    directory().mkdir(parents=True, exist_ok=True)
    marker = {"scratch": name, "pid": os.getpid(), "host": socket.gethostname(), **fields}
    st.write_json_atomic(path(name), marker, 0o600)


def is_scratch(name: str) -> bool:
    return path(name).exists()


def read(name: str) -> dict[str, Any]:
    try:
        return json.loads(path(name).read_text())
    except (OSError, ValueError):
        return {}


def orphaned() -> list[dict[str, Any]]:
    """Markers of this host whose drill process no longer runs (killed, the host rebooted)."""
    found = []
    for marker in sorted(directory().glob("*.json")) if directory().is_dir() else []:
        data = read(marker.stem)
        if data.get("host") != socket.gethostname():
            continue
        if not data.get("pid") or not process_alive(int(data["pid"])):
            found.append({**data, "scratch": marker.stem})
    return found


def remove(name: str) -> None:
    path(name).unlink(missing_ok=True)
