"""``pgpitr cluster connect``: psql on a cluster, given the terminal."""

from __future__ import annotations

import os
import subprocess
import sys

import typer

from pgpitr.postgres import command
from pgpitr.postgres.cluster import Cluster


def connect(cluster: Cluster, as_user: str | None, dbname: str) -> None:
    """psql as the administrator over the socket, or as the account AS_USER over TCP (psql
    asks for its password: never in argv).  On a terminal psql replaces this process, so that
    signals and the terminal are its own; off one (a pipe, a script) it runs as a child and
    its exit code is this command's."""
    cluster.require_running()
    # as the server's OS user for a registered server: its own peer authentication
    user = None if as_user else cluster.client_user
    connection = (
        command.client_options("127.0.0.1", cluster.state.port, as_user)
        if as_user
        else cluster.client_options()
    )
    argv = command.psql_command(cluster.bindir, connection, dbname)
    sys.stdout.flush()
    identity = {"user": user.uid, "group": user.gid, "extra_groups": []} if user else {}
    if not sys.stdin.isatty():
        raise typer.Exit(subprocess.call(argv, **identity))
    if user:
        os.setgroups([])
        os.setgid(user.gid)
        os.setuid(user.uid)
    os.execv(argv[0], argv)
