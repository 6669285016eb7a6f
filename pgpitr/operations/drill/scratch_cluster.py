"""The scratch cluster a drill restores into: marked as this process's before it exists, removed
always afterwards with whatever its server archived, and the ones of killed drills removed by the
next (pgpitr/scratch.py keeps the markers)."""

from __future__ import annotations

import logging
import re
import shutil

from pgpitr import cluster_repository, scratch
from pgpitr import state as st
from pgpitr.errors import NotFound
from pgpitr.operations.drill.plan import DrillPlan
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository import Repository
from pgpitr.wal import spool

log = logging.getLogger(__name__)

_SCRATCH = re.compile(r"-drill-[0-9a-f]{6}$")


def mark_scratch(plan: DrillPlan) -> None:
    """Name the scratch cluster as this process's before it exists (see pgpitr/scratch.py)."""
    scratch.write(plan.scratch, cluster=plan.cluster, drill=plan.id)


def remove_leftovers() -> list[str]:
    """Remove the scratch clusters of drills whose process was killed; their names."""
    removed = []
    for marker in scratch.orphaned():
        name = marker["scratch"]
        _remove(name, marker.get("cluster"))
        scratch.remove(name)
        log.warning("removed %s, the scratch cluster of a killed drill", name)
        removed.append(name)
    return removed


def remove_scratch(plan: DrillPlan) -> bool:
    """Stop and remove the scratch cluster and whatever its server archived; True when gone."""
    _remove(plan.scratch, plan.cluster)
    gone = not (st.clusters_dir() / plan.scratch).exists()
    if gone:
        scratch.remove(plan.scratch)
    return gone


def _remove(name: str, source: str | None) -> None:
    if not _SCRATCH.search(name):  # a marker names only scratch clusters; never anything else
        return
    # imported here: the drill package is imported by describe, which restores nothing
    from pgpitr.operations.restore import data as restore_data

    restore_data.remove_interrupted(name)  # killed mid-restore: the restore's own cleanup
    try:
        c = Cluster.get(name)
    except (NotFound, FileNotFoundError):
        c = None
    if c is not None:
        if c.is_running():
            c.stop(mode="immediate")
        spool.wait_idle(c.state.spool)
        c.remove()
    shutil.rmtree(st.clusters_dir() / name, ignore_errors=True)  # prepared, never saved
    if source:
        # promoted, the scratch server archived as NAME: its stanza is the drill's alone
        repo = _source_repository(source)
        if repo is not None:
            repo.delete_prefix(f"{name}/")


def _source_repository(source: str) -> Repository | None:
    try:
        return cluster_repository.repository(Cluster.get(source))
    except (NotFound, FileNotFoundError):
        return None
