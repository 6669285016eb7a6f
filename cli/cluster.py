"""``pgpitr cluster …``: the kbcli-like commands of the local platform."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from cli import console, flowio, progress, runner
from pgpitr import cluster_repository, policy_store, protection, timeparse
from pgpitr.catalog import backups as catalog_backups
from pgpitr.catalog import restore_points
from pgpitr.catalog import source as catalog_source
from pgpitr.errors import AlreadyExists, InvalidInput, NotFound
from pgpitr.operations import describe as description
from pgpitr.postgres.cluster import Cluster, validate_name
from pgpitr.repository.url import RepositoryUrl
from pgpitr.state import clusters_dir

app = typer.Typer(no_args_is_help=True, help="Create, back up, restore and inspect clusters.")

Output = Annotated[str, typer.Option("--output", "-o", help="table or json")]
Wait = Annotated[
    bool | None,
    typer.Option(
        "--wait/--no-wait",
        help="run through the served deployment (pgpitr serve); --no-wait returns once queued",
        show_default=False,
    ),
]


BackupRepo = Annotated[
    str | None,
    typer.Option(help="read the backups from this repository alone (a deleted cluster's)"),
]


def _known(name: str) -> Cluster:
    """A cluster of this home; an unknown name's hint points at its backups' repository."""
    try:
        return Cluster.get(name)
    except NotFound as exc:
        raise NotFound(
            exc.message,
            hint="see `pgpitr cluster list`; a deleted cluster's backups: `pgpitr info` lists "
            "the stanzas of each repository, and --backup-repo URL reads them",
        ) from None


def _check_output(output: str) -> None:
    if output not in ("table", "json"):
        raise InvalidInput(f"unknown output format {output!r}: use table or json")


@app.command()
def create(
    name: str,
    port: Annotated[int | None, typer.Option(help="TCP port; a free one by default")] = None,
    backup_repo: Annotated[str | None, typer.Option(help="repository URL")] = None,
    version: Annotated[
        int | None, typer.Option(help="PostgreSQL major (default: the newest installed)")
    ] = None,
    bindir: Annotated[str | None, typer.Option(help="the server binaries to use")] = None,
    wait: Wait = None,
) -> None:
    """Create and start a new PostgreSQL cluster managed by pgpitr."""
    from pgpitr.postgres import binaries

    # bad input fails at once, not as a failed flow run (nor starts a Prefect server)
    validate_name(name)
    if (clusters_dir() / name).exists():
        raise AlreadyExists(f"cluster {name!r} already exists", hint="choose another name")
    url = flowio.repository_url(backup_repo)
    cluster_repository.check_new_cluster_key(url)  # an encrypted repository's key file
    bindir = str(binaries.resolve(version, bindir))
    backup_repo = flowio.url_parameter(url)
    parameters = {"name": name, "port": port, "backup_repo": backup_repo, "bindir": bindir}
    flowio.created(runner.run("create-cluster", wait, **parameters))


@app.command()
def register(
    name: str,
    pgdata: Annotated[
        str, typer.Option(help="its data directory, or Debian's /etc/postgresql/N/NAME")
    ],
    bindir: Annotated[
        str | None, typer.Option(help="its binaries; found by its major version by default")
    ] = None,
    socket_dir: Annotated[
        str | None, typer.Option(help="its Unix socket directory; from postmaster.pid by default")
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="its port; from postmaster.pid by default")
    ] = None,
    os_user: Annotated[
        str | None, typer.Option(help="the OS user it runs as; the data directory's owner")
    ] = None,
    backup_repo: Annotated[str | None, typer.Option(help="repository URL")] = None,
    restart: Annotated[
        bool, typer.Option(help="restart the server when archive_mode must be turned on")
    ] = False,
    wait: Wait = None,
) -> None:
    """Protect a PostgreSQL server that already runs (its data stays where it is)."""
    from pgpitr.operations.register import RegisterRequest

    # what needs no server (name, path, bindir's major) fails at once, not as a failed run
    request = RegisterRequest.parse(
        name, pgdata, bindir, socket_dir, port, os_user, backup_repo, restart
    )
    parameters = {k: v for k, v in vars(request).items()}
    flowio.registered(runner.run("register-cluster", wait, **parameters))


@app.command()
def unregister(name: str, wait: Wait = None) -> None:
    """Stop protecting a registered server: its settings put back, its backups kept."""
    from pgpitr.operations.unregister import check_registered

    check_registered(name)
    flowio.unregistered(name, runner.run("unregister-cluster", wait, name=name))


@app.command("list")
def list_(output: Output = "table") -> None:
    """List clusters: TYPE is Created (pgpitr runs it) or Registered (someone else's server)."""
    _check_output(output)
    rows = [
        {
            "name": c.name,
            "status": "Running" if c.is_running() else "Stopped",
            "type": "Registered" if c.registered else "Created",
            "version": c.state.pg_version,
            "port": c.state.port,
            "repository": str(c.state.repository),
            "created": c.state.created,
            **protection.of(c).as_fields(),
        }
        for c in Cluster.all()
    ]
    if output == "json":
        console.as_json(rows)
    else:
        columns = ["NAME", "STATUS", "TYPE", "VERSION", "PORT", "BACKUP-REPO", "CREATED-TIME"]
        console.table(columns, [list(r.values())[: len(columns)] for r in rows])
        _protection_warnings(rows)


Force = Annotated[bool, typer.Option(help="also a registered server (someone else's)")]


@app.command()
def start(name: str, force: Force = False) -> None:
    """Start a cluster."""
    Cluster.get(name).start(force=force, by_operator=True)


@app.command()
def stop(name: str, force: Force = False) -> None:
    """Stop a cluster (fast shutdown); the agent leaves it stopped until `start`."""
    Cluster.get(name).stop(force=force, by_operator=True)


@app.command()
def delete(name: str, wait: Wait = None) -> None:
    """Stop and remove a cluster.  Its backups stay in the repository."""
    # an unknown name or a registered server fails at once, not as a failed flow run
    Cluster.get(name).refuse_if_registered("delete")
    flowio.deleted_cluster(name, runner.run("delete-cluster", wait, name=name))


@app.command()
def backup(
    name: str,
    backup_name: Annotated[
        str | None, typer.Option(help="default backup-default-NAME-TIME")
    ] = None,
    type_: Annotated[
        str,
        typer.Option(
            "--type",
            help="full, or incremental (PostgreSQL 17+: the blocks changed since a parent)",
        ),
    ] = "full",
    parent: Annotated[
        str | None,
        typer.Option(help="an incremental's parent (default: the newest usable backup)"),
    ] = None,
    wait: Wait = None,
) -> None:
    """Take a backup now: full by default, or incremental."""
    from pgpitr import cluster_repository
    from pgpitr.catalog import backups as catalog_backups
    from pgpitr.operations import backup as bk

    # an unknown name, type or parent, or a server too old, fails here, not as a failed run
    cluster = Cluster.get(name)
    catalog_source.check_key(cluster_repository.repository(cluster), cluster.state.stanza)
    kind = bk.BackupType.parse(type_)
    if backup_name:
        bk.validate_name(backup_name)
    if kind is bk.BackupType.INCREMENTAL:
        bk.require_incremental_support(cluster)
        if parent:
            bk.validate_name(parent)
            catalog_backups.get_backup(
                cluster_repository.repository(cluster), cluster.state.stanza, parent
            )
    elif parent:
        raise InvalidInput("--parent is for incremental backups: add --type incremental")
    parameters = {
        "cluster": name,
        "backup_name": backup_name,
        "backup_type": kind.value,
        "parent": parent,
    }
    flowio.backed_up(runner.run("backup", wait, progress="backup", **parameters))


def _backup_rows(cluster_names: list[str]) -> list[dict]:
    from pgpitr.manifest import backup_row

    rows = []
    for name in cluster_names:
        cluster = _known(name)
        repo = cluster_repository.repository(cluster)
        backups = catalog_backups.list_backups(repo, cluster.state.stanza)
        broken = catalog_backups.broken_links(repo, cluster.state.stanza, backups)
        for b in backups:
            rows.append({**backup_row(b), "unusable": broken.get(b.name)})
    return rows


@app.command("list-backup")
def list_backup(
    name: Annotated[str | None, typer.Argument()] = None,
    output: Output = "table",
    backup_repo: BackupRepo = None,
) -> None:
    """List backups (of one cluster, or of all): TYPE Full or Incremental, an incremental's
    PARENT, and why a backup cannot be restored when its lineage is broken."""
    _check_output(output)
    if backup_repo:
        from pgpitr.operations import info as repo_info

        rows = repo_info.backup_rows(flowio.repository_url(backup_repo), name)
    else:
        rows = _backup_rows([name] if name else [c.name for c in Cluster.all()])
    if output == "json":
        console.as_json(rows)
        return

    def when(value: str | None) -> str:
        return timeparse.format_kbcli(datetime.fromisoformat(value)) if value else ""

    console.table(
        [
            "NAME",
            "CLUSTER",
            "TYPE",
            "PARENT",
            "STATUS",
            "TOTAL-SIZE",
            "DURATION",
            "CREATE-TIME",
            "COMPLETION-TIME",
        ],
        [
            [
                r["name"],
                r["cluster"],
                r["type"],
                r["parent"] or "",
                f"{r['status']} (unusable: {r['unusable']})" if r["unusable"] else r["status"],
                progress.size(r["total_size"]),
                timeparse.format_duration(r["duration_seconds"]) if r["duration_seconds"] else "",
                when(r["create_time"]),
                when(r["completion_time"]),
            ]
            for r in rows
        ],
    )


@app.command()
def describe(name: str, output: Output = "table", backup_repo: BackupRepo = None) -> None:
    """Show a cluster and its data protection: schedule, TTL, recoverable window; with
    --backup-repo, what that repository holds of it (a deleted cluster's backups)."""
    from pgpitr import policy_store

    _check_output(output)
    if backup_repo:
        _describe_stanza(name, flowio.repository_url(backup_repo), output)
        return
    info = description.describe(_known(name))
    info.update(runner.schedule_fields(name, policy_store.load_policy(Cluster.get(name))))
    if output == "json":
        console.as_json(info)
        return
    console.out.print(
        f"Name: {info['name']}\t Platform: {info['platform']}\t Status: {info['status']}"
    )
    _protection_warnings([info])
    console.out.print("\nEndpoints:")
    console.table(["HOST", "PORT", "SOCKET"], [["127.0.0.1", info["port"], info["socket_dir"]]])
    console.out.print("\nStorage:")
    console.table(
        ["DATA-DIR", "VERSION", "SYSTEM-IDENTIFIER", "BACKUP-REPO"],
        [[info["datadir"], info["pg_version"], info["system_identifier"], info["repository"]]],
    )
    console.out.print("\nData Protection:")
    window = info["recoverable_time"]
    console.table(
        [
            "AUTO-BACKUP",
            "BACKUP-SCHEDULE",
            "TYPE",
            "BACKUP-TTL",
            "LAST-SCHEDULE",
            "RECOVERABLE-TIME",
        ],
        [
            [
                "Enabled" if info["auto_backup"] else "Disabled",
                info["backup_schedule"],
                info["type"],
                info["backup_ttl"],
                timeparse.format_kbcli(datetime.fromisoformat(info["last_schedule"]))
                if info["last_schedule"]
                else "",
                ", ".join(
                    timeparse.format_window(datetime.fromisoformat(a), datetime.fromisoformat(b))
                    for a, b in window
                ),
            ]
        ],
    )
    checked = info.get("wal_checked_at")
    # how fresh the guarantee is that no segment is missing inside a chain (the window refresh
    # lists every log directory; describe itself only each chain's ends)
    console.out.print(
        "WAL checked: "
        + (timeparse.format_kbcli(datetime.fromisoformat(checked)) if checked else "never")
    )
    for line in runner.health_lines(info):
        console.out.print(line)
    _lineages_block(info.get("lineages", []))
    _restore_points_block(info.get("restore_points", []))
    _print_drills_and_rpo(info)
    _streaming_block(info)


def _streaming_block(info: dict) -> None:
    """The receiver of stream mode (pgpitr/wal/stream.py), and its warnings, loud."""
    stream = info.get("stream")
    if not stream:
        return
    retained = stream["retained_bytes"]
    console.out.print("\nWAL Streaming:")
    console.table(
        ["METHOD", "SYNCHRONOUS", "RECEIVER", "SLOT", "RETAINED", "MAX-RETAINED"],
        [
            [
                "stream (+ archive_command)",
                "yes" if stream["synchronous"] else "no",
                f"running (pid {stream['receiver_pid']})" if stream["receiver_running"] else "down",
                stream["slot"] + ("" if stream["slot_active"] else " (inactive)"),
                f"{retained / 2**20:.1f}MB" if retained is not None else "",
                stream["max_retained"],
            ]
        ],
    )
    for warning in info.get("stream_warnings", []):
        console.warning(warning)


def _protection_warnings(rows: list[dict]) -> None:
    """Each unprotected cluster's warning, under the table that lists it."""
    for row in rows:
        if row.get("protection_warning"):
            console.warning(row["protection_warning"])


def _describe_stanza(name: str, url: RepositoryUrl, output: str) -> None:
    """describe from the repository alone: no server, policy or schedule to show."""
    from pgpitr.operations import info as repo_info

    info = repo_info.describe_stanza(url, name)
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
    _lineages_block(info["lineages"])
    _restore_points_block(info["restore_points"])


def _lineages_block(lineages: list[dict]) -> None:
    """Each backup lineage (a full backup and the incrementals taken on it), oldest link first."""
    if not lineages:
        return
    console.out.print("\nBackup Lineages:")
    console.table(
        ["END", "LINKS", "RESTORABLE"],
        [
            [
                row["end"],
                " <- ".join(row["links"]),
                "yes" if row["restorable"] else f"no: {row['reason']}",
            ]
            for row in lineages
        ],
    )


def _restore_points_block(points: list[dict]) -> None:
    if not points:
        return
    console.out.print("\nRestore Points:")
    console.table(
        ["NAME", "TIME", "LSN", "TIMELINE", "RESTORABLE"],
        [
            [
                p["name"],
                timeparse.format_kbcli(datetime.fromisoformat(p["time"])),
                p["lsn"],
                p["timeline"],
                "yes" if p["restorable"] else "no (WAL not archived or no backup before it)",
            ]
            for p in points
        ],
    )


def _seconds(value: float | None) -> str:
    return f"{value:.1f}s" if value is not None else ""


def _print_drills_and_rpo(info: dict) -> None:
    """describe's block on drills, the predicted RTO and the RPO (pgpitr/operations/drill.py)."""
    last = info.get("last_drill")

    def when(text: str) -> str:
        return timeparse.format_kbcli(datetime.fromisoformat(text))

    predicted = info.get("predicted_rto_latest_seconds")
    lag = info.get("archive_lag_seconds")
    console.out.print("\nDrills and RPO:")
    console.table(
        ["LAST-DRILL", "TARGET", "RESULT", "RTO", "PREDICTED-RTO(latest)", "ARCHIVE-LAG(RPO)"],
        [
            [
                when(last["time"]) if last else "no drill yet",
                when(last["target"]) if last else "",
                last["result"] if last else "",
                _seconds(last["rto_seconds"]) if last else "",
                _seconds(predicted) if predicted is not None else info.get("predicted_rto_note"),
                (
                    f"{_seconds(lag)} (max {_seconds(info['rpo_max_seconds'])})"
                    + (" EXCEEDED" if info.get("rpo_exceeded") else "")
                )
                if lag is not None
                else "log backup off",
            ]
        ],
    )
    if last and last["result"] != "Passed":
        console.out.print(f"LAST DRILL FAILED: {last['error']}")


@app.command()
def drill(
    name: str,
    at: Annotated[
        str, typer.Option(help="a time inside the recoverable window, or random")
    ] = "random",
    wait: Wait = None,
) -> None:
    """Restore a time of the window into a scratch cluster, check it, time it, remove it."""
    from pgpitr.operations import drill as dr

    Cluster.get(name)  # an unknown name or a bad time fails at once, not as a failed run
    when = dr.parse_at(at)
    parameters = {"cluster": name, "at": when.isoformat() if when else "random"}
    result = runner.run("drill", wait, **parameters)
    if result is not runner.NO_RESULT:
        console.info(result.summary())


@app.command("list-drill")
def list_drill(name: str, output: Output = "table") -> None:
    """List a cluster's drills, newest first."""
    from pgpitr.operations import drill as dr

    _check_output(output)
    drills = dr.list_drills(Cluster.get(name))
    if output == "json":
        console.as_json([d.as_dict() for d in drills])
        return
    console.table(
        ["NAME", "TARGET", "RESULT", "RTO", "PREDICTED", "ERROR", "BACKUP", "DETAIL"],
        [
            [
                d.id,
                timeparse.format_kbcli(datetime.fromisoformat(d.target)),
                d.result,
                _seconds(d.rto_seconds),
                _seconds(d.predicted_rto_seconds),
                f"{d.prediction_error_percent:+.0f}%"
                if d.prediction_error_percent is not None
                else "",
                d.backup or "",
                d.error or d.heartbeat.get("detail", ""),
            ]
            for d in drills
        ],
    )


@app.command()
def restore(
    new_name: Annotated[str, typer.Argument(metavar="NEW-CLUSTER")],
    source_cluster: Annotated[str, typer.Option(help="the cluster whose backups to use")],
    restore_to_time: Annotated[
        str | None,
        typer.Option(
            help='a time: "Apr 17,2023 19:56:40 UTC+0800", RFC 3339, "2023-04-17 19:56:40 '
            'Asia/Shanghai", or latest (the default: the end of the archived WAL)'
        ),
    ] = None,
    restore_to_lsn: Annotated[
        str | None, typer.Option(help="a WAL position, e.g. 0/3000028 (pg_current_wal_lsn())")
    ] = None,
    restore_to_xid: Annotated[
        str | None,
        typer.Option(
            help="up to the commit of this transaction id (txid_current(), or a row's xmin)"
        ),
    ] = None,
    restore_to_name: Annotated[
        str | None, typer.Option(help="a restore point made by create-restore-point")
    ] = None,
    restore_to_immediate: Annotated[
        bool, typer.Option(help="stop as soon as the backup is consistent: its content only")
    ] = False,
    exclusive: Annotated[
        bool,
        typer.Option(help="stop just before the time, LSN or xid (default: just after it)"),
    ] = False,
    backup: Annotated[str | None, typer.Option(help="use this backup")] = None,
    backup_repo: Annotated[
        str | None, typer.Option(help="repository of a deleted source cluster")
    ] = None,
    bindir: Annotated[
        str | None,
        typer.Option(help="binaries for the new cluster (default: of the backup's major)"),
    ] = None,
    wait: Wait = None,
    host: Annotated[
        str | None, typer.Option(help="make the new cluster on this host, run by its agent")
    ] = None,
) -> None:
    """Restore SOURCE into a new cluster at one target (at most one --restore-to-*; none:
    latest), on another host with --host.  Every target is checked before anything is made."""
    from pgpitr.operations.restore import RestoreRequest, RestoreTarget

    # a typo or two targets fail here, before any flow runs; the flow gets the checked value
    target = RestoreTarget.of(
        time=restore_to_time,
        lsn=restore_to_lsn,
        xid=restore_to_xid,
        name=restore_to_name,
        immediate=restore_to_immediate,
        inclusive=not exclusive,
    )
    url = flowio.repository_url(backup_repo)
    RestoreRequest(new_name, source_cluster, target, backup, url, bindir)
    if not host:  # a wrong or missing encryption key fails here, not in the flow
        source = catalog_source.resolve_source(source_cluster, url)
        catalog_source.check_key(source.open(), source.cluster)
    if host and url is None:  # the other host reads the source's repository
        url = catalog_source.resolve_source(source_cluster).repository
    parameters = {
        "new_name": new_name,
        "source_cluster": source_cluster,
        "target": target.as_parameter(),  # JSON: the same through a deployment
        "backup_name": backup,
        "backup_repo": flowio.url_parameter(url),
        "bindir": bindir,
    }
    if host:
        wait = True if wait is None else wait
        parameters["host"] = host  # runner.run: through that host's deployment
    result = runner.run("restore", wait, progress="restore", **parameters)
    flowio.restored(new_name, result)


@app.command("create-restore-point")
def create_restore_point(
    name: Annotated[str, typer.Argument(metavar="CLUSTER")],
    point: Annotated[str, typer.Option("--name", help="the restore point's name")],
    wait: Wait = None,
) -> None:
    """Create a named restore point (pg_create_restore_point) to restore to with
    --restore-to-name; it is restorable once its WAL is archived (archive_timeout)."""

    restore_points.validate_name(point)
    Cluster.get(name).require_running()  # fails at once, not as a failed flow run
    flowio.restore_point_created(
        name, runner.run("create-restore-point", wait, cluster=name, name=point)
    )


@app.command("delete-backup")
def delete_backup(
    name: Annotated[str, typer.Argument(metavar="CLUSTER")],
    backup: Annotated[list[str] | None, typer.Option("--name", help="backup name(s)")] = None,
    force: Annotated[
        bool,
        typer.Option(
            help="also a backup the window starts from; with no --name, every backup of the cluster"
        ),
    ] = False,
    backup_repo: Annotated[str | None, typer.Option(help="repository of a deleted cluster")] = None,
    wait: Wait = None,
) -> None:
    """Delete backups and the WAL no remaining backup needs."""
    from pgpitr.operations.delete_backup import require_names_or_force

    require_names_or_force(backup, force)
    url = flowio.url_parameter(flowio.repository_url(backup_repo))
    parameters = {"cluster": name, "names": backup, "force": force, "backup_repo": url}
    flowio.deleted_backups(name, runner.run("delete-backup", wait, **parameters))


@app.command("list-backup-policy")
def list_backup_policy(output: Output = "table") -> None:
    """List backup policies."""
    from pgpitr import policy as pol

    _check_output(output)
    rows = []
    for c in Cluster.all():
        p = policy_store.load_policy(c)
        rows.append(
            {
                "name": p.name,
                "default": True,
                "cluster": c.name,
                "create_time": p.create_time,
                "status": "Available",
                **pol.to_dict(p),
                **runner.schedule_fields(c.name, p),
                **protection.check(c, p.logfile_enabled).as_fields(),
            }
        )
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
                timeparse.format_kbcli(datetime.fromisoformat(r["create_time"]))
                if r["create_time"]
                else "",
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
    _protection_warnings(rows)


@app.command("edit-backup-policy")
def edit_backup_policy(
    policy_name: Annotated[str, typer.Argument(metavar="POLICY")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="KEY=VALUE[,KEY=VALUE]")] = None,
    wait: Wait = None,
) -> None:
    """Change a backup policy (with no --set, in $EDITOR) and the schedules it drives."""
    change = flowio.policy_change(policy_name, set_)
    result = runner.run("edit-backup-policy", wait, **change) if change else None
    flowio.policy_updated(policy_name, result)


@app.command("create-account")
def create_account(
    name: str,
    username: Annotated[str, typer.Option(help="the account's name")],
    password_prompt: Annotated[
        bool, typer.Option("--password-prompt", help="ask for the password (hidden, twice)")
    ] = False,
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="read the password from standard input")
    ] = False,
    password_file: Annotated[
        Path | None, typer.Option(help="read the password from this file (mode 600)")
    ] = None,
) -> None:
    """Create a database account; with no password given, a generated one is shown once."""
    from cli import passwords
    from pgpitr.operations import accounts

    given = passwords.read(prompt=password_prompt, stdin=password_stdin, file=password_file)
    # to the flow through this process's environment: never a parameter, never argv
    secret = {accounts.PASSWORD_ENV: given or accounts.generate_password()}
    runner.run("create-account", None, environment=secret, cluster=name, username=username)
    console.info(f"account {username} created")
    if given is None:
        console.out.print(f"password: {secret[accounts.PASSWORD_ENV]}")


@app.command("grant-role")
def grant_role(
    name: str,
    username: Annotated[str, typer.Option(help="the account's name")],
    role: Annotated[str, typer.Option(help="READONLY, READWRITE or SUPERUSER")],
    wait: Wait = None,
) -> None:
    """Grant READONLY, READWRITE or SUPERUSER to an account."""
    parameters = {"cluster": name, "username": username, "role": role}
    flowio.granted(role, username, runner.run("grant-role", wait, **parameters))


@app.command()
def connect(
    name: str,
    as_user: Annotated[str | None, typer.Option(help="log in as this account (password)")] = None,
    dbname: Annotated[str, typer.Option()] = "postgres",
) -> None:
    """Open psql on a cluster: as the administrator over the socket, or as an account."""
    cluster = Cluster.get(name)
    cluster.require_running()
    psql = str(cluster.bindir / "psql")
    # as the server's OS user for a registered server: its own peer authentication
    user = None if as_user else cluster.client_user
    if as_user:
        argv = [
            psql,
            "--host",
            "127.0.0.1",
            "--port",
            str(cluster.state.port),
            "--username",
            as_user,
            "--dbname",
            dbname,
        ]
    else:
        argv = [psql, *cluster.client_options(), "--dbname", dbname]
    sys.stdout.flush()
    identity = {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}
    if not sys.stdin.isatty():
        raise typer.Exit(subprocess.call(argv, **identity))
    if user:
        os.setgroups([])
        os.setgid(user.gid)
        os.setuid(user.uid)
    os.execv(psql, argv)


@app.command("verify-backup")
def verify_backup(
    name: str,
    backup: Annotated[str, typer.Option("--name", help="the backup to verify")],
) -> None:
    """Read a backup and its WAL back in full and check every checksum."""
    from pgpitr.operations import verify

    console.info(verify.verify_backup(name, backup))


def _now() -> datetime:
    return datetime.now(UTC)


__all__ = ["app", "NotFound"]
