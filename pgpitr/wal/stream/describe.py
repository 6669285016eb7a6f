"""describe's streaming block: the method, the receiver (from its status file), the slot, and
the warnings."""

from __future__ import annotations

from typing import Any

from pgpitr import policy as pol
from pgpitr.errors import PitrError
from pgpitr.osutil import process_alive
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.slots import SLOT, SlotState, slot_state
from pgpitr.wal.stream.files import conflict_dir, read_status, streaming


def describe_fields(cluster: Cluster, policy: pol.BackupPolicy) -> dict[str, Any]:
    """describe's streaming block: the method, the receiver, the slot, and the warnings."""
    if not streaming(policy):
        return {"log_method": policy.logfile_method, "stream": None, "stream_warnings": []}
    status = read_status(cluster) or {}
    pid = status.get("pid")
    receiver_running = bool(pid) and process_alive(int(pid))
    slot = SlotState(False)
    if cluster.is_running():
        try:
            slot = slot_state(cluster)
        except PitrError:
            pass
    limit = pol.parse_size(policy.stream_max_retained)
    warnings = []
    policy_name = policy.name
    if policy.logfile_synchronous:
        warnings.append(
            f"SYNCHRONOUS: every commit on {cluster.name} waits until pgpitr's receiver has "
            "flushed its WAL; while the receiver (the agent) is down, commits hang. Way out: "
            f"pgpitr cluster edit-backup-policy {policy_name} --set "
            "schedule.logfile.synchronous=false"
        )
    if not slot.active:
        warnings.append(
            "no receiver streams WAL (is the agent running? `pgpitr agent start`): WAL reaches "
            "the repository through archive_command only, and the slot holds WAL back"
            + (f"; last error: {status['last_error']}" if status.get("last_error") else "")
        )
    conflicts = sorted(p.name for p in conflict_dir(cluster).glob("*"))
    if conflicts:
        warnings.append(
            f"{len(conflicts)} streamed WAL file(s) differ from the archived copies of their "
            f"names ({', '.join(conflicts[:3])}): the stored copies stay, the streamed ones "
            f"are kept in {conflict_dir(cluster)} to compare (another server archiving into "
            "this stanza?)"
        )
    if slot.retained is not None and slot.retained > limit:
        warnings.append(
            f"the slot {SLOT} holds back {slot.retained / 2**20:.0f} MB of WAL, over "
            f"stream.maxRetained {policy.stream_max_retained}: the source's disk fills while "
            "no receiver catches up"
        )
    return {
        "log_method": "stream",
        "stream": {
            "synchronous": policy.logfile_synchronous,
            "receiver_running": receiver_running,
            "receiver_pid": pid if receiver_running else None,
            "restarts": status.get("restarts"),
            "last_error": status.get("last_error"),
            "slot": SLOT,
            "slot_exists": slot.exists,
            "slot_active": slot.active,
            "retained_bytes": slot.retained,
            "max_retained": policy.stream_max_retained,
            "sync_state": slot.sync_state,
        },
        "stream_warnings": warnings,
    }
