"""What goes into a flow from the command line, and the line a person reads about what came out.

Kept apart from the commands so that each command stays a few lines: parse, run the flow
(cli/runner.py), report.  Every report is silent when the result is elsewhere
(``runner.NO_RESULT``: queued with --no-wait, or completed where its result is kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer

from cli import console, progress, runner
from pgpitr import policy as pol
from pgpitr import policy_store, timeparse
from pgpitr.errors import AlreadyExists, InvalidInput
from pgpitr.operations import edit_policy
from pgpitr.postgres.cluster import Cluster
from pgpitr.repository.url import RepositoryUrl

if TYPE_CHECKING:  # pydantic, which it needs, is imported by the commands that restore only
    from pgpitr.targets import RestoreTarget

POLICY_SUFFIX = "-postgresql-backup-policy"


def repository_url(text: str | None) -> RepositoryUrl | None:
    """A --backup-repo value checked here, before any flow runs."""
    return RepositoryUrl.parse_optional(text)


def url_parameter(url: RepositoryUrl | None) -> str | None:
    """A repository as a flow parameter: its normalised text (flow parameters are JSON)."""
    return None if url is None else str(url)


def create_parameters(
    name: str, port: int | None, backup_repo: str | None, version: int | None, bindir: str | None
) -> dict[str, Any]:
    """The create-cluster flow's parameters: a bad name, a name taken, a bad repository URL or
    key file, or no binaries of that version fail here, before any run."""
    from pgpitr import cluster_repository
    from pgpitr.postgres import binaries
    from pgpitr.postgres.cluster import validate_name
    from pgpitr.state import clusters_dir

    validate_name(name)
    if (clusters_dir() / name).exists():
        raise AlreadyExists(f"cluster {name!r} already exists", hint="choose another name")
    url = repository_url(backup_repo)
    cluster_repository.check_new_cluster_key(url)  # an encrypted repository's key file
    bindir = str(binaries.resolve(version, bindir))
    return {"name": name, "port": port, "backup_repo": url_parameter(url), "bindir": bindir}


def restore_target(
    time: str | None,
    lsn: str | None,
    xid: str | None,
    name: str | None,
    immediate: bool,
    exclusive: bool,
) -> RestoreTarget:
    """The --restore-to-* options read into one checked target: a typo or two targets fail
    here, before any flow runs."""
    from pgpitr.targets import RestoreTarget

    return RestoreTarget.of(
        time=time, lsn=lsn, xid=xid, name=name, immediate=immediate, inclusive=not exclusive
    )


def flag_value(option: str, text: str | None) -> bool:
    """A yes/no option given as a value (``--exclusive=true``; YAML's true arrives as True)."""
    if text is None:
        return False
    word = text.strip().lower()
    if word in ("true", "yes", "on", "1"):
        return True
    if word in ("false", "no", "off", "0", ""):
        return False
    raise InvalidInput(f"{option} takes true or false, not {text!r}")


def bootstrap_name(scope: str) -> str:
    """The temporary cluster of a Patroni bootstrap: named after the scope, which must make a
    cluster name that is free on this host."""
    from pgpitr.postgres.cluster import validate_name
    from pgpitr.state import clusters_dir

    try:
        validate_name(scope)
    except InvalidInput as exc:
        raise InvalidInput(
            f"the Patroni scope {scope!r} cannot name the bootstrap's temporary cluster: "
            f"{exc.message}",
            hint="use a scope that is a valid pgpitr cluster name",
        ) from None
    if (clusters_dir() / scope).exists():
        raise AlreadyExists(
            f"a pgpitr cluster named {scope!r} exists on this host; the bootstrap's temporary "
            "cluster takes the scope's name",
            hint="use another scope, or delete or unregister that cluster first",
        )
    return scope


def restore_parameters(
    new_name: str,
    source_cluster: str,
    target: RestoreTarget,
    backup: str | None,
    backup_repo: str | None,
    host: str | None,
    *,
    bindir: str | None = None,
    into_datadir: str | None = None,
) -> dict[str, Any]:
    """The restore flow's parameters, ``target`` a checked RestoreTarget.  Here, a bad name, a
    wrong or missing encryption key, or a data directory to hand over that cannot take the data
    fail before any run; for another host, the source's repository is named (that host reads
    it)."""
    from pgpitr.catalog import source as catalog_source
    from pgpitr.operations.restore import RestoreRequest

    RestoreRequest(new_name, source_cluster, target, backup, backup_repo, bindir, into_datadir)
    url = repository_url(backup_repo)
    if into_datadir:
        from pgpitr.operations.restore.handover import check_into_datadir

        check_into_datadir(into_datadir)
    if not host:
        source = catalog_source.resolve_source(source_cluster, url)
        catalog_source.check_key(source.open(), source.cluster)
    if host and url is None:
        url = catalog_source.resolve_source(source_cluster).repository
    parameters = {
        "new_name": new_name,
        "source_cluster": source_cluster,
        "target": target.as_parameter(),  # JSON: the same through a deployment
        "backup_name": backup,
        "backup_repo": url_parameter(url),
        "bindir": bindir,
    }
    if into_datadir:
        parameters["into_datadir"] = into_datadir
    return parameters


def created(result: Any) -> None:
    if result is not runner.NO_RESULT:
        console.info(
            f"cluster {result['name']} created: PostgreSQL {result.get('pg_version', '?')}, "
            f"port {result['port']}, "
            f"repository {result['repository']}"
        )


def registered(result: Any) -> None:
    if result is runner.NO_RESULT:
        return
    console.info(
        f"cluster {result['name']} registered: {result['datadir']} (PostgreSQL "
        f"{result['pg_version']}, port {result['port']})"
        + ("; restarted to turn archive_mode on" if result["restarted"] else "")
    )
    if result.get("members"):
        console.info(
            f"Patroni cluster {result['patroni_scope']}: members {', '.join(result['members'])}; "
            "archive settings are in its dynamic configuration, so every primary archives"
        )
    if result.get("member_hosts"):
        console.info(
            f"kept on host(s) {', '.join(result['member_hosts'])} too, for their members: "
            "their agents archive when one of those is primary"
        )
    before = ", ".join(f"{key}={old['value']!r}" for key, old in result["previous"].items())
    console.info(f"settings before registration (`unregister` puts them back): {before}")


def unregistered(name: str, result: Any) -> None:
    if result is runner.NO_RESULT:
        return
    console.info(
        f"cluster {name} unregistered: settings put back, the server runs on; its backups "
        "remain (see list-backup, delete-backup)"
    )
    for note in result["notes"]:
        console.info(note)


def deleted_cluster(name: str, result: Any) -> None:
    if result is not runner.NO_RESULT:
        console.info(f"cluster {name} deleted; its backups remain (see list-backup, delete-backup)")


def backed_up(manifest: Any) -> None:
    if manifest is not runner.NO_RESULT:
        console.info(
            f"backup {manifest.name} completed: {progress.size(manifest.database_size)} "
            f"of data, {progress.size(manifest.stored_size)} stored, "
            f"{timeparse.format_duration(manifest.duration_seconds or 0)}"
        )


def restored(new_name: str, result: Any) -> None:
    if result is runner.NO_RESULT:
        return
    last = result.last_commit
    shown = timeparse.format_kbcli(last) if last else "none"
    stopped = getattr(result, "stopped", "")
    console.info(
        f"cluster {new_name} restored from backup {result.backup} "
        f"(timeline {result.timeline}); recovery stopped {stopped or '?'}; "
        f"last replayed commit: {shown}"
    )


def handed_over(result: Any) -> None:
    """One line for Patroni's log: what was restored, from which backup, where recovery
    stopped, and into which data directory."""
    if result is runner.NO_RESULT:
        return
    last = timeparse.format_kbcli(result.last_commit) if result.last_commit else "none"
    console.info(
        f"restored {result.target.describe()} from backup {result.backup} into "
        f"{result.into_datadir} (timeline {result.timeline}); recovery stopped "
        f"{result.stopped or '?'}; last replayed commit: {last}"
    )


def restore_point_created(cluster: str, point: Any) -> None:
    if point is runner.NO_RESULT:
        return
    console.info(
        f"restore point {point.name} of {cluster} created at LSN {point.lsn} (timeline "
        f"{point.timeline}, {timeparse.format_kbcli(point.time)}); restorable with "
        f"--restore-to-name {point.name} once its WAL is archived (within archive_timeout)"
    )


def deleted_backups(cluster: str, result: Any) -> None:
    if result is not runner.NO_RESULT:
        names = ", ".join(result["removed"]) or "no backup"
        console.info(
            f"{cluster}: removed {names} and {result['wal_files']} WAL file(s) "
            f"({len(result['removed'])} backup(s))"
        )
        for dependent, base in result.get("dependents", {}).items():
            console.info(f"{cluster}: also removed {dependent}: it depended on {base}")


def granted(role: str, username: str, result: Any) -> None:
    if result is not runner.NO_RESULT:
        console.info(f"granted {role.upper()} to {username}")


def policy_change(policy_name: str, settings: list[str] | None) -> dict[str, Any] | None:
    """The edit-backup-policy flow's parameters: the --set values, or the policy as edited in
    $EDITOR (None when nothing changed).  Checked here too, so a typo fails before any run."""
    if not policy_name.endswith(POLICY_SUFFIX):
        raise InvalidInput(
            f"{policy_name!r} is not a policy name like my-pg{POLICY_SUFFIX}",
            hint="see `pgpitr cluster list-backup-policy`",
        )
    cluster = Cluster.get(policy_name[: -len(POLICY_SUFFIX)])
    current = policy_store.load_policy(cluster)
    if settings:
        edit_policy.read_policy_change(cluster.name, settings, None)  # the flow's own check
        return {"cluster": cluster.name, "settings": settings}
    edited = typer.edit(pol.to_yaml(current), extension=".yaml")
    if edited is None or edited.strip() == pol.to_yaml(current).strip():
        return None
    policy = pol.to_dict(pol.from_yaml(edited, current))
    edit_policy.read_policy_change(cluster.name, None, policy)
    return {"cluster": cluster.name, "policy": policy}


def policy_updated(policy_name: str, result: Any) -> None:
    if result is runner.NO_RESULT:
        return
    if result is None:
        console.info("no change")
        return
    console.info(f"backup policy {policy_name} updated")
    deployed = [line for line in result["schedules"] if not line.endswith(": not deployed")]
    for line in deployed:
        console.info(f"  schedule {line}")
    if not deployed:
        console.info("  schedules: not deployed yet (`pgpitr serve` creates them from this policy)")
