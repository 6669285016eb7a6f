"""What ``GET /cluster`` says of the members, read into ``Member`` (no server)."""

from __future__ import annotations

import pytest

from pgpitr.errors import ClusterStateError
from pgpitr.patroni.members import members_of, primary_of

ANSWER = {
    "members": [
        {
            "name": "pg0",
            "role": "leader",
            "state": "running",
            "api_url": "http://127.0.0.1:8008/patroni",
            "host": "127.0.0.1",
            "port": 5432,
            "timeline": 3,
        },
        {
            "name": "pg1",
            "role": "replica",
            "state": "streaming",
            "api_url": "http://127.0.0.1:8009/patroni",
            "host": "127.0.0.1",
            "port": 5433,
            "timeline": 3,
            "lag": 0,
        },
        {
            "name": "pg2",
            "role": "replica",
            "state": "stopped",
            "api_url": "http://127.0.0.1:8010/patroni",
            "host": "127.0.0.1",
            "port": 5434,
            "lag": "unknown",
        },
    ],
    "scope": "pgha",
}


def test_members_roles_and_lag() -> None:
    members = members_of(ANSWER)
    assert [m.name for m in members] == ["pg0", "pg1", "pg2"]
    assert primary_of(members, "pgha").name == "pg0"
    assert members[0].api_url == "http://127.0.0.1:8008"
    assert [m.is_streaming_standby for m in members] == [False, True, False]
    assert members[2].lag is None  # Patroni says "unknown" for a member it cannot measure


def test_no_primary_during_a_failover_is_transient() -> None:
    members = [m for m in members_of(ANSWER) if m.role != "leader"]
    with pytest.raises(ClusterStateError, match="has no primary now") as caught:
        primary_of(members, "pgha")
    assert caught.value.transient
