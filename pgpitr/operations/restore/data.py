"""Materialising a restore's data: the new cluster's directory (``prepare``, undone by
``remove_restored``), a restore a kill interrupted (``interrupted``), and the backup's files,
an incremental's lineage combined with pg_combinebackup (``materialise``).
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pgpitr import cluster_repository
from pgpitr.catalog import backups as catalog_backups
from pgpitr.errors import (
    NotFound,
)
from pgpitr.manifest import BackupManifest, copy_data
from pgpitr.operations.restore.recovery import START_TIMEOUT
from pgpitr.osutil import copy_mode, process_alive
from pgpitr.postgres import binaries
from pgpitr.postgres.cluster import Cluster
from pgpitr.postgres.command import check, combinebackup_command, popen
from pgpitr.postgres.command import run as run_command
from pgpitr.postgres.osuser import make_dir
from pgpitr.repository import open_repository
from pgpitr.steps import undone_by
from pgpitr.wal import spool

if TYPE_CHECKING:
    from pgpitr.operations.restore.planning import Plan

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)


def remove_restored(name: str) -> None:
    """The undo of ``prepare``: remove the new cluster (a failed restore leaves nothing)."""
    try:
        cluster = Cluster.get(name)
    except NotFound:
        return
    _discard(cluster)
    log.warning("restore failed: removed the new cluster %s", name)


def _discard(cluster: Cluster) -> None:
    """Stop and remove an unfinished restore's cluster, and whatever its server archived.

    A server left running by a killed restore goes on alone: it replays, promotes and archives
    into the new name's stanza.  Nothing there is anyone else's (the plan refused a name whose
    stanza held an archive, and the name is taken until this removal), so it goes too; else the
    next restore to that name would be refused."""
    marker = cluster.state.restore_source
    if cluster.is_running():
        cluster.stop(mode="immediate")
    # the killed restore's fetch worker may still write into the spool: let it go first
    if not spool.wait_idle(cluster.state.spool):
        log.warning("a WAL worker of %s still runs; removing its cluster anyway", cluster.name)
    cluster.remove()
    if marker.get("repository"):
        repo = open_repository(
            marker["repository"],
            cluster.state.credentials_file,
            cluster.state.encryption_key_file or None,
        )
        removed = repo.delete_prefix(f"{cluster.name}/")
        if removed:
            log.warning(
                "removed %d object(s) the unfinished restore's server archived as %s",
                removed,
                cluster.name,
            )


@undone_by(remove_restored)
def prepare(p: Plan) -> str:
    """Register the new cluster and its empty directories (what rollback removes).

    From here until ``finish`` the cluster carries the restoring process's pid: if that process
    is killed, nothing can roll back, and the next restore to that name (or ``remove_interrupted``)
    recognises the leftovers and removes them."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    repo = p.source.open()
    if catalog_backups.leftover_stanza(repo, p.new_name):
        repo.delete_prefix(f"{p.new_name}/")
    cluster = Cluster.prepare(
        p.new_name, port=None, repository=p.source.repository, created=now, bindir=Path(p.bindir)
    )
    if p.backup.superuser:  # the source's roles come with its data
        cluster.state.superuser = p.backup.superuser
    cluster.state.encryption_key_file = cluster_repository.encryption_key_file(
        p.source.repository, cluster.user, p.source.key_file or ""
    )
    cluster.state.restore_source = {
        "repository": str(p.source.repository),
        "stanza": p.source.cluster,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    cluster.state.save()
    return cluster.name


def interrupted(cluster: Cluster) -> bool:
    """True when a restore into this cluster was started by a process that no longer runs."""
    marker = cluster.state.restore_source
    if not marker.get("pid") or marker.get("host") != socket.gethostname():
        return False
    return not process_alive(int(marker["pid"]))


def remove_interrupted(name: str) -> bool:
    """Remove what a killed restore left under ``name``; True when there was something."""
    try:
        cluster = Cluster.get(name)
    except (NotFound, FileNotFoundError):
        return False
    if not interrupted(cluster):
        return False
    _discard(cluster)
    return True


def materialise(p: Plan, new_cluster: str, progress: Progress | None = None) -> None:
    """Stream the backup out of the repository into the data directory, checking its SHA-256;
    an incremental's lineage goes into directories beside the data directory, the links in
    parallel (``_extract_links``), then ``pg_combinebackup`` writes the data directory from them.
    Every attempt starts from an empty data directory and no link directory, and leaves no link
    directory behind."""
    cluster = Cluster.get(new_cluster)
    datadir = cluster.state.datadir
    if any(datadir.iterdir()):  # a retried step starts again from an empty directory
        for child in datadir.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    links = p.links or (p.backup,)
    if len(links) == 1:
        _extract(p, links[0], datadir, cluster, progress)
        return
    _remove_link_dirs(cluster)
    try:
        dirs = [cluster.state.dir / f"{LINK_DIR_PREFIX}{i:03d}" for i in range(len(links))]
        for into in dirs:
            make_dir(into, cluster.user, 0o700)
        _extract_links(p, links, dirs, cluster, progress)
        # the link directories are removed right after: hard links cost nothing (18+)
        major = binaries.major_of(Path(p.bindir))
        mode = "link" if major >= 18 else copy_mode(cluster.state.dir)
        argv = combinebackup_command(Path(p.bindir), dirs, datadir, mode)
        started = time.monotonic()
        run_command(argv, user=cluster.user, timeout=START_TIMEOUT)
        log.info(
            "combined %d backups (%s) with pg_combinebackup --%s in %.1f s",
            len(links),
            " + ".join(link.name for link in links),
            mode,
            time.monotonic() - started,
        )
    finally:
        started = time.monotonic()
        _remove_link_dirs(cluster)
        log.info("removed the link directories in %.1f s", time.monotonic() - started)


#: The directories beside a new data directory that hold an incremental's lineage while it is
#: combined (``materialise``).
LINK_DIR_PREFIX = "combine-link-"
#: Links extracted at once: each is a reader, a zstd decompressor and a tar; more than this
#: only makes them wait on each other (and on S3, opens more connections).
EXTRACT_THREADS = 4


def _remove_link_dirs(cluster: Cluster) -> None:
    for leftover in cluster.state.dir.glob(f"{LINK_DIR_PREFIX}*"):
        shutil.rmtree(leftover, ignore_errors=True)


class _Stopped(Exception):
    """Raised inside a link's extraction once another link has failed."""


def _extract_links(
    p: Plan,
    links: tuple[BackupManifest, ...],
    dirs: list[Path],
    cluster: Cluster,
    progress: Progress | None,
) -> None:
    """Extract each link into its directory, a thread per link (at most ``EXTRACT_THREADS``).

    Progress is the sum over the links.  The first failure stops the others (their next chunk
    raises ``_Stopped``, their ``tar`` is killed) and is the one raised; the caller removes the
    link directories.  The zstd decompression and the SHA-256 release the GIL, so the threads
    overlap the CPU work as well as the reads and the writes."""
    from concurrent.futures import ThreadPoolExecutor

    done = [0] * len(links)
    total = sum(link.stored_size or 0 for link in links)
    lock = threading.Lock()
    stop = threading.Event()
    seconds: list[float] = [0.0] * len(links)

    def reporter(i: int) -> Progress:
        def report(moved: int, _of: int) -> None:
            if stop.is_set():
                raise _Stopped()
            with lock:
                done[i] = moved
                so_far = sum(done)
            if progress:
                progress(so_far, total)

        return report

    def one(i: int) -> None:
        started = time.monotonic()
        try:
            _extract(p, links[i], dirs[i], cluster, reporter(i))
        except BaseException:
            stop.set()
            raise
        seconds[i] = time.monotonic() - started

    started = time.monotonic()
    with ThreadPoolExecutor(
        max_workers=min(len(links), EXTRACT_THREADS), thread_name_prefix="extract"
    ) as pool:
        futures = [pool.submit(one, i) for i in range(len(links))]
        errors = [f.exception() for f in futures]  # waits for every thread
    first = next((e for e in errors if e is not None and not isinstance(e, _Stopped)), None)
    if first is None:
        first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    log.info(
        "extracted %d links in %.1f s, %d at a time (each: %s s)",
        len(links),
        time.monotonic() - started,
        min(len(links), EXTRACT_THREADS),
        ", ".join(f"{s:.1f}" for s in seconds),
    )


def _extract(
    p: Plan, backup: BackupManifest, into: Path, cluster: Cluster, progress: Progress | None
) -> None:
    argv = ["tar", "--extract", "--file", "-", "--directory", str(into)]
    tar = popen(argv, user=cluster.user, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert tar.stdin is not None
    try:
        copy_data(p.source.open(), p.source.cluster, backup, tar.stdin, progress)
        tar.stdin.close()
    except BaseException:
        tar.kill()
        tar.wait()
        raise
    stderr = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
    tar.wait()
    check(tar, argv, stderr)
