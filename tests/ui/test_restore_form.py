"""In headless Chromium, the Prefect UI's run form of the `restore` deployment (Deployments >
pgpitr-HOST > Run > Custom run) restores to a time of day typed into its time field, in kbcli's
format, with exactly the rows committed before it; and the time kind chosen with the time left
empty is refused (the run fails its parameters' validation) and no cluster is made.

Real parts: pgpitr's own local Prefect server, which serves the UI (the suite's harness serves
none), in a home of its own (like tests/deployments/test_localserver.py's ``alone``); a cluster
made by `pgpitr cluster create` there, log backup on, row 1 before a backup and rows 2 and 3
either side of a whole second after it, archived; this host's agent started by `pgpitr agent
start`.  A failure leaves a screenshot and the page in the test's tmp_path (the message says
where)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest

from pgpitr.postgres.cluster import Cluster
from tests.conftest import free_port, reachable_tempdir, stop_everything_under
from tests.deployments.test_localserver import credentials, pgpitr
from tests.flows.api import wait_for
from tests.flows.test_agent import at
from tests.pg import archive_now, commit_now, rows, sql
from tests.ui.browser import Page, page, require

pytestmark = pytest.mark.timeout(600)

HOST = "ui-form"
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")
#: kbcli's format in a zone other than the server's and the browser's (UTC)
SHANGHAI = timezone(timedelta(hours=8))


@dataclass(frozen=True)
class Local:
    env: dict[str, str]
    home: Path
    base: str  # the UI's and the API's address
    deployment_id: str
    between: datetime  # a whole second after row 2's commit and before row 3's

    def api(self, method: str, path: str, body: Any = None) -> Any:
        user, _, secret = credentials(self.env).partition(":")
        answer = httpx.request(
            method, f"{self.base}/api{path}", json=body, auth=(user, secret), timeout=30
        )
        answer.raise_for_status()
        return answer.json()

    def run_of(self, new_name: str) -> dict | None:
        """The restore deployment's run whose new cluster is NEW_NAME (None: none yet)."""
        runs = self.api(
            "POST",
            "/flow_runs/filter",
            {"flow_runs": {"deployment_id": {"any_": [self.deployment_id]}}},
        )
        return next((r for r in runs if r["parameters"].get("new_name") == new_name), None)

    def ended(self, new_name: str, timeout: float = 300) -> dict:
        def done() -> dict | None:
            run = self.run_of(new_name)
            return run if run and run["state"]["type"] in TERMINAL else None

        return wait_for(done, timeout, f"the run restoring {new_name} to end")


def restore_deployment(env: dict[str, str], base: str) -> str | None:
    """The id of this host's restore deployment once its agent serves it."""
    user, _, secret = credentials(env).partition(":")
    answer = httpx.get(
        f"{base}/api/deployments/name/restore/pgpitr-{HOST}", auth=(user, secret), timeout=30
    )
    if answer.status_code == 404:
        return None
    answer.raise_for_status()
    found = answer.json()
    return found["id"] if found["status"] == "READY" else None


@pytest.fixture(scope="module")
def local() -> Iterator[Local]:
    require()  # before anything is started: no browser, no test
    base = reachable_tempdir("pgpitr-ui-")
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(
        PGPITR_HOME=str(base / "home"),
        PREFECT_HOME=str(base / "prefect-home"),
        PGPITR_PREFECT_PORT=str(free_port()),
        PGPITR_HOST=HOST,
        TZ="UTC",
        PREFECT_RUNNER_POLL_FREQUENCY="1",
    )
    home = base / "home"
    address = f"http://127.0.0.1:{env['PGPITR_PREFECT_PORT']}"
    try:
        pgpitr(env, "cluster", "create", "src")
        policy = "src-postgresql-backup-policy"
        pgpitr(
            env, "cluster", "edit-backup-policy", policy, "--set", "schedule.logfile.enable=true"
        )
        with at(env):
            sql("src", "CREATE TABLE msg (id int PRIMARY KEY); INSERT INTO msg VALUES (1)")
        pgpitr(env, "cluster", "backup", "src")
        pgpitr(env, "agent", "start")
        with at(env):
            after_2 = commit_now("src", "INSERT INTO msg VALUES (2)")
            between = (after_2 + timedelta(seconds=1)).replace(microsecond=0)
            # the form takes whole seconds: row 3 commits after the second that is typed
            wait_for(lambda: datetime.now(UTC) > between, 5, "the next whole second", 0.05)
            sql("src", "INSERT INTO msg VALUES (3)")
            archive_now("src")
        found = wait_for(lambda: restore_deployment(env, address), 180, f"the agent of {HOST}")
        yield Local(env, home, address, found, between)
    finally:
        pgpitr(env, "agent", "stop", check=False)
        with contextlib.suppress(OSError, ValueError, KeyError):  # if stop did not
            os.killpg(
                json.loads((home / "agent" / "agent.json").read_text())["pid"], signal.SIGKILL
            )
        stop_everything_under(home)
        with contextlib.suppress(OSError, ValueError, KeyError):
            pid = json.loads((home / "prefect" / "server.json").read_text())["pid"]
            os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def browser(local: Local, tmp_path: Path) -> Iterator[Page]:
    with page(local.base, tmp_path) as opened:
        yield opened


def fill_the_restore_form(local: Local, browser: Page, new_name: str, time: str) -> None:
    """As a person would: the run page, the new cluster's name, the source, the time kind and
    TIME in the time field (empty: left untouched), Submit; until the UI leaves the form."""
    run_page = f"/v2/deployments/deployment/{local.deployment_id}/run"
    browser.open(run_page, credentials(local.env), ready="new_name")
    browser.type("new_name", new_name)
    browser.type("source_cluster", "src")
    browser.choose("Kind of target (Optional)", "time")
    if time:
        browser.type("Restore to time (Optional)", time)
    # The embedded server is SQLite: a write that meets another may be answered 503 ("database
    # is locked"); the form then says "Unknown error while creating flow run" and stays. A
    # person submits again, and so does the test: only then, and only while no run was made.
    for _ in range(3):
        seen: list[str] = []

        def made_or_refused(driver: Any, seen: list[str] = seen) -> str | None:
            if not driver.current_url.endswith("/run"):
                return "made"
            seen.extend(entry["message"] for entry in driver.get_log("browser"))
            refused = any("create_flow_run" in m and "Service Unavailable" in m for m in seen)
            return "refused" if refused else None

        browser.button("Submit").click()
        if browser.wait(made_or_refused, "the run to be made") == "made":
            return
        if local.run_of(new_name) is not None:
            return
    raise AssertionError(f"the server refused to make the run three times: {seen}")


def test_a_restore_to_a_time_of_day_typed_in_the_form_has_exactly_the_rows_before_it(
    local: Local, browser: Page
) -> None:
    typed = f"{local.between.astimezone(SHANGHAI):%b %d,%Y %H:%M:%S} UTC+0800"
    with browser.shown_on_failure("restore-form"):
        fill_the_restore_form(local, browser, "ui-copy", typed)
        run = local.ended("ui-copy")
    assert run["state"]["type"] == "COMPLETED", run["state"]
    assert run["parameters"]["target"]["kind"] == "time"
    assert run["parameters"]["target"]["time"] == typed  # as typed: read by the flow
    with at(local.env):
        try:
            assert rows("ui-copy") == [1, 2]
        finally:
            Cluster.get("ui-copy").stop()


def test_the_time_kind_with_an_empty_time_is_refused_and_makes_no_cluster(
    local: Local, browser: Page
) -> None:
    with browser.shown_on_failure("restore-form-empty-time"):
        fill_the_restore_form(local, browser, "ui-empty", "")
        run = local.ended("ui-empty", timeout=120)
    assert run["state"]["type"] == "FAILED", run["state"]
    assert "kind time was chosen but no time was given" in run["state"]["message"]
    assert not (local.home / "clusters" / "ui-empty").exists()
    listed = json.loads(pgpitr(local.env, "cluster", "list", "-o", "json").stdout)
    assert "ui-empty" not in json.dumps(listed)
