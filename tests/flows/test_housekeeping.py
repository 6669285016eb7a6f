"""The host's housekeeping (flows/housekeeping.py): one run refreshes every cluster's window of
the host (and applies retention), each as that cluster's subflow run; a cluster that fails does
not stop the others, and the run fails naming it.  Real parts: the session's Prefect server,
clusters of PostgreSQL 15 made by the engine in a home of the module's own."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pgpitr.errors import PitrError
from pgpitr.operations import create
from tasks import schedules
from tests.conftest import shared_home
from tests.flows import api

pytestmark = pytest.mark.timeout(300)

HOST = "housekept"


@pytest.fixture(scope="module")
def host_home(api_url: str) -> Iterator[Path]:
    """Two clusters of host HOST (and one of another host, which its agent keeps)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PGPITR_HOST", HOST)
        with shared_home() as home:
            for name in ("hk1", "hk2"):
                create.create(name)
            patch.setenv("PGPITR_HOST", "elsewhere")
            create.create("hk-elsewhere")
            patch.setenv("PGPITR_HOST", HOST)
            yield home


def test_one_run_refreshes_each_clusters_window_and_retention_as_its_own_runs(host_home):
    from flows.housekeeping import housekeeping

    done = housekeeping(retention=True)
    assert done == {
        "clusters": {
            "hk1": ["refresh-recoverable-window", "apply-retention"],
            "hk2": ["refresh-recoverable-window", "apply-retention"],
        }
    }
    assert [r.state.is_completed() for r in api.flow_runs(f"housekeeping-{HOST}")].count(True)
    for name in ("hk1", "hk2"):
        for flow in ("refresh-recoverable-window", "apply-retention"):
            runs = api.flow_runs(f"{flow}-{HOST}/{name}")
            assert any(r.state.is_completed() and r.parent_task_run_id for r in runs), runs
        assert api.artifacts(f"recoverable-window-{HOST}-{name}")
    assert not api.flow_runs(f"refresh-recoverable-window-{HOST}/hk-elsewhere")


def test_a_cluster_that_fails_stops_no_other_and_is_named(host_home, monkeypatch):
    from flows import window
    from flows.housekeeping import housekeeping

    real = window.w.run

    def broken_for_hk1(steps, cluster):  # type: ignore[no-untyped-def]
        if cluster == "hk1":
            raise PitrError("the repository of hk1 cannot be read (injected)")
        return real(steps, cluster)

    monkeypatch.setattr(window.w, "run", broken_for_hk1)
    before = len(api.flow_runs(f"refresh-recoverable-window-{HOST}/hk2"))
    with pytest.raises(PitrError, match=r"housekeeping failed for hk1 \(refresh-recoverable"):
        housekeeping()
    after = api.flow_runs(f"refresh-recoverable-window-{HOST}/hk2")
    assert len(after) == before + 1 and all(r.state.is_completed() for r in after)


def test_the_host_has_two_housekeeping_schedules_and_a_cluster_none_of_its_own():
    from datetime import UTC, datetime

    from pgpitr.policy import BackupPolicy

    hosts = schedules.for_host("db1")
    assert [(s.flow, s.slug, s.cron, s.parameters) for s in hosts] == [
        ("housekeeping", "db1/*", "0,10,20,40,50 * * * *", {"retention": False}),
        ("housekeeping", "db1/*/retention", "30 * * * *", {"retention": True}),
    ]
    policy = BackupPolicy("counted", create_time=datetime.now(UTC).isoformat())
    flows = {s.flow for s in schedules.for_policy(policy, "db1")}
    assert flows == {"backup", "drill"}  # housekeeping is the host's, not the cluster's
