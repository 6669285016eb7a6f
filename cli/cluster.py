"""``pgpitr cluster …``: the kbcli-like commands of the local platform."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from cli import console, flowio, reads, runner, views
from pgpitr import policy_store
from pgpitr.catalog import restore_points
from pgpitr.errors import NotFound
from pgpitr.operations import describe as description
from pgpitr.postgres.cluster import Cluster

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
    # bad input fails at once, not as a failed flow run (nor starts a Prefect server)
    parameters = flowio.create_parameters(name, port, backup_repo, version, bindir)
    flowio.created(runner.run("create-cluster", wait, **parameters))


@app.command()
def register(
    name: str,
    pgdata: Annotated[
        str | None, typer.Option(help="its data directory, or Debian's /etc/postgresql/N/NAME")
    ] = None,
    patroni: Annotated[
        str | None,
        typer.Option(
            help="a Patroni member's REST API (http://HOST:8008): the whole HA cluster, its "
            "members found from there; credentials from PATRONI_RESTAPI_USERNAME/PASSWORD"
        ),
    ] = None,
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
    """Protect a PostgreSQL server that already runs (its data stays where it is), or a Patroni
    cluster (--patroni): archiving set through Patroni, backups from a standby."""
    from pgpitr.operations.register import RegisterRequest
    from pgpitr.patroni.api import PASSWORD_ENV, USERNAME_ENV, Credentials

    # what needs no server (name, path, bindir's major) fails at once, not as a failed run
    request = RegisterRequest.parse(
        name, pgdata, bindir, socket_dir, port, os_user, backup_repo, restart, patroni
    )
    secret = {}
    if patroni and Credentials.from_environment():  # reaches the flow, never as a parameter
        secret = {key: os.environ[key] for key in (USERNAME_ENV, PASSWORD_ENV)}
    result = runner.run(
        "register-cluster", wait, environment=secret or None, **request.as_parameters()
    )
    flowio.registered(result)


@app.command()
def unregister(name: str, wait: Wait = None) -> None:
    """Stop protecting a registered server: its settings put back, its backups kept."""
    from pgpitr.operations.unregister import check_registered

    check_registered(name)
    flowio.unregistered(name, runner.run("unregister-cluster", wait, name=name))


@app.command("list")
def list_(output: Output = "table") -> None:
    """List clusters: TYPE is Created (pgpitr runs it) or Registered (someone else's server)."""
    views.check_output(output)
    views.clusters(reads.cluster_rows(), output)


Force = Annotated[bool, typer.Option(help="also a registered server (someone else's)")]


@app.command()
def start(name: str, force: Force = False, wait: Wait = None) -> None:
    """Start a cluster."""
    Cluster.get(name)  # an unknown name fails at once, not as a failed flow run
    runner.run("start-cluster", wait, name=name, force=force)


@app.command()
def stop(name: str, force: Force = False, wait: Wait = None) -> None:
    """Stop a cluster (fast shutdown); the agent leaves it stopped until `start`."""
    Cluster.get(name)
    runner.run("stop-cluster", wait, name=name, force=force)


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
    from pgpitr.operations import backup as bk

    # an unknown name, type or parent, or a server too old, fails here, not as a failed run
    request = bk.BackupRequest(name, backup_name, type_, parent)
    request.check()
    flowio.backed_up(runner.run("backup", wait, progress="backup", **request.parameters()))


@app.command("list-backup")
def list_backup(
    name: Annotated[str | None, typer.Argument()] = None,
    output: Output = "table",
    backup_repo: BackupRepo = None,
) -> None:
    """List backups (of one cluster, or of all): TYPE Full or Incremental, an incremental's
    PARENT, and why a backup cannot be restored when its lineage is broken."""
    views.check_output(output)
    if backup_repo:
        from pgpitr.operations import info as repo_info

        rows = repo_info.backup_rows(flowio.repository_url(backup_repo), name)
    else:
        rows = reads.backup_rows([name] if name else [c.name for c in Cluster.all()])
    views.backups(rows, output)


@app.command()
def describe(name: str, output: Output = "table", backup_repo: BackupRepo = None) -> None:
    """Show a cluster and its data protection: schedule, TTL, recoverable window; with
    --backup-repo, what that repository holds of it (a deleted cluster's backups)."""
    views.check_output(output)
    kept = None if backup_repo else reads.kept_for_members(name)
    if backup_repo or kept is not None:
        from pgpitr.operations import info as repo_info

        url = kept or flowio.repository_url(backup_repo)
        stanza = repo_info.describe_stanza(url, name)
        if stanza["host"]:  # another host's cluster: is its agent there?
            stanza.update(runner.host_fields(name, stanza["host"]))
        views.stanza(stanza, output)
        return
    found = description.describe(reads.known(name))
    schedule = runner.schedule_fields(name, policy_store.load_policy(Cluster.get(name)))
    views.described(found, schedule, output)


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

    request = dr.DrillRequest.parse(name, at)
    Cluster.get(name)  # an unknown name or a bad time fails at once, not as a failed run
    result = runner.run("drill", wait, **request.parameters())
    if result is not runner.NO_RESULT:
        console.info(result.summary())


@app.command("list-drill")
def list_drill(name: str, output: Output = "table") -> None:
    """List a cluster's drills, newest first."""
    from pgpitr.operations import drill as dr

    views.check_output(output)
    views.drills(dr.list_drills(Cluster.get(name)), output)


RestoreToTime = Annotated[
    str | None,
    typer.Option(
        help='a time: "Apr 17,2023 19:56:40 UTC+0800", RFC 3339, "2023-04-17 19:56:40 '
        'Asia/Shanghai", or latest (the default: the end of the archived WAL)'
    ),
]
RestoreToLsn = Annotated[
    str | None, typer.Option(help="a WAL position, e.g. 0/3000028 (pg_current_wal_lsn())")
]
RestoreToXid = Annotated[
    str | None,
    typer.Option(help="up to the commit of this transaction id (txid_current(), or a row's xmin)"),
]
RestoreToName = Annotated[
    str | None, typer.Option(help="a restore point made by create-restore-point")
]
SourceCluster = Annotated[str, typer.Option(help="the cluster whose backups to use")]
BackupName = Annotated[str | None, typer.Option(help="use this backup")]
SourceRepo = Annotated[str | None, typer.Option(help="repository of a deleted source cluster")]
RestoreBindir = Annotated[
    str | None,
    typer.Option(help="binaries for the restored server (default: of the backup's major)"),
]


@app.command()
def restore(
    new_name: Annotated[str, typer.Argument(metavar="NEW-CLUSTER")],
    source_cluster: SourceCluster,
    restore_to_time: RestoreToTime = None,
    restore_to_lsn: RestoreToLsn = None,
    restore_to_xid: RestoreToXid = None,
    restore_to_name: RestoreToName = None,
    restore_to_immediate: Annotated[
        bool, typer.Option(help="stop as soon as the backup is consistent: its content only")
    ] = False,
    exclusive: Annotated[
        bool,
        typer.Option(help="stop just before the time, LSN or xid (default: just after it)"),
    ] = False,
    backup: BackupName = None,
    backup_repo: SourceRepo = None,
    bindir: RestoreBindir = None,
    wait: Wait = None,
    host: Annotated[
        str | None, typer.Option(help="make the new cluster on this host, run by its agent")
    ] = None,
) -> None:
    """Restore SOURCE into a new cluster at one target (at most one --restore-to-*; none:
    latest), on another host with --host.  Every target is checked before anything is made."""
    target = flowio.restore_target(
        restore_to_time,
        restore_to_lsn,
        restore_to_xid,
        restore_to_name,
        restore_to_immediate,
        exclusive,
    )
    parameters = flowio.restore_parameters(
        new_name, source_cluster, target, backup, backup_repo, host, bindir=bindir
    )
    if host:
        wait = True if wait is None else wait
        parameters["host"] = host  # runner.run: through that host's deployment
    result = runner.run("restore", wait, progress="restore", **parameters)
    flowio.restored(new_name, result)


@app.command("bootstrap-patroni")
def bootstrap_patroni(
    scope: Annotated[str, typer.Option(help="the Patroni cluster's scope (Patroni passes it)")],
    datadir: Annotated[
        str, typer.Option(help="the data directory to fill, absent or empty (Patroni passes it)")
    ],
    source_cluster: SourceCluster,
    restore_to_time: RestoreToTime = None,
    restore_to_lsn: RestoreToLsn = None,
    restore_to_xid: RestoreToXid = None,
    restore_to_name: RestoreToName = None,
    # values, not flags: Patroni passes every key of its bootstrap section as --key=value
    restore_to_immediate: Annotated[
        str | None,
        typer.Option(help="true: stop as soon as the backup is consistent", metavar="BOOL"),
    ] = None,
    exclusive: Annotated[
        str | None,
        typer.Option(help="true: stop just before the time, LSN or xid", metavar="BOOL"),
    ] = None,
    backup: BackupName = None,
    backup_repo: SourceRepo = None,
    bindir: RestoreBindir = None,
) -> None:
    """Patroni's custom bootstrap (bootstrap.method): restore SOURCE into DATADIR, a new
    cluster's leader.  The restore runs into a temporary cluster named after SCOPE, with every
    check of `restore`, which is then forgotten; a failure leaves neither behind."""
    target = flowio.restore_target(
        restore_to_time,
        restore_to_lsn,
        restore_to_xid,
        restore_to_name,
        flowio.flag_value("--restore-to-immediate", restore_to_immediate),
        flowio.flag_value("--exclusive", exclusive),
    )
    name = flowio.bootstrap_name(scope)
    parameters = flowio.restore_parameters(
        name, source_cluster, target, backup, backup_repo, None, bindir=bindir, into_datadir=datadir
    )
    flowio.handed_over(runner.run("restore", None, progress="restore", **parameters))


@app.command("create-restore-point")
def create_restore_point(
    name: Annotated[str, typer.Argument(metavar="CLUSTER")],
    point: Annotated[str, typer.Option("--name", help="the restore point's name")],
    wait: Wait = None,
) -> None:
    """Create a named restore point (pg_create_restore_point) to restore to with
    --restore-to-name; it is restorable once its WAL is archived (archive_timeout)."""

    restore_points.validate_name(point)
    cluster = Cluster.get(name)  # an unknown name fails at once, not as a failed flow run
    if not cluster.state.is_ha:  # an HA cluster's primary may run on another host: the run asks
        cluster.require_running()
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
    views.check_output(output)
    views.policies(reads.policy_rows(), output)


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
    from cli import psql

    psql.connect(Cluster.get(name), as_user, dbname)


@app.command("verify-backup")
def verify_backup(
    name: str,
    backup: Annotated[str, typer.Option("--name", help="the backup to verify")],
    wait: Wait = None,
) -> None:
    """Read a backup and its WAL back in full and check every checksum."""
    Cluster.get(name)  # an unknown name fails at once, not as a failed flow run
    report = runner.run("verify-backup", wait, cluster=name, name=backup)
    if report is not runner.NO_RESULT:
        console.info(report)


__all__ = ["app", "NotFound"]
