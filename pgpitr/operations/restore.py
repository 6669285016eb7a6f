"""Restore a cluster's backup and WAL to a target, into a new cluster.

The target (pgpitr/targets.py) is a time, an LSN, a transaction id, a restore point, the end of the
backup (immediate) or the end of the archived WAL (latest). ``run`` is the restore operation, the
one place its steps are put in order. ``choose_backup`` checks everything it can before anything is
created: the source has backups, the new name is free, the target can be reached
(pgpitr/catalog/reach.py:
a time inside the recoverable window; an LSN, a transaction's commit or a restore point inside the
archived chain of a backup consistent before it), there is room for the data. An incremental backup
restores with its lineage (pgpitr/catalog/backups.py ``lineage``): ``materialise`` combines the
links with
pg_combinebackup. The steps after it (``prepare``, ``materialise``, ``configure_recovery``,
``start_recovery``, ``wait_promoted``, ``finish``) each do one thing, so that each can be run and
retried on its own; they run in one transaction, and a failure removes the new cluster. ``finish``
checks where PostgreSQL says recovery stopped against the target. The source cluster is only read
from the repository, never touched."""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pgpitr import cluster_repository, policy_store
from pgpitr import policy as pol
from pgpitr import state as st
from pgpitr.catalog import backups as catalog_backups
from pgpitr.catalog import reach
from pgpitr.catalog import source as catalog_source
from pgpitr.catalog import window as catalog_window
from pgpitr.errors import (
    AlreadyExists,
    ClusterStateError,
    InvalidInput,
    NotFound,
    RecoveryTargetError,
)
from pgpitr.manifest import BackupManifest, check_system, copy_data
from pgpitr.osutil import copy_mode, process_alive
from pgpitr.postgres import binaries, conf
from pgpitr.postgres.cluster import Cluster, validate_name
from pgpitr.postgres.command import check, combinebackup_command, popen
from pgpitr.postgres.command import run as run_command
from pgpitr.postgres.osuser import make_dir, server_user
from pgpitr.repository import open_repository
from pgpitr.steps import Steps, undone_by
from pgpitr.targets import RestoreTarget
from pgpitr.wal import archive as wal_archive
from pgpitr.wal import spool

__all__ = ["Plan", "RestoreRequest", "RestoreResult", "RestoreTarget", "run"]

Progress = Callable[[int, int], None]
log = logging.getLogger(__name__)
#: Upper bounds enforced by pg_ctl and by the replay wait.
START_TIMEOUT = 3600
REPLAY_TIMEOUT = 6 * 3600


@dataclass(frozen=True)
class RestoreRequest:
    """What a restore was asked for, checked once when it is made (CLI, flow, API): the names'
    form and empty options; the target is already a checked ``RestoreTarget``."""

    new_name: str
    source_cluster: str
    target: RestoreTarget = RestoreTarget()
    backup_name: str | None = None
    backup_repo: str | None = None
    #: the binaries the new cluster runs; by default those of the backup's major on this host
    bindir: str | None = None

    def __post_init__(self) -> None:
        validate_name(self.new_name)
        validate_name(self.source_cluster)
        if not isinstance(self.target, RestoreTarget):
            raise InvalidInput(f"restore target {self.target!r} is not a RestoreTarget")
        for key in ("backup_name", "backup_repo", "bindir"):
            if not getattr(self, key):  # "" from a form or a flag means not given
                object.__setattr__(self, key, None)


# -- the operation ---------------------------------------------------------------------------


def run(steps: Steps, request: RestoreRequest) -> RestoreResult:
    """Restore ``request.source_cluster`` to its target into the new cluster; all or nothing.

    Each phase is timed (``RestoreResult.phases``): what a drill reports as the RTO."""
    clock = _PhaseClock()
    with clock("plan"):
        plan = steps(choose_backup, request)
    with steps.transaction():
        with clock("materialise"):
            name = steps(prepare, plan)
            steps(materialise, plan, name)
            steps(configure_recovery, plan, name)
        with clock("replay"):
            steps(start_recovery, name)
            steps(wait_promoted, name)
        with clock("promote"):
            result = steps(finish, plan, name)
    steps.sync_schedules(request.new_name)
    return dataclasses.replace(result, phases=dict(clock.phases))


class _PhaseClock:
    """Seconds spent in each named phase (monotonic clock)."""

    def __init__(self) -> None:
        self.phases: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.phases[phase] = round(time.monotonic() - started, 3)


def choose_backup(request: RestoreRequest) -> Plan:
    """Check everything before creating anything; pick the newest backup before the target."""
    source = catalog_source.resolve_source(request.source_cluster, request.backup_repo)
    chosen = plan(source, request.new_name, request.target, request.backup_name, request.bindir)
    log.info(
        "restoring %s from backup %s of %s to %s",
        request.new_name,
        chosen.backup.name,
        request.source_cluster,
        chosen.stop_at or request.target.describe(),
    )
    return chosen


@dataclass(frozen=True)
class Plan:
    source: catalog_source.Source
    new_name: str
    backup: BackupManifest  # the chosen one
    target: RestoreTarget
    window: list[tuple[datetime, datetime]]  # the recoverable time (for a time target)
    bindir: str  # the binaries the new cluster runs
    #: what the plan found the target to be, for a person: "the commit of transaction 745 at
    #: LSN 0/3000140 (Dec 01,2026 …)", "restore point 'before' at LSN …"
    stop_at: str = ""
    #: the chosen backup's lineage, its full backup first and ``backup`` last (one link for a
    #: full backup): what ``materialise`` combines
    links: tuple[BackupManifest, ...] = ()


def plan(
    source: catalog_source.Source,
    new_name: str,
    target: RestoreTarget | datetime | None,
    backup_name: str | None = None,
    bindir: str | None = None,
) -> Plan:
    """Choose the backup for ``target`` after checking it can be reached: the newest completed
    backup consistent before it whose archived chain reaches it."""
    if not isinstance(target, RestoreTarget):  # a time, or None for latest (older callers)
        target = RestoreTarget(time=target)
    validate_name(new_name)
    remove_interrupted(new_name)
    if (st.clusters_dir() / new_name).exists():
        raise AlreadyExists(f"cluster {new_name!r} already exists", hint="choose another name")
    repo = source.open()
    # the new cluster's WAL commands read an encrypted repository's key from a file: refused
    # now when there is none, or the server's OS user cannot read it
    cluster_repository.encryption_key_file(source.repository, server_user(), source.key_file or "")
    archive_info = catalog_source.check_key(repo, source.cluster)
    if repo.exists(wal_archive.archive_info_key(new_name)) and not catalog_backups.leftover_stanza(
        repo, new_name
    ):
        raise AlreadyExists(
            f"the repository {repo.url} already holds the archive of a cluster named "
            f"{new_name!r}; the restored cluster would archive into it",
            hint="choose another name for the new cluster",
        )
    backups = [b for b in catalog_backups.list_backups(repo, source.cluster) if b.completed]
    if backup_name:
        chosen = catalog_backups.get_backup(repo, source.cluster, backup_name)
        if not chosen.completed:
            raise RecoveryTargetError(f"backup {backup_name!r} is {chosen.status}, not Completed")
        backups = [chosen]
    if not backups:
        raise NotFound(
            f"cluster {source.cluster!r} has no completed backup",
            hint=f"take one with `pgpitr cluster backup {source.cluster}`",
        )
    server = _binaries_for(backups[-1].pg_version, bindir, source.bindir)
    # every segment of every chain checked present (one listing per log directory), not only
    # the window's ends: the restore must not start on a chain with a hole in it
    window = catalog_window.recoverable_window(
        repo, source.cluster, server, backups, every_segment=True
    )
    if backup_name and backup_name in window.unusable:
        raise RecoveryTargetError(
            f"backup {backup_name!r} cannot be restored: {window.unusable[backup_name]}",
            hint=f"choose another backup (`pgpitr cluster describe {source.cluster}` shows "
            "which can be restored)",
        )
    chosen, stop_at = reach.backup_for(repo, source.cluster, server, window, target)
    links = tuple(
        catalog_backups.lineage(catalog_backups.list_backups(repo, source.cluster), chosen.name)
    )
    check_system(repo, source.cluster, archive_info, links or (chosen,))
    if chosen.incremental and server_major(server) < 17:
        raise ClusterStateError(
            f"backup {chosen.name!r} is incremental: combining it needs pg_combinebackup of "
            "PostgreSQL 17 or later",
            hint="pass --bindir with the binaries of the backup's major",
        )
    if chosen.pg_version != backups[-1].pg_version:  # an older backup of another major
        server = _binaries_for(chosen.pg_version, bindir, None)
    _check_space(links or (chosen,))
    return Plan(source, new_name, chosen, target, window.periods, str(server), stop_at, links)


def server_major(bindir: Path) -> int:
    return binaries.major_of(bindir)


def _binaries_for(major: int, bindir: str | None, source_bindir: str | None) -> Path:
    """The binaries the restored cluster runs, found before anything is created: those given,
    else the source cluster's when it lives here and runs the backup's major, else the
    installed ones of that major."""
    if bindir is None and source_bindir and binaries.major_of(Path(source_bindir)) == major:
        return Path(source_bindir)
    try:
        return binaries.resolve(major, bindir)
    except ClusterStateError:
        raise ClusterStateError(
            f"the backup is PostgreSQL {major}; install postgresql-{major} or pass --bindir",
            hint=f"no PostgreSQL {major} binaries were found on this host",
        ) from None


def _check_space(links: tuple[BackupManifest, ...]) -> None:
    # a lineage is extracted beside the data directory before it is combined into it
    need = sum(link.database_size or 0 for link in links) + (
        (links[-1].database_size or 0) if len(links) > 1 else 0
    )
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
        "repository": p.source.repository,
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


def configure_recovery(p: Plan, new_cluster: str) -> None:
    """Rewrite the source's configuration for the new cluster and ask for recovery to the target."""
    cluster = Cluster.get(new_cluster)
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
    policy_store.save_policy(cluster, policy)
    home = st.home()
    archive = conf.archive_command(home, cluster.name, policy.logfile_enabled)
    cluster.configure(archive=archive)
    conf.write_file(datadir / conf.RECOVERY, recovery_settings(p, home, cluster.name), owner)
    _check_commands(cluster, home, archive)
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
    else:
        # a deleted source left no keys behind: the new cluster's archiver keeps the ones this
        # restore reads the repository with, as `cluster create` does
        cluster_repository.store_credentials(cluster)
    cluster.state.system_identifier = p.backup.system_identifier
    cluster.state.wal_segment_size = p.backup.wal_segment_size
    cluster.state.pg_version = p.backup.pg_version
    cluster.state.save()


def _check_commands(cluster: Cluster, home: Path, archive: str) -> None:
    """Before the server first starts, ask it which shell commands it would run: pgpitr's own
    and no other (conf.COMMAND_SETTINGS), whatever the source's files held."""
    expected = dict.fromkeys(conf.COMMAND_SETTINGS, "")
    expected["archive_command"] = archive
    expected["restore_command"] = conf.restore_command(home, cluster.name)
    for setting, value in expected.items():
        if cluster.configured(setting) != value:
            # the value is not shown: a command line may hold a secret (a key's passphrase)
            raise ClusterStateError(
                f"the restored configuration of {cluster.name!r} would run a {setting} that "
                "is not pgpitr's",
                hint=f"look for {setting} in {cluster.state.datadir}'s configuration files",
            )


def recovery_settings(p: Plan, home: Path, new_cluster: str) -> str:
    """The recovery settings file for the plan's target (pgpitr-recovery.conf)."""
    t = p.target
    return conf.recovery(
        conf.restore_command(home, new_cluster),
        time=t.time.isoformat(sep=" ") if t.time else None,
        lsn=t.lsn,
        xid=t.xid32,
        name=t.name,
        immediate=t.immediate,
        inclusive=t.inclusive,
    )


def _source_policy(p: Plan) -> pol.BackupPolicy:
    try:
        return policy_store.load_policy(Cluster.get(p.source.cluster))
    except (NotFound, FileNotFoundError):
        return pol.BackupPolicy(cluster=p.new_name, repository=p.source.repository, create_time="")


def start_recovery(new_cluster: str) -> None:
    # the port was chosen by pgpitr: another process may have taken it since
    Cluster.get(new_cluster).start(timeout=START_TIMEOUT, move_if_port_taken=True)


def wait_promoted(new_cluster: str, timeout: float = REPLAY_TIMEOUT) -> None:
    """Wait until recovery reached its target and the server was promoted; log the replay
    position every few seconds."""
    import psycopg

    cluster = Cluster.get(new_cluster)
    logged = 0.0

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
                if time.monotonic() - logged >= 5:
                    logged = time.monotonic()
                    log.info("%s: replayed up to %s", new_cluster, row[1] or "?")
        except (ClusterStateError, psycopg.OperationalError) as exc:
            # "starting up" passes; a refused login stays refused for the 6 h of the wait
            if _authentication_failed(exc):
                raise ClusterStateError(
                    f"recovery of {cluster.name!r} runs, but pgpitr cannot log in to it: "
                    f"{_first_line(exc)}",
                    hint="the restored data's roles and pg_hba.conf come from the backup; check "
                    "that the backup's superuser exists there (see the server log: "
                    f"{cluster.state.datadir}/log or `pgpitr cluster describe {cluster.name}`)",
                ) from None
        if time.monotonic() > deadline:
            raise ClusterStateError(f"recovery of {cluster.name!r} did not finish in {timeout} s")
        time.sleep(0.1)


#: What PostgreSQL's server says when it refuses a login (its FATAL messages, as libpq
#: reports them; a connection error carries no SQLSTATE): retrying cannot help.
_LOGIN_REFUSED = (
    "authentication failed",  # password, peer, ident, scram …
    "no pg_hba.conf entry",
    "does not exist",  # role "x" / database "x" does not exist
    "not permitted to log in",
)


def _authentication_failed(exc: BaseException) -> bool:
    text = str(exc)
    return any(marker in text for marker in _LOGIN_REFUSED) and "starting up" not in text


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return next((line for line in lines if "FATAL" in line), lines[0] if lines else "")


@dataclass(frozen=True)
class RestoreResult:
    cluster: str
    backup: str
    target: RestoreTarget
    last_commit: datetime | None
    timeline: int
    #: where PostgreSQL says recovery stopped (the new timeline's history): "after transaction
    #: 745", "at restore point \"before\"", "reached consistency", "no recovery target specified"
    stopped: str = ""
    #: seconds per phase: plan, materialise, replay, promote (set by ``run``)
    phases: dict[str, float] = dataclasses.field(default_factory=dict)


def finish(p: Plan, new_cluster: str) -> RestoreResult:
    """Check what was restored against the target, then make the new cluster an ordinary one."""
    cluster = Cluster.get(new_cluster)
    with cluster.connect() as db:
        row = db.execute(
            "SELECT pg_last_xact_replay_timestamp(), "
            "('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int"
        ).fetchone()
        assert row is not None
        last_commit, timeline = row
        history = db.execute(
            "SELECT pg_read_file(%s)", (f"pg_wal/{int(timeline):08X}.history",)
        ).fetchone()
    stopped = _stop_reason(history[0] if history else "")
    check_stop(p.target, stopped, last_commit)
    conf.write_file(
        cluster.state.datadir / conf.RECOVERY, "# no recovery in progress\n", cluster.owner
    )
    shutil.rmtree(cluster.state.spool / "fetched", ignore_errors=True)
    cluster.state.restore_source = {}
    cluster.state.save()
    cluster.reload()
    result = RestoreResult(
        cluster.name, p.backup.name, p.target, last_commit, int(timeline), stopped
    )
    log.info(
        "cluster %s restored on timeline %s, recovery stopped %s; last replayed commit %s",
        cluster.name,
        result.timeline,
        stopped,
        result.last_commit.isoformat() if result.last_commit else "none",
    )
    return result


def _stop_reason(history: str) -> str:
    """The reason column of a timeline history file's last line (PostgreSQL writes why recovery
    stopped where it switched to the new timeline)."""
    lines = [line for line in history.splitlines() if line.strip() and line[0].isdigit()]
    return lines[-1].split("\t", 2)[-1].strip() if lines else ""


def check_stop(target: RestoreTarget, stopped: str, last_commit: datetime | None) -> None:
    """Refuse a restore whose recovery did not stop where it was asked to (kept honest per kind:
    PostgreSQL's own record of the stop, and the last replayed commit for a time)."""
    edge = "after" if target.inclusive else "before"
    kind = target.kind
    if kind == "latest":
        ok = stopped == "no recovery target specified"
    elif kind == "immediate":
        ok = stopped == "reached consistency"
    elif kind == "name":
        ok = stopped == f'at restore point "{target.name}"'
    elif kind == "xid":
        ok = stopped == f"{edge} transaction {target.xid32}"
    elif kind == "lsn":
        m = re.fullmatch(r"(after|before) LSN ([0-9A-F]+/[0-9A-F]+)", stopped)
        ok = bool(m) and m[1] == edge and wal_archive.lsn_to_int(m[2]) >= target.lsn_int
    else:
        assert target.time is not None
        # recovery stops before the first commit past the target (at or past it, exclusive)
        ok = stopped.startswith(("before ", "after "))
        if last_commit is not None:
            ok = ok and (
                last_commit <= target.time if target.inclusive else last_commit < target.time
            )
    if not ok:
        shown = f"; last replayed commit {last_commit.isoformat()}" if last_commit else ""
        raise RecoveryTargetError(
            f"recovery did not stop at {target.describe()}: PostgreSQL says it stopped "
            f"{stopped or '(no reason recorded)'}{shown}",
            hint="the new cluster is removed; see its server log in the flow run's log",
        )
