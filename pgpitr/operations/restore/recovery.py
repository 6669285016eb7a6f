"""A restore's recovery: the recovery configuration (``configure_recovery``), starting the
server and waiting for its promotion (``start_recovery``, ``wait_promoted``), and checking where
PostgreSQL says recovery stopped against the target (``finish``, ``RestoreResult``).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import shutil
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from pgpitr import cluster_repository, policy_store
from pgpitr import policy as pol
from pgpitr import state as st
from pgpitr.errors import (
    ClusterStateError,
    NotFound,
    RecoveryTargetError,
)
from pgpitr.postgres import conf
from pgpitr.postgres.cluster import Cluster
from pgpitr.targets import RestoreTarget
from pgpitr.wal.lsn import Lsn

if TYPE_CHECKING:
    from pgpitr.operations.restore.planning import Plan

log = logging.getLogger(__name__)
#: Upper bounds enforced by pg_ctl and by the replay wait.
START_TIMEOUT = 3600
REPLAY_TIMEOUT = 6 * 3600


def configure_recovery(p: Plan, new_cluster: str) -> None:
    """Rewrite the source's configuration for the new cluster and ask for recovery to the target."""
    cluster = Cluster.get(new_cluster)
    owner = cluster.owner
    datadir = cluster.state.datadir
    # a standby's backup carries standby.signal, which would keep the copy a standby forever
    for stale in ("postmaster.pid", "postmaster.opts", conf.RECOVERY, "standby.signal"):
        (datadir / stale).unlink(missing_ok=True)
    conf.strip_auto_conf(datadir, owner)
    source_policy = _source_policy(p)
    # the source's policy, its schedules at a minute of their own: not the source's backups'
    policy = policy_store.placed_here(
        dataclasses.replace(
            source_policy,
            cluster=cluster.name,
            repository=p.source.repository,
            create_time=cluster.state.created,
        )
    )
    policy_store.save_policy(cluster, policy)
    home = st.home()
    # a cluster restored only to hand its data over archives nothing under its passing name
    archive = conf.archive_command(
        home, cluster.name, policy.logfile_enabled and not p.into_datadir
    )
    cluster.configure(archive=archive)
    conf.write_file(datadir / conf.RECOVERY, recovery_settings(p, home, cluster.name), owner)
    _check_commands(cluster, home, archive)
    conf.write_file(datadir / "recovery.signal", "", owner)
    cluster.state.restore_source = {
        **cluster.state.restore_source,
        "repository": str(p.source.repository),
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
    #: where the data directory was handed over (``RestoreRequest.into_datadir``); ``cluster``
    #: is then a temporary name that no longer exists
    into_datadir: str | None = None


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
        ok = bool(m) and m[1] == edge and Lsn.parse(m[2]) >= target.lsn_int
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
