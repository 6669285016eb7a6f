"""``pgpitr server``: the local Prefect server pgpitr starts and keeps (deployments/localserver)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from cli import console
from deployments import agent, localserver, serverdb
from deployments.api import configured_url

app = typer.Typer(help="The local Prefect server pgpitr uses when none is configured.")

Output = Annotated[Literal["table", "json"], typer.Option("--output", "-o")]


def _show(output: str) -> None:
    now = localserver.status()
    fields = now.as_dict()
    configured = configured_url()
    if configured:
        fields["in_use"] = f"no: the configured Prefect API is {configured}"
    if output == "json":
        console.as_json(fields)
        return
    state = "answering" if now.answering else "not running"
    if now.answering and not now.managed:
        state += " (not started by pgpitr)"
    rows = [
        ("API", now.url),
        ("UI", now.url.removesuffix("/api")),
        ("STATE", state),
        ("PID", now.pid or ""),
        ("DATABASE", now.database),
        ("LOG", now.log),
        ("PROFILE", now.profile or "(not written yet)"),
    ]
    if configured:
        rows.append(("IN USE", fields["in_use"]))
    console.table(("FIELD", "VALUE"), rows)


@app.command()
def status(output: Output = "table") -> None:
    """Whether the local Prefect server runs, its pid, port, database and log."""
    _show(output)


@app.command()
def start(output: Output = "table") -> None:
    """Start the local Prefect server now (the first command that needs it does otherwise)."""
    _, started = localserver.ensure()
    if not started:
        console.info("the local Prefect server was already running")
    _show(output)


@app.command()
def run() -> None:
    """Run the local Prefect server in the foreground (its systemd unit), with its credentials."""
    localserver.run_foreground()


@app.command()
def stop() -> None:
    """Stop the local Prefect server pgpitr started (its database stays for the next start)."""
    pid = localserver.stop()
    if pid is None:
        console.info("no local Prefect server started by pgpitr is running")
    else:
        console.info(f"stopped the local Prefect server (pid {pid})")
    if agent.status_pid() is not None:
        console.info(
            "note: this home's agent is running and starts the server again when it serves "
            "next; stop it first with `pgpitr agent stop`"
        )


@app.command("use-postgresql")
def use_postgresql(
    cluster: Annotated[
        str | None,
        typer.Option(help="a running cluster of this host: a role and a database prefect on it"),
    ] = None,
    url_file: Annotated[
        str | None,
        typer.Option(
            help="a file (0600) or - (standard input) holding "
            "postgresql+asyncpg://USER:PASSWORD@HOST:PORT/DATABASE"
        ),
    ] = None,
) -> None:
    """Keep the local Prefect server's data in PostgreSQL (Prefect's choice for production)
    instead of SQLite; the server is started on it, empty: the agents make their deployments
    again when they next serve."""
    from pgpitr.errors import InvalidInput

    if (cluster is None) == (url_file is None):
        raise InvalidInput("give one of --cluster and --url-file")
    url = (
        serverdb.make_on_cluster(cluster)
        if cluster
        else serverdb.check_url(serverdb.read_secret_file(url_file or "-"))
    )
    localserver.use_database(url)
    console.info(f"the local Prefect server keeps its data in {serverdb.shown(url)}")
    if agent.status_pid() is not None:
        console.info(
            "restart this home's agent (`pgpitr agent stop; pgpitr agent start`): it makes its "
            "deployments on the new database when it starts serving"
        )


@app.command()
def connect(
    api: Annotated[str, typer.Argument(help="the server's API: http://HOST:PORT/api")],
    credentials_file: Annotated[
        str,
        typer.Option(
            help="a file (0600) or - (standard input) holding the server's auth string "
            "(USER:SECRET, its PGPITR_HOME/prefect/api-credentials)"
        ),
    ] = "-",
) -> None:
    """Use another host's Prefect server (a fleet: one server, an agent per host): checks that
    it answers and takes the credentials, then makes it the active Prefect profile
    (pgpitr-remote), which pgpitr, its agent and `prefect` use from then on."""
    from pgpitr.errors import InvalidInput

    secret = serverdb.read_secret_file(credentials_file).strip()
    if not secret:
        raise InvalidInput(f"no auth string in {credentials_file}")
    localserver.connect(api, secret)
    console.info(
        f"this host uses the Prefect server at {api} (profile {localserver.REMOTE_PROFILE} in "
        f"{localserver.profiles_path()}); start its agent with `pgpitr agent start`"
    )
