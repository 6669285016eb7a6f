"""An account's password, given on standard input, in a file or at a hidden prompt, and the one
pgpitr generates: the account logs in with it, and it is never seen anywhere else: not in the
argv of any process while the command runs, not on the terminal, not in the server's log with
every statement logged, not in pg_stat_statements nor pg_stat_activity, not in what Prefect
recorded.  A real PostgreSQL 15 server through the real CLI."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest

from pgpitr.postgres.cluster import Cluster
from tests.conftest import PGPITR, cli
from tests.flows.api import flow_runs, logs
from tests.pg import sql


class Watcher:
    """Samples, every few milliseconds until stopped, the argv of every process and the query
    text of every server backend: what another user of the machine, or of the server, sees."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.seen: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        with self.cluster.connect() as db:
            db.autocommit = True
            while not self._stop.is_set():
                for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                    try:
                        self.seen.add(cmdline.read_bytes().replace(b"\0", b" ").decode())
                    except (OSError, UnicodeDecodeError):
                        continue
                rows = db.execute("SELECT query FROM pg_stat_activity").fetchall()
                self.seen.update(q for (q,) in rows if q)
                self.samples += 1
                time.sleep(0.005)


@pytest.fixture
def logged_cluster(home: Path) -> Iterator[Cluster]:
    """A cluster that logs every statement with its duration and counts them in
    pg_stat_statements (utility statements too)."""
    cli("cluster", "create", "pw")
    cluster = Cluster.get("pw")
    for setting, value in (
        ("shared_preload_libraries", "pg_stat_statements"),
        ("log_statement", "all"),
        ("log_min_duration_statement", "0"),
    ):
        sql("pw", f"ALTER SYSTEM SET {setting} = '{value}'")
    cluster.restart()
    sql("pw", "CREATE EXTENSION pg_stat_statements")
    sql("pw", "CREATE TABLE counted (id int)")  # a utility statement, counted
    yield cluster


def _prompted(args: list[str], password: str) -> tuple[str, str]:
    """Run the CLI on a terminal of its own (a pty as its standard input), typing ``password``
    at each prompt once it is shown; return what it printed and what the terminal echoed."""
    master, slave = os.openpty()
    # a new session has no controlling terminal: the prompt reads the pty on stdin
    proc = subprocess.Popen(
        [*PGPITR, *args],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    os.close(slave)
    stderr, echoed = b"", b""
    for prompt in (b"password: ", b"Repeat for confirmation: "):
        deadline = time.monotonic() + 60
        while prompt not in stderr:
            assert time.monotonic() < deadline, f"no prompt {prompt!r}: {stderr!r}"
            ready, _, _ = select.select([proc.stderr, master], [], [], 1)
            if proc.stderr in ready:
                stderr += os.read(proc.stderr.fileno(), 4096)
            if master in ready:
                echoed += os.read(master, 4096)
        stderr = stderr.replace(prompt, b"", 1)
        os.write(master, password.encode() + b"\n")
    out, rest = proc.communicate(timeout=120)
    while select.select([master], [], [], 0.2)[0]:
        try:
            echoed += os.read(master, 4096)
        except OSError:
            break
    os.close(master)
    assert proc.returncode == 0, (out + stderr + rest).decode()
    return (out + stderr + rest).decode(), echoed.decode(errors="replace")


def _logs_in(cluster: Cluster, username: str, password: str) -> bool:
    dsn = {"host": "127.0.0.1", "port": cluster.state.port, "dbname": "postgres"}
    try:
        with psycopg.connect(**dsn, user=username, password=password) as db:
            return db.execute("SELECT current_user").fetchone() == (username,)
    except psycopg.OperationalError:
        return False


def test_create_account_refuses_a_password_on_its_command_line(home: Path) -> None:
    refused = cli(
        "cluster", "create-account", "pw", "--username", "u", "--password", "OnArgv-1", check=False
    )
    assert refused.returncode == 2 and "No such option: --password" in refused.stderr


def test_a_password_file_that_others_may_read_or_an_empty_password_is_refused(
    home: Path, tmp_path: Path
) -> None:
    readable = tmp_path / "pw"
    readable.write_text("Readable-By-All-1\n")
    readable.chmod(0o644)
    refused = cli(
        "cluster", "create-account", "pw", "--username", "u", "--password-file", str(readable),
        check=False,
    )  # fmt: skip
    assert refused.returncode != 0 and "chmod 600" in refused.stderr
    assert "Readable-By-All-1" not in refused.stdout + refused.stderr
    empty = cli(
        "cluster", "create-account", "pw", "--username", "u", "--password-stdin",
        check=False, input="\n",
    )  # fmt: skip
    assert empty.returncode != 0 and "is empty" in empty.stderr


def test_passwords_from_stdin_a_file_a_prompt_or_generated_log_in_and_are_seen_nowhere_else(
    logged_cluster: Cluster, tmp_path: Path
) -> None:
    cluster = logged_cluster
    started = datetime.now(UTC)
    given = {
        "stdin_user": "Stdin-Password-4c1e",
        "file_user": "File-Password-9b2d",
        "prompt_user": "Prompt-Password-7a5f",
    }
    password_file = tmp_path / "password"
    password_file.write_text(given["file_user"] + "\n")
    password_file.chmod(0o600)
    create = ["cluster", "create-account", "pw", "--username"]
    with Watcher(cluster) as watcher:
        outputs = [
            cli(*create, "stdin_user", "--password-stdin", input=given["stdin_user"] + "\n"),
            cli(*create, "file_user", "--password-file", str(password_file)),
        ]
        printed, echoed = _prompted(
            [*create, "prompt_user", "--password-prompt"], given["prompt_user"]
        )
        generated = cli(*create, "gen_user")
    assert watcher.samples > 50  # it watched the whole time, not once
    text = "\n".join(o.stdout + o.stderr for o in outputs) + printed + echoed
    assert "password:" not in "".join(o.stdout for o in outputs)  # a given one is not printed
    match = re.search(r"password: (\S+)", generated.stdout)
    assert match, generated.stdout
    passwords = {**given, "gen_user": match.group(1)}

    verifiers = []
    for username, password in passwords.items():
        assert _logs_in(cluster, username, password), username
        assert not _logs_in(cluster, username, password + "x")
        (stored,) = sql("pw", "SELECT rolpassword FROM pg_authid WHERE rolname = %s", (username,))
        assert stored[0].startswith("SCRAM-SHA-256$4096:")
        verifiers.append(stored[0])

    log = cluster.state.log_file.read_text()
    assert "duration:" in log and "statement: SELECT" in log  # everything was logged
    statements = [q for (q,) in sql("pw", "SELECT query FROM pg_stat_statements")]
    assert any("CREATE TABLE counted" in q for q in statements)  # utilities are counted
    runs = [r for r in flow_runs() if r.created and r.created >= started]
    recorded = "\n".join(json.dumps(r.parameters, default=str) for r in runs)
    recorded += "\n".join(m for r in runs for m in logs(r.id))
    accounts_runs = [r for r in runs if r.name.startswith("create-account-")]
    assert len(accounts_runs) == 4
    recorded += "\n".join(_events_since(started, accounts_runs))
    for username, password in passwords.items():
        assert password not in "\n".join(watcher.seen), f"{username}'s in argv or pg_stat_activity"
        if username != "gen_user":  # printed once, by design
            assert password not in text, username
        assert password not in log, username
        assert not any(password in q for q in statements), username
        assert password not in recorded, username
    for verifier in verifiers:  # what the server was sent is kept out of its log and counts too
        assert verifier not in log
        assert not any(verifier in q for q in statements)


def _events_since(started: datetime, runs: list) -> list[str]:
    """Every event since ``started``, once one about each of ``runs`` has arrived (events
    reach the API asynchronously)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventOccurredFilter

    deadline = time.monotonic() + 30
    with get_client(sync_client=True) as client:
        while True:
            page = client.read_events(EventFilter(occurred=EventOccurredFilter(since=started)), 50)
            found = [e.model_dump_json() for e in page.events]
            while page.next_page:
                page = client.read_events_page(str(page.next_page))
                found += [e.model_dump_json() for e in page.events]
            text = "\n".join(found)
            if all(str(r.id) in text for r in runs) or time.monotonic() > deadline:
                return found
            time.sleep(0.5)
