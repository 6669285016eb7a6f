"""Restore a cluster's backup and WAL to a point in time, into a new cluster.

``plan`` checks everything it can before anything is created: the source has backups, the new
name is free, the target lies inside the recoverable window, there is room for the data.  The
steps after it (``materialise``, ``configure_recovery``, ``start_recovery``, ``wait_promoted``,
``finish``) each do one thing so that Prefect can run and retry them one by one; ``restore``
chains them and removes the new cluster if any step fails.  The source cluster is only read from
the repository, never touched.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pgpitr import backup as bk
from pgpitr import catalog, clusters, timeparse, wal
from pgpitr import policy as pol
from pgpitr import state as st
from pgpitr.errors import (
    AlreadyExists,
    ClusterStateError,
    NotFound,
    PitrError,
    RecoveryTargetError,
)
from pgpitr.postgres import conf
from pgpitr.postgres.cluster import Cluster, bindir, validate_name
from pgpitr.postgres.command import check, popen
from pgpitr.repository import Repository, open_repository

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Source:
    """Where a restore reads from: a repository and a stanza (the source cluster's name)."""

    cluster: str
    repository: str
    credentials_file: str | None = None

    def open(self) -> Repository:
        creds = Path(self.credentials_file) if self.credentials_file else None
        return open_repository(self.repository, creds)


def resolve_source(name: str, repository: str | None = None) -> Source:
    """The source of a restore: a cluster pgpitr knows, or one deleted whose backups remain."""
    validate_name(name)
    try:
        cluster = Cluster.get(name)
        return Source(
            name, repository or cluster.state.repository, str(cluster.state.credentials_file)
        )
    except NotFound:
        pass
    url = repository or st.default_repository_url()
    source = Source(name, url)
    if not source.open().exists(wal.archive_info_key(name)) and not catalog.list_backups(
        source.open(), name
    ):
        raise NotFound(
            f"cluster {name!r} is unknown and the repository {source.open().url} has no backups "
            "of it",
            hint="see `pgpitr cluster list`, or pass --backup-repo with the repository URL",
        )
    return source


@dataclass(frozen=True)
class Plan:
    source: Source
    new_name: str
    backup: dict  # the chosen backup's manifest
    target: datetime | None  # None: the end of the archived WAL
    window: list[tuple[datetime, datetime]]


def plan(
    source: Source, new_name: str, target: datetime | None, backup_name: str | None = None
) -> Plan:
    validate_name(new_name)
    remove_interrupted(new_name)
    if (st.clusters_dir() / new_name).exists():
        raise AlreadyExists(f"cluster {new_name!r} already exists", hint="choose another name")
    repo = source.open()
    if repo.exists(wal.archive_info_key(new_name)) and not catalog.leftover_stanza(repo, new_name):
        raise AlreadyExists(
            f"the repository {repo.url} already holds the archive of a cluster named "
            f"{new_name!r}; the restored cluster would archive into it",
            hint="choose another name for the new cluster",
        )
    backups = [b for b in catalog.list_backups(repo, source.cluster) if b.completed]
    if backup_name:
        chosen = catalog.get_backup(repo, source.cluster, backup_name)
        if not chosen.completed:
            raise RecoveryTargetError(f"backup {backup_name!r} is {chosen.status}, not Completed")
        backups = [chosen]
    if not backups:
        raise NotFound(
            f"cluster {source.cluster!r} has no completed backup",
            hint=f"take one with `pgpitr cluster backup {source.cluster}`",
        )
    ranges = catalog.backup_ranges(repo, source.cluster, bindir(), backups)
    window = catalog.merge(ranges)
    if target is None:
        chosen_manifest = backups[-1].manifest
    else:
        fitting = [r for r in ranges if r.start <= target <= r.end]
        if not fitting:
            raise RecoveryTargetError(
                f"{timeparse.format_kbcli(target)} is outside the recoverable window of "
                f"{source.cluster!r}: {_describe(window)}",
                hint=f"pick a time inside the window (`pgpitr cluster describe {source.cluster}`)",
            )
        best = max(fitting, key=lambda r: r.start)
        chosen_manifest = next(b.manifest for b in backups if b.name == best.backup)
    _check_space(chosen_manifest)
    return Plan(source, new_name, chosen_manifest, target, window)


def _describe(window: list[tuple[datetime, datetime]]) -> str:
    if not window:
        return "there is none yet (no completed backup followed by archived WAL with a commit)"
    return ", ".join(timeparse.format_window(a, b) for a, b in window)


def _check_space(manifest: dict) -> None:
    need = int(manifest.get("database_size") or 0)
    home = st.home()
    home.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(home).free
    if need and free < need * 1.1:
        raise ClusterStateError(
            f"{home} has {free // 2**20} MiB free; the restored data needs about "
            f"{need // 2**20} MiB",
            hint="free space or set PGPITR_HOME to a larger file system",
        )


# -- the steps -------------------------------------------------------------------------------


def prepare(p: Plan) -> Cluster:
    """Register the new cluster and its empty directories (what rollback removes).

    From here until ``finish`` the cluster carries the restoring process's pid: if that process
    is killed, nothing can roll back, and the next restore to that name (or ``remove_interrupted``)
    recognises the leftovers and removes them."""
    now = datetime.now(UTC).isoformat(timespec="seconds")
    repo = p.source.open()
    if catalog.leftover_stanza(repo, p.new_name):
        repo.delete_prefix(f"{p.new_name}/")
    cluster = Cluster.prepare(p.new_name, port=None, repository=p.source.repository, created=now)
    cluster.state.restore_source = {
        "repository": p.source.repository,
        "stanza": p.source.cluster,
        "pid": os.getpid(),
        "host": socket.gethostname(),
    }
    cluster.state.save()
    return cluster


def interrupted(cluster: Cluster) -> bool:
    """True when a restore into this cluster was started by a process that no longer runs."""
    marker = cluster.state.restore_source
    if not marker.get("pid") or marker.get("host") != socket.gethostname():
        return False
    try:
        os.kill(int(marker["pid"]), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_interrupted(name: str) -> bool:
    """Remove what a killed restore left under ``name``; True when there was something."""
    try:
        cluster = Cluster.get(name)
    except (NotFound, FileNotFoundError):
        return False
    if not interrupted(cluster):
        return False
    cluster.remove()
    return True


def materialise(p: Plan, cluster: Cluster, progress: Progress | None = None) -> None:
    """Stream the backup out of the repository into the data directory, checking its SHA-256."""
    datadir = cluster.state.datadir
    if any(datadir.iterdir()):  # a retried step starts again from an empty directory
        for child in datadir.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    argv = ["tar", "--extract", "--file", "-", "--directory", str(datadir)]
    tar = popen(argv, user=cluster.user, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    assert tar.stdin is not None
    try:
        bk.copy_data(p.source.open(), p.source.cluster, p.backup, tar.stdin, progress)
        tar.stdin.close()
    except BaseException:
        tar.kill()
        tar.wait()
        raise
    stderr = tar.stderr.read().decode(errors="replace") if tar.stderr else ""
    tar.wait()
    check(tar, argv, stderr)


def configure_recovery(p: Plan, cluster: Cluster) -> None:
    """Rewrite the source's configuration for the new cluster and ask for recovery to the target."""
    owner = cluster.owner
    datadir = cluster.state.datadir
    for stale in ("postmaster.pid", "postmaster.opts", conf.RECOVERY):
        (datadir / stale).unlink(missing_ok=True)
    conf.strip_auto_conf(datadir, owner)
    source_policy = _source_policy(p)
    policy = dataclasses.replace(
        source_policy,
        cluster=cluster.name,
        repository=p.source.repository,
        create_time=cluster.state.created,
    )
    clusters.save_policy(cluster, policy)
    home = st.home()
    cluster.configure(archive=conf.archive_command(home, cluster.name, policy.logfile_enabled))
    target = p.target.isoformat(sep=" ") if p.target else None
    conf.write_file(
        datadir / conf.RECOVERY,
        conf.recovery(conf.restore_command(home, cluster.name), target),
        owner,
    )
    conf.write_file(datadir / "recovery.signal", "", owner)
    cluster.state.restore_source = {
        **cluster.state.restore_source,
        "repository": p.source.repository,
        "stanza": p.source.cluster,
    }
    if p.source.credentials_file and Path(p.source.credentials_file).exists():
        conf.write_file(
            cluster.state.credentials_file,
            Path(p.source.credentials_file).read_text(),
            owner,
            0o600,
        )
    cluster.state.system_identifier = p.backup["system_identifier"]
    cluster.state.wal_segment_size = int(p.backup["wal_segment_size"])
    cluster.state.pg_version = int(p.backup["pg_version"])
    cluster.state.save()


def _source_policy(p: Plan) -> pol.BackupPolicy:
    try:
        return clusters.load_policy(Cluster.get(p.source.cluster))
    except (NotFound, FileNotFoundError):
        return pol.BackupPolicy(cluster=p.new_name, repository=p.source.repository, create_time="")


def start_recovery(cluster: Cluster) -> None:
    cluster.start(timeout=3600)


def wait_promoted(
    cluster: Cluster, timeout: float = 3600, progress: Callable[[str], None] | None = None
) -> None:
    """Wait until recovery reached its target and the server was promoted."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        if not cluster.is_running():
            raise ClusterStateError(
                f"recovery of {cluster.name!r} stopped before promotion:\n{cluster.log_tail()}"
            )
        try:
            with cluster.connect(timeout=3) as db:
                row = db.execute(
                    "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text"
                ).fetchone()
                assert row is not None
                if not row[0]:
                    return
                if progress:
                    progress(row[1] or "")
        except (ClusterStateError, psycopg.OperationalError):
            pass
        if time.monotonic() > deadline:
            raise ClusterStateError(f"recovery of {cluster.name!r} did not finish in {timeout} s")
        time.sleep(0.1)


@dataclass(frozen=True)
class RestoreResult:
    cluster: str
    backup: str
    target: datetime | None
    last_commit: datetime | None
    timeline: int


def finish(p: Plan, cluster: Cluster) -> RestoreResult:
    """Check what was restored, then make the new cluster an ordinary one."""
    with cluster.connect() as db:
        row = db.execute(
            "SELECT pg_last_xact_replay_timestamp(), "
            "(SELECT timeline_id FROM pg_control_checkpoint())"
        ).fetchone()
        assert row is not None
        last_commit, timeline = row
    if p.target is not None and last_commit is not None and last_commit > p.target:
        raise RecoveryTargetError(
            f"recovery replayed a commit of {last_commit.isoformat()}, after the target "
            f"{p.target.isoformat()}"
        )
    conf.write_file(
        cluster.state.datadir / conf.RECOVERY, "# no recovery in progress\n", cluster.owner
    )
    shutil.rmtree(cluster.state.spool / "fetched", ignore_errors=True)
    cluster.state.restore_source = {}
    cluster.state.save()
    cluster.reload()
    return RestoreResult(cluster.name, p.backup["name"], p.target, last_commit, int(timeline))


def restore(
    p: Plan,
    progress: Progress | None = None,
    on_replay: Callable[[str], None] | None = None,
) -> RestoreResult:
    """All the steps; a failure at any of them removes the new cluster."""
    cluster = prepare(p)
    try:
        materialise(p, cluster, progress)
        configure_recovery(p, cluster)
        start_recovery(cluster)
        wait_promoted(cluster, progress=on_replay)
        return finish(p, cluster)
    except BaseException as exc:
        cluster.remove()
        if isinstance(exc, PitrError | KeyboardInterrupt):
            raise
        raise PitrError(f"restore of {p.new_name!r} failed: {type(exc).__name__}: {exc}") from exc
