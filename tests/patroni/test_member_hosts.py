"""The hosts of an HA cluster's members on other hosts (pgpitr/operations/register/member_hosts.py),
without Patroni: what they are told, what a host with no member of the cluster does, and what a
member's host refuses to remove.  tests/fleet/test_ha_hosts.py runs the whole of it on two
hosts."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from pgpitr import state as st
from pgpitr.errors import ClusterStateError, EncryptionKeyError, InvalidInput
from pgpitr.operations.register import member_hosts
from pgpitr.patroni import members
from tests.conftest import free_port
from tests.test_register import handmade  # noqa: F401  (a fixture)


def _state(home: Path, name: str = "pgha", host: str = "host-a") -> st.ClusterState:
    return st.ClusterState(
        name=name,
        platform="local",
        port=5432,
        repository="s3://bucket/prefix?endpoint=http://127.0.0.1:9&region=us-east-1",
        bindir="/usr/lib/postgresql/15/bin",
        os_user="postgres",
        system_identifier="7400000000000000001",
        registered=True,
        patroni_url="http://10.0.0.2:8008",
        patroni_scope=name,
        host=host,
        home=str(home),
        previous_settings={"archive_command": {"value": "(disabled)", "in_auto_conf": False}},
    )


def _member(host: str, port: int) -> tuple[dict, ...]:
    """A standby of the cluster, as Patroni's ``GET /cluster`` lists it, at HOST:PORT."""
    return (
        {
            "name": "pgha-2",
            "role": "replica",
            "state": "streaming",
            "host": host,
            "port": port,
            "api_url": f"http://{host}:8008",
        },
    )


def _elsewhere(port: int) -> tuple[dict, ...]:
    # an address no socket here can bind to (TEST-NET-3): another host's member
    return _member("203.0.113.7", port)


def _here(port: int) -> tuple[dict, ...]:
    # a member whose server runs on this host (matched by its port; 127.0.0.1 binds here)
    return _member("127.0.0.1", port)


def test_the_spec_carries_the_record_and_the_archive_command_and_no_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPITR_HOME", str(tmp_path))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3-secret-value")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "s3-key")
    monkeypatch.setenv("PATRONI_RESTAPI_USERNAME", "patroni")
    monkeypatch.setenv("PATRONI_RESTAPI_PASSWORD", "rest-secret-value")
    state = _state(tmp_path)
    spec = member_hosts.spec_of(state, _elsewhere(5432))
    text = json.dumps(spec)  # JSON: it is a flow parameter
    assert "secret-value" not in text
    assert spec["cluster"]["host"] == "host-a" and spec["cluster"]["previous_settings"] == {}
    assert "wal-push" in spec["archive_command"] and str(tmp_path) in spec["archive_command"]
    found = member_hosts.secrets_of_environment(state.repository)
    assert "s3-secret-value" in found[member_hosts.AWS_CREDENTIALS]
    assert json.loads(found[member_hosts.PATRONI_CREDENTIALS]) == {
        "username": "patroni",
        "password": "rest-secret-value",
    }


def test_a_host_running_no_member_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPITR_HOME", str(tmp_path))
    spec = member_hosts.spec_of(_state(tmp_path), _elsewhere(free_port()))
    assert member_hosts.keep(spec, {}) == []
    assert list(tmp_path.iterdir()) == []


def test_an_address_is_this_hosts_when_a_socket_binds_to_it() -> None:
    assert members._is_this_host("127.0.0.1")
    assert not members._is_this_host("203.0.113.7")
    assert not members._is_this_host("no-such-host.invalid")
    assert members._is_this_host(socket.gethostbyname("localhost"))


def test_a_registration_with_a_member_no_host_keeps_is_refused_naming_it() -> None:
    elsewhere = _elsewhere(6543)
    with pytest.raises(ClusterStateError, match=r"pgha-2 \(203\.0\.113\.7:6543\)") as caught:
        member_hosts.unplaced(elsewhere, [], ["host-b"])
    assert "host-b run none of them" in caught.value.hint
    kept = [{"name": "pgha-2", "datadir": "/d", "host": "host-b"}]
    member_hosts.unplaced(elsewhere, kept, ["host-b"])  # every member kept: no error
    assert member_hosts.kept_on([{"name": "pgha-1", "host": ""}, *kept]) == ["host-b"]


def test_a_hosts_own_cluster_is_never_dropped_as_a_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPITR_HOME", str(tmp_path))
    monkeypatch.setenv("PGPITR_HOST", "host-b")
    own = _state(tmp_path, host="host-b")
    own.save()
    with pytest.raises(ClusterStateError, match="not a copy"):
        member_hosts.drop("pgha", "host-b")
    with pytest.raises(ClusterStateError, match="not a copy"):
        member_hosts.drop("pgha", "host-a")
    assert own.dir.exists()
    copy = _state(tmp_path, name="other", host="host-a")
    copy.save()
    assert member_hosts.drop("other", "host-a")
    assert not copy.dir.exists()
    assert not member_hosts.drop("other", "host-a")  # gone already: nothing to do


def test_a_policy_lent_to_this_process_is_the_clusters_while_the_loan_lasts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pgpitr import policy as pol
    from pgpitr import policy_store
    from pgpitr.postgres.cluster import Cluster

    monkeypatch.setenv("PGPITR_HOME", str(tmp_path))
    copy = _state(tmp_path, host="host-a")  # another host's cluster, kept here: no policy
    copy.save()
    cluster = Cluster(copy)
    assert not policy_store.has_policy(cluster)
    lent = pol.BackupPolicy(cluster="pgha", create_time="2026-12-07T00:00:00+00:00")
    with policy_store.lent("pgha", lent):
        assert policy_store.load_policy(cluster) is lent
    with pytest.raises(FileNotFoundError):
        policy_store.load_policy(cluster)


def test_a_members_host_whose_pgpitr_would_archive_elsewhere_refuses_and_writes_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    handmade,  # noqa: F811
) -> None:
    server = handmade()
    home_a, home_b = tmp_path / "a", tmp_path / "b"
    home_b.mkdir()
    monkeypatch.setenv("PGPITR_HOME", str(home_a))  # host a's pgpitr lives elsewhere
    spec = member_hosts.spec_of(_state(home_a), _here(server.port))
    monkeypatch.setenv("PGPITR_HOME", str(home_b))
    monkeypatch.setenv("PGPITR_HOST", "host-b")
    with pytest.raises(InvalidInput, match="would archive with") as caught:
        member_hosts.keep(spec, {})
    assert str(home_a) in caught.value.message and str(home_b) in caught.value.message
    assert "same PGPITR_HOME" in caught.value.hint
    assert list(home_b.iterdir()) == []


@pytest.fixture
def host_b(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process as host b's pgpitr; its home."""
    monkeypatch.setenv("PGPITR_HOME", str(tmp_path))
    monkeypatch.setenv("PGPITR_HOST", "host-b")
    return tmp_path


def test_a_members_host_never_overwrites_its_own_cluster_of_that_name(
    host_b: Path,
    handmade,  # noqa: F811
) -> None:
    tmp_path = host_b
    server = handmade()
    own = _state(tmp_path, host="host-b")
    own.system_identifier = "7400000000000000999"
    own.save()
    before = (own.dir / "cluster.json").read_bytes()
    spec = member_hosts.spec_of(_state(tmp_path), _here(server.port))
    with pytest.raises(ClusterStateError, match="has a cluster named 'pgha' already"):
        member_hosts.keep(spec, {})
    assert (own.dir / "cluster.json").read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "clusters").iterdir()) == ["pgha"]


def test_a_members_host_without_the_key_file_refuses_and_writes_nothing(
    host_b: Path,
    monkeypatch: pytest.MonkeyPatch,
    handmade,  # noqa: F811
) -> None:
    tmp_path = host_b
    server = handmade()
    monkeypatch.delenv("PGPITR_ENCRYPTION_KEY_FILE", raising=False)
    state = _state(tmp_path)
    state.repository = f"file://{tmp_path}/repository?encryption=aes-256-gcm"
    state.encryption_key_file = str(tmp_path / "only-on-host-a" / "pgha.key")
    spec = member_hosts.spec_of(state, _here(server.port))
    with pytest.raises(EncryptionKeyError, match="does not exist") as caught:
        member_hosts.keep(spec, {})
    assert "host host-b runs members of 'pgha', whose repository is encrypted" in str(caught.value)
    assert "copy the key file from host host-a to the same path here" in caught.value.hint
    assert not (tmp_path / "clusters").exists()
