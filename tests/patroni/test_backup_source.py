"""Which member a backup reads (``backup.source``), chosen from what Patroni says of the
members (no server: the members' data directories are directories of the test's own)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pgpitr.errors import ClusterStateError
from pgpitr.operations.backup import source
from pgpitr.patroni.members import Member
from pgpitr.postgres.cluster import Cluster
from pgpitr.state import ClusterState


def _cluster(tmp_path: Path, members: list[Member], problem: str = "") -> Cluster:
    placements = []
    for m in members:
        (tmp_path / m.name).mkdir()
        placements.append(
            {
                "name": m.name,
                "port": m.port,
                "datadir": str(tmp_path / m.name),
                "socket_dir": str(tmp_path),
                "server_log": "",
            }
        )
    primary = next(m for m in members if m.is_primary)
    state = ClusterState(
        name="pgha",
        platform="local",
        port=primary.port,
        repository=f"file://{tmp_path}/repo",
        bindir="/usr/lib/postgresql/15/bin",
        os_user="postgres",
        registered=True,
        pgdata=str(tmp_path / primary.name),
        patroni_url="http://127.0.0.1:8008",
        members=placements,
        home=str(tmp_path),
    )
    cluster = Cluster(state)
    cluster.members = members
    cluster.ha_problem = problem
    return cluster


def _member(name: str, role: str, state: str, port: int, lag: int | None = 0) -> Member:
    return Member(name, role, state, "127.0.0.1", port, f"http://127.0.0.1:{port + 1000}", 3, lag)


PRIMARY = _member("pg1", "primary", "running", 5432, None)


def test_prefer_standby_reads_the_least_behind_streaming_standby(tmp_path: Path) -> None:
    members = [
        PRIMARY,
        _member("pg2", "replica", "streaming", 5433, 4096),
        _member("pg3", "sync_standby", "streaming", 5434, 0),
        _member("pg4", "replica", "stopped", 5435, 0),
    ]
    chosen = source.choose(_cluster(tmp_path, members), "prefer-standby")
    assert chosen.state.port == 5434
    assert chosen.state.pgdata == str(tmp_path / "pg3")
    assert source.member_name(chosen, chosen) == "pg3"


def test_a_standby_too_far_behind_is_passed_over(tmp_path: Path) -> None:
    members = [PRIMARY, _member("pg2", "replica", "streaming", 5433, source.LAG_LIMIT + 1)]
    cluster = _cluster(tmp_path, members)
    assert source.choose(cluster, "prefer-standby") is cluster  # the primary
    with pytest.raises(ClusterStateError, match="no standby to back up from") as refused:
        source.choose(cluster, "standby")
    assert refused.value.transient


def test_primary_and_a_single_server_read_the_primary(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, [PRIMARY, _member("pg2", "replica", "streaming", 5433)])
    assert source.choose(cluster, "primary") is cluster
    cluster.state.patroni_url = ""  # a single server is its own primary
    assert source.choose(cluster, "standby") is cluster


def test_without_an_answer_from_patroni_standby_is_refused_with_the_reason(
    tmp_path: Path,
) -> None:
    cluster = _cluster(tmp_path, [PRIMARY], problem="Patroni's REST API does not answer")
    cluster.members = None
    assert source.choose(cluster, "prefer-standby") is cluster
    with pytest.raises(ClusterStateError, match="does not answer"):
        source.choose(cluster, "standby")
