"""The automations of `python -m deployments.alerts`, for real: a backup run scheduled in the
past on a deployment no agent serves goes Late (the server's late-runs service), and the "late"
automation POSTs its notification to the webhook.

Prefect's test harness runs an ephemeral server, whose services do not include the late-runs
one; so this test runs a full `prefect server start` (pgpitr's local server, in its own homes
and port) with the late-runs loop and threshold shortened through its settings.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.deployments.test_localserver import (  # noqa: F401
    alone,
    credentials,
    pgpitr,
    server_status,
)
from tests.flows.api import wait_for

pytestmark = pytest.mark.timeout(600)


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    """A webhook receiver on 127.0.0.1: its URL, and the JSON bodies POSTed to it."""
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            received.append(json.loads(body or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/pgpitr-secret-token", received
    server.shutdown()
    server.server_close()


@pytest.fixture
def full_server(alone: dict[str, str]) -> Iterator[str]:  # noqa: F811
    """A full Prefect server (every service) whose late-runs service looks every second and
    calls a run Late one second after its start time; its API URL."""
    alone.update(
        PREFECT_SERVER_SERVICES_LATE_RUNS_LOOP_SECONDS="1",
        PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_SECONDS="1",
    )
    pgpitr(alone, "server", "start")
    try:
        yield server_status(alone)["url"]
    finally:
        pgpitr(alone, "server", "stop", check=False)


def test_a_late_scheduled_backup_notifies_the_webhook(alone, full_server, webhook) -> None:  # noqa: F811
    import prefect.settings
    from prefect.client.orchestration import get_client
    from prefect.states import Scheduled

    from deployments import alerts
    from flows import registry

    url, received = webhook
    api = {
        prefect.settings.PREFECT_API_URL: full_server,
        prefect.settings.PREFECT_API_AUTH_STRING: credentials(alone),
    }
    with prefect.settings.temporary_settings(updates=api):
        assert "pgpitr: scheduled backup late" in alerts.create(url)
        # the deployment an agent of host late-host would serve; no agent serves it
        deployment_id = registry.load("backup").to_deployment(name="pgpitr-late-host").apply()
        with get_client(sync_client=True) as client:
            run = client.create_flow_run_from_deployment(
                deployment_id,
                parameters={"cluster": "late-pg", "apply_retention_after": True},
                state=Scheduled(scheduled_time=datetime.now(UTC) - timedelta(minutes=5)),
            )

            def late() -> bool:
                return client.read_flow_run(run.id).state.name == "Late"

            wait_for(late, 120, "the late-runs service calling the backup run Late")

        def notified() -> list[str]:
            return [b["text"] for b in received if "scheduled backup is late" in b.get("text", "")]

        (text, *_) = wait_for(notified, 120, "the late automation's notification")
    assert "cluster late-pg" in text and "backup/pgpitr-late-host" in text, text
    assert run.name in text
    assert "pgpitr agent start" in text
    # the other automations did not fire: nothing failed, nothing is behind
    assert all("late" in b.get("text", "") for b in received), received
