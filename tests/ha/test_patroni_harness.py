"""The HA harness itself, on a real Patroni cluster: a client keeps writing through a switchover
and through the leader's node crashing (SIGKILL to its Patroni and its PostgreSQL), and loses
no acknowledged row; the crashed member comes back as a streaming replica."""

from __future__ import annotations

import json
import os
from pathlib import Path

import psycopg
import pytest

from pgpitr.postgres.ports import port_range
from tests.ha.patroni import PatroniCluster, patroni_missing
from tests.ha.writer import SELECT_ALL, Ack, Writer

pytestmark = pytest.mark.skipif(
    patroni_missing() is not None and not os.environ.get("CI"),
    reason=f"{patroni_missing()}",
)


def rows_on(conninfo: str) -> list[int]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        return [n for (n,) in conn.execute(SELECT_ALL)]


def assert_nothing_lost(cluster: PatroniCluster, acks: list[Ack]) -> None:
    """Acknowledged rows are numbered 1..N in order, and the primary has every one of them."""
    numbers = [a.n for a in acks]
    assert numbers == list(range(1, len(numbers) + 1))
    assert all(a.acked_at.tzinfo is not None and a.server_at <= a.acked_at for a in acks)
    on_primary = set(rows_on(cluster.conninfo()))
    lost = sorted(set(numbers) - on_primary)
    assert not lost, f"acknowledged rows missing on the primary: {lost}"


def test_the_config_keeps_to_its_ports_and_its_secrets(tmp_path: Path) -> None:
    """No process here: the config the harness writes."""
    cluster = PatroniCluster(tmp_path, scope="shape")
    try:
        low, high = port_range()
        ports = [p for m in cluster.members for p in (m.port, m.rest_port, m.raft_port)]
        assert len(set(ports)) == 9 and all(low <= p <= high for p in ports)
        config = cluster._config(cluster.members[0])
        assert config["postgresql"]["authentication"]["superuser"]["username"] == (
            cluster.superuser
        )
        assert config["restapi"]["authentication"]["password"] == cluster.rest_password
        assert "archive_mode" not in config["bootstrap"]["dcs"]["postgresql"]["parameters"]
        assert len(config["raft"]["partner_addrs"]) == 2
        shown = repr(cluster) + repr(cluster.members)
        for secret in (
            cluster.rest_password,
            cluster.superuser_password,
            cluster.replication_password,
        ):
            assert secret not in shown
    finally:
        cluster.stop()


def test_writes_survive_a_switchover_and_a_crash_and_the_crashed_member_rejoins(
    patroni_cluster: PatroniCluster,
) -> None:
    cluster = patroni_cluster
    first = cluster.leader()
    assert len(cluster.replicas()) == 2
    # the superuser is the OS user: peer authentication over the member's socket, no password
    with psycopg.connect(first.socket_conninfo(), autocommit=True) as conn:
        assert conn.execute("select current_user").fetchone()[0] == cluster.superuser
    listed = json.loads(cluster.patronictl("list", "-f", "json").stdout)
    assert sorted(e["Member"] for e in listed) == sorted(m.name for m in cluster.members)

    with Writer(cluster.conninfo()) as writer:
        writer.wait_for(10)

        # a switchover: a clean shutdown of the old primary, every acknowledged row kept
        second = cluster.switchover()
        assert second.name != first.name
        writer.wait_for_more(10)
        assert_nothing_lost(cluster, writer.acknowledged())
        cluster.wait_streaming()

        # only a synchronous standby is sure to have every acknowledged commit when the leader
        # crashes: turned on now, through the dynamic config
        cluster.patch_config({"synchronous_mode": True})
        sync = cluster.until(
            "a synchronous standby",
            lambda: [
                e["name"]
                for e in cluster.cluster_state()["members"]
                if e["role"] == "sync_standby" and e["state"] == "streaming"
            ],
            timeout=30,
        )
        writer.wait_for_more(5)

        crashed = cluster.crash_leader()
        assert crashed.name == second.name
        before = writer.last_acknowledged()
        third = cluster.wait_for_leader(not_name=crashed.name, timeout=60)
        assert third.name in sync
        after = writer.wait_for_more(10)
        assert after.n > before.n
        assert_nothing_lost(cluster, writer.acknowledged())

        cluster.restart_member(crashed)
        assert crashed in cluster.replicas()
        writer.wait_for_more(5)
    acks = writer.acknowledged()
    assert_nothing_lost(cluster, acks)
    assert any(f.n > 1 for f in writer.failures()), "the writer never saw the primary go away"

    # the rejoined member replays the writes made while it was down and after
    cluster.wait_streaming(max_lag=0)
    on_rejoined = cluster.until(
        "the rejoined member replaying every acknowledged row",
        lambda: (rows := rows_on(crashed.socket_conninfo())) and rows[-1] >= acks[-1].n and rows,
        timeout=30,
    )
    assert set(a.n for a in acks) <= set(on_rejoined)
