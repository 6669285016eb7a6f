"""systemd units for the agent, and for the local Prefect server when pgpitr runs one:
``pgpitr agent install-service [--dir DIR]``.

The units carry what this shell has (PGPITR_HOME, PGPITR_HOST, the Prefect API or the local
server's port, the metrics' settings when set), so that the service acts for the same home and
host as the commands.  Written only; enabling them is the user's step (printed), as is stopping
a daemon started by hand.

Written by root, the system units run as pgpitr's service account (``User=``), never as root,
from the installed package in isolated mode (``python -I``).  The server's unit runs ``pgpitr
server run``, which reads the API credentials from their 0600 file as the account itself: no
secret is in a unit file (those are world-readable), and systemd reads nothing the account
writes.  The created clusters have no unit of their own: the agent starts them when it starts
(deployments/agent.py), and ``KillMode=process`` leaves them running when the agent stops.
"""

from __future__ import annotations

import grp
import os
import re
import sys
from pathlib import Path

from deployments import localserver
from deployments.api import configured_url
from pgpitr import metrics, state
from pgpitr.errors import InvalidInput

AGENT_UNIT = "pgpitr-agent.service"
SERVER_UNIT = "pgpitr-prefect-server.service"


def default_directory() -> Path:
    if os.geteuid() == 0:
        return Path("/etc/systemd/system")
    config = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(config, "systemd", "user")


def _system() -> bool:
    return os.geteuid() == 0


def _service_lines() -> str:
    """User= and Group= of the service account for system units (a user unit is its user's)."""
    if not _system():
        return ""
    from pgpitr.privilege import make_service_account

    account = make_service_account()
    group = grp.getgrgid(account.gid).gr_name
    return f"User={account.name}\nGroup={group}\n"


def _metrics_settings() -> list[str]:
    """The metrics' settings this shell sets, parsed (a value that is no port, address or
    number of seconds is refused here rather than written into a unit as a line of its own)."""
    if not any(os.environ.get(n) for n in (metrics.PORT_ENV, metrics.ADDRESS_ENV)) and not (
        os.environ.get(metrics.REFRESH_ENV)
    ):
        return []
    port, address, interval = metrics.settings()
    if not re.fullmatch(r"[A-Za-z0-9.:-]+", address):
        raise InvalidInput(
            f"{metrics.ADDRESS_ENV}={address!r} is not an address", hint="e.g. 127.0.0.1 or ::1"
        )
    return [
        f"{metrics.PORT_ENV}={port if port is not None else 'off'}",
        f"{metrics.ADDRESS_ENV}={address}",
        f"{metrics.REFRESH_ENV}={interval:g}",
    ]


def units() -> dict[str, str]:
    """Unit name → text: the agent's, and the local server's when no API is configured."""
    home, host = state.home(), state.this_host()
    identity = _service_lines()
    api = configured_url()
    wanted_by = "multi-user.target" if _system() else "default.target"
    made: dict[str, str] = {}
    environment = [f"PGPITR_HOME={home}", f"PGPITR_HOST={host}"]
    after = "network-online.target"
    wants = "network-online.target"
    if api is None:
        api = localserver.url()
        port = localserver.port()
        listens = localserver.url().removesuffix("/api")
        made[SERVER_UNIT] = f"""[Unit]
Description=Prefect server of pgpitr on {listens} (database {localserver.database()})
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
{identity}WorkingDirectory={home}
Environment=PGPITR_HOME={home}
Environment={localserver.PORT_ENV}={port}
Environment={localserver.ADDRESS_ENV}={localserver.address()}
ExecStart={sys.executable} -I -m pgpitr server run
Restart=always
RestartSec=5
TimeoutStopSec=30

[Install]
WantedBy={wanted_by}
"""
        after += f" {SERVER_UNIT}"
        wants += f" {SERVER_UNIT}"
    environment.append(f"PREFECT_API_URL={api}")
    environment += _metrics_settings()
    lines = "\n".join(f"Environment={e}" for e in environment)
    made[AGENT_UNIT] = f"""[Unit]
Description=pgpitr agent of host {host}: serves its clusters' Prefect deployments
After={after}
Wants={wants}

[Service]
Type=simple
{identity}WorkingDirectory={home}
{lines}
ExecStart={sys.executable} -I -m pgpitr agent run
# the agent stops its serving process itself on SIGTERM; the clusters it started keep running
KillMode=process
TimeoutStopSec=60
Restart=always
RestartSec=5

[Install]
WantedBy={wanted_by}
"""
    return made


def write(directory: Path | None = None) -> list[Path]:
    target = directory or default_directory()
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in units().items():
        path = target / name
        path.write_text(text)
        written.append(path)
    return written


def next_steps(directory: Path | None = None) -> str:
    names = " ".join(reversed(list(units())))
    flag = "" if _system() else " --user"
    where = "" if directory is None else f" (copy them into {default_directory()} first)"
    return (
        f"to run them{where}: `pgpitr agent stop; pgpitr server stop; "
        f"systemctl{flag} daemon-reload; systemctl{flag} enable --now {names}`"
    )
