"""Bounded waits and the backup lock: a backup waiting for its cluster's backup slot, and a
command's ``--wait``, give up after their bound with an error that says what they waited for;
the backup lock refuses a file planted in its place.  Real clusters, the CLI, the session's
Prefect API (no agent serves it here)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from pgpitr import waits
from pgpitr.errors import InvalidInput
from pgpitr.postgres.cluster import Cluster
from tasks._slots import cluster_slot
from tests.conftest import cli

pytestmark = pytest.mark.timeout(300)


def test_a_backup_waiting_for_a_held_backup_slot_fails_after_its_timeout_naming_the_slot(
    home: Path, prefect_harness: str
) -> None:
    cli("cluster", "create", "slotted")
    with cluster_slot("backup", "slotted", wait=False):  # another backup of it, as the API sees
        began = time.monotonic()
        result = cli("cluster", "backup", "slotted", check=False, env={waits.BACKUP_SLOT.env: "3"})
        waited = time.monotonic() - began
    assert result.returncode == 5, result.stderr
    assert "a backup of cluster 'slotted' waited 3 s for the backup slot" in result.stderr
    assert "PGPITR_BACKUP_WAIT_TIMEOUT sets the wait" in result.stderr
    assert waited >= 3
    assert cli("cluster", "list-backup", "slotted").stdout.count("slotted") == 0
    cli("cluster", "backup", "slotted")  # the slot freed, the next backup goes through


def test_a_symlink_planted_as_the_backup_lock_is_refused_and_its_target_left_untouched(
    home: Path, tmp_path: Path
) -> None:
    cli("cluster", "create", "planted")
    target = tmp_path / "precious"
    target.write_text("do not truncate me")
    lock = Cluster.get("planted").state.dir / "backup.lock"
    lock.unlink(missing_ok=True)
    lock.symlink_to(target)
    result = cli("cluster", "backup", "planted", check=False)
    assert result.returncode != 0
    assert f"{lock} is a symbolic link: refused" in result.stderr
    assert target.read_text() == "do not truncate me"
    assert lock.is_symlink()


def test_a_hard_link_planted_as_the_backup_lock_is_refused_too(home: Path, tmp_path: Path) -> None:
    cli("cluster", "create", "linked")
    target = tmp_path / "precious"
    target.write_text("do not truncate me")
    lock = Cluster.get("linked").state.dir / "backup.lock"
    lock.unlink(missing_ok=True)
    lock.hardlink_to(target)
    result = cli("cluster", "backup", "linked", check=False)
    assert "is not a plain, singly linked file that only this account" in result.stderr
    assert target.read_text() == "do not truncate me"


def test_wait_cancels_a_run_no_agent_starts_within_its_bound_and_says_so(
    home: Path, prefect_harness: str
) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
    from prefect.exceptions import ObjectAlreadyExists

    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name="pgpitr-unserved", type="process"))
        except ObjectAlreadyExists:
            pass
        deployment_id = client.create_deployment(
            flow_id=client.create_flow_from_name("create-cluster"),
            name="pgpitr-unserved",
            work_pool_name="pgpitr-unserved",
            entrypoint="flows/clusters.py:create_cluster",
        )
    env = {"PGPITR_DEPLOYMENT": "pgpitr-unserved", waits.RUN_START.env: "2"}
    try:
        result = cli("cluster", "create", "unserved", "--wait", check=False, env=env)
        assert result.returncode == 1, result.stderr
        assert "was not started by any agent within 2 s" in result.stderr
        assert "it is cancelled, so it will not start later" in result.stderr
        assert "PGPITR_WAIT_START_TIMEOUT sets this wait" in result.stderr
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id])
                )
            )
            assert [r.state.type.value for r in runs] == ["CANCELLED"]
    finally:
        with get_client(sync_client=True) as client:
            client.delete_deployment(deployment_id)


@pytest.mark.parametrize("text", ["forever", "0", "-5", "inf"])
def test_a_wait_bound_that_is_not_a_positive_number_of_seconds_is_refused(
    text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(waits.BACKUP_SLOT.env, text)
    with pytest.raises(InvalidInput, match="is not a positive number of seconds"):
        waits.BACKUP_SLOT.seconds()


def test_wait_bounds_are_shown_in_the_unit_an_operator_sets() -> None:
    assert [waits.shown(s) for s in (3, 90, 300, 3600, 86400)] == [
        "3 s",
        "90 s",
        "5 min",
        "1 h",
        "1 day",
    ]


def test_poll_returns_once_done_and_raises_the_given_error_past_its_bound() -> None:
    answers = iter([False, False, True])
    waits.poll(lambda: next(answers), 5, 0.001, lambda: InvalidInput("never"))
    assert next(answers, "spent") == "spent"  # asked exactly until the first yes
    with pytest.raises(InvalidInput, match="gave up"):
        waits.poll(lambda: False, 0.05, 0.01, lambda: InvalidInput("gave up"))
