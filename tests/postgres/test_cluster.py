"""pgpitr/postgres/cluster.py on a real server: a port pgpitr chose and someone else took
before the start is moved, never fought over; a port the user chose is not moved."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import pytest

from pgpitr.errors import ClusterStateError
from pgpitr.postgres import conf
from pgpitr.postgres.cluster import Cluster
from tests.conftest import PG_BINDIR


def _prepared(name: str) -> Cluster:
    cluster = Cluster.prepare(
        name, port=None, repository="file:///tmp/x", created="", bindir=PG_BINDIR
    )
    cluster.initdb()
    cluster.configure(archive=conf.archive_command(Path(cluster.state.home), name, False))
    return cluster


def _occupy(port: int) -> contextlib.AbstractContextManager:
    """Take the port, as another process would; on a busy machine another one may have
    already (the same situation)."""
    holder = socket.socket()
    try:
        holder.bind(("127.0.0.1", port))
    except OSError:
        holder.close()
        return contextlib.nullcontext()
    holder.listen()
    return holder


def test_a_taken_chosen_port_is_moved_to_a_free_one(home: Path) -> None:
    cluster = _prepared("mover")
    taken = cluster.state.port
    with _occupy(taken):
        cluster.start(move_if_port_taken=True)
        try:
            moved = Cluster.get("mover")
            assert moved.is_running() and moved.state.port != taken
            assert f"port = {moved.state.port}" in (moved.state.datadir / conf.MANAGED).read_text()
        finally:
            cluster.stop()


def test_a_taken_port_is_not_moved_unless_asked(home: Path) -> None:
    cluster = _prepared("stayer")
    taken = cluster.state.port
    with _occupy(taken):
        with pytest.raises(ClusterStateError, match="did not start"):
            cluster.start()
    assert Cluster.get("stayer").state.port == taken and not cluster.is_running()
