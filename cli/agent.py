"""``pgpitr agent``: the long-running process of this host, serving its deployments."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

import typer

from cli import console
from deployments import agent

app = typer.Typer(help="The agent of this host: serves its clusters' scheduled and started runs.")

Output = Annotated[Literal["table", "json"], typer.Option("--output", "-o")]
Limit = Annotated[
    int | None,
    typer.Option(
        help="at most this many flow runs at once (default: PGPITR_AGENT_CONCURRENCY, or "
        "twice the cores, at least 4)"
    ),
]
MetricsPort = Annotated[
    str | None,
    typer.Option(
        help="Prometheus metrics port on 127.0.0.1 (PGPITR_METRICS_PORT; default 10187; 0 or "
        "off: none)"
    ),
]


@app.command()
def run(limit: Limit = None, metrics_port: MetricsPort = None) -> None:
    """Serve this host's deployments in the foreground (for systemd and containers): schedules
    from the backup policies, runs started from the UI, the API or `pgpitr cluster … --wait`;
    and its clusters' Prometheus metrics."""
    if metrics_port is not None:
        from pgpitr import metrics

        os.environ[metrics.PORT_ENV] = metrics_port  # the agent reads it where it starts them
    raise typer.Exit(agent.run(limit=limit))


@app.command()
def start() -> None:
    """Start the agent in the background (pidfile and log under PGPITR_HOME/agent)."""
    pid, started = agent.start()
    if started:
        console.info(
            f"agent of host {agent.state.this_host()} started (pid {pid}, log {agent.logfile()})"
        )
    else:
        console.info(f"the agent is already running (pid {pid})")


@app.command()
def stop() -> None:
    """Stop the background agent (runs in progress are cancelled with it)."""
    pid = agent.stop()
    console.info("no agent is running" if pid is None else f"agent stopped (pid {pid})")


@app.command()
def status(output: Output = "table") -> None:
    """Whether this host's agent runs, and whether the Prefect API sees its deployments polled."""
    now = agent.status()
    if output == "json":
        console.as_json(now.as_dict())
        return
    rows = [
        ("HOST", now.host),
        ("HOME", now.home),
        ("AGENT", f"running (pid {now.pid})" if now.running else "not running here"),
        ("MEMORY", f"{now.resident_bytes / 2**20:.0f} MiB resident" if now.resident_bytes else ""),
        ("DEPLOYMENT", now.deployment),
        ("STATUS", now.deployment_status or "unknown"),
        ("LAST-POLLED", now.last_polled or ""),
        ("LOG", now.log),
    ]
    console.table(("FIELD", "VALUE"), rows)


@app.command("install-service")
def install_service(
    directory: Annotated[
        Path | None,
        typer.Option("--dir", help="where to write the units (default: systemd's for this user)"),
    ] = None,
) -> None:
    """Write systemd units: the agent, and the local Prefect server when pgpitr runs one."""
    from deployments.services import next_steps, write

    for path in write(directory):
        console.out.print(str(path))
    console.info(next_steps(directory))
