"""A fleet: three hosts, one Prefect server on PostgreSQL, one S3 repository.

Each host is a network namespace of its own (tests/fleet/netns.py) with its own address,
PGPITR_HOME, agent and cluster, and every command of a host runs inside its namespace as pgpitr's
service account.  The server is pgpitr's (`pgpitr server use-postgresql` on a PostgreSQL 15 of
its own) listening on the fleet's address (PGPITR_PREFECT_ADDRESS); the hosts join it with
`pgpitr server connect`; the repository is moto's S3 server on the same address.  Proven here: a
run for a cluster executes on its own host, and another host's run refuses it; a restore of host
a's cluster works from host b; a host whose agent is killed has its running run marked Crashed
and its cluster flagged, in `describe` on another host.  No namespace has a route beyond the
fleet's subnet: all traffic stays on the loopbacks and the fleet's addresses."""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pgpitr import timeparse
from tasks._slots import slot_name
from tests.conftest import (
    S3_KEY,
    S3_SECRET,
    free_port,
    reachable_tempdir,
    stop_everything_under,
)
from tests.fleet.netns import network
from tests.fleet.service import (
    Fleet,
    base_env,
    owned_by_service,
    run_as_service,
    s3_repository,
    stop_agent,
)
from tests.flows.api import wait_for
from tests.flows.test_agent import at
from tests.pg import rows, rows_either_side_of_a_second

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]

PG15 = Path("/usr/lib/postgresql/15/bin")
HOSTS = ("a", "b", "c")


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    if not PG15.is_dir():
        pytest.fail(f"PostgreSQL 15 from Debian is missing ({PG15}): `make install` installs it")
    base = reachable_tempdir("pgpitr-fleet-")
    homes = {}
    for name in ("server", *HOSTS):
        homes[name] = base / name
        homes[name].mkdir(mode=0o755)
        owned_by_service(homes[name])
        (homes[name] / "prefect-home").mkdir(mode=0o700)
        owned_by_service(homes[name] / "prefect-home")
    with (
        network(list(HOSTS)) as net,
        s3_repository(net.address, "pgpitr-fleet") as repository,
    ):
        server_env = base_env(
            homes["server"],
            PGPITR_PREFECT_ADDRESS=net.address,
            PGPITR_PREFECT_PORT=str(free_port()),
        )
        try:
            url = start_server_on_postgresql(homes["server"], server_env)
            secret = (homes["server"] / "prefect" / "api-credentials").read_text().strip()
            user, _, password = secret.partition(":")
            made = Fleet(
                api=url,
                auth=(user, password),
                repository=repository,
                hosts=net.hosts,
            )
            for name in HOSTS:
                made.envs[name] = base_env(
                    homes[name],
                    PGPITR_HOST=f"host-{name}",
                    PREFECT_RUNNER_POLL_FREQUENCY="1",  # a stopped agent shows after 15 s
                    PGPITR_METRICS_PORT="off",
                )
            with concurrent.futures.ThreadPoolExecutor(len(HOSTS)) as pool:
                for done in pool.map(lambda name: join(made, name, secret), HOSTS):
                    assert done is None
            yield made
        finally:
            for name in HOSTS:
                if name in homes:
                    stop_agent(homes[name])
                    stop_everything_under(homes[name])
            run_as_service([sys.executable, "-I", "-m", "pgpitr", "server", "stop"], server_env)
            pg_ctl(homes["server"], "stop", "-m", "immediate")
    shutil.rmtree(base, ignore_errors=True)


def pg_ctl(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_as_service([str(PG15 / "pg_ctl"), "-D", str(home / "prefect-pg"), *args], {})


def start_server_on_postgresql(home: Path, env: dict[str, str]) -> str:
    """PostgreSQL 15 for Prefect (a role with a password, over TCP on the loopback), then
    pgpitr's server on it at the fleet's address; its API URL."""
    password = "fleet-" + os.urandom(12).hex()
    pwfile = home / "pw"
    pwfile.write_text(password + "\n")
    owned_by_service(pwfile).chmod(0o600)
    port = free_port()
    made = run_as_service(
        [
            str(PG15 / "initdb"),
            "-D",
            str(home / "prefect-pg"),
            "-U",
            "prefect",
            f"--pwfile={pwfile}",
            "--auth-host=scram-sha-256",
            "--auth-local=trust",
        ],
        {"PATH": os.environ["PATH"], "LANG": "C.UTF-8"},
    )
    assert made.returncode == 0, made.stderr
    pwfile.unlink()
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {home} -c fsync=off"
    started = pg_ctl(home, "-w", "-l", str(home / "prefect-pg.log"), "-o", options, "start")
    assert started.returncode == 0, started.stderr
    created = run_as_service(
        [str(PG15 / "createdb"), "-h", str(home), "-p", str(port), "-U", "prefect", "prefect"], {}
    )
    assert created.returncode == 0, created.stderr
    url = f"postgresql+asyncpg://prefect:{password}@127.0.0.1:{port}/prefect\n"
    moved = run_as_service(
        [sys.executable, "-I", "-m", "pgpitr", "server", "use-postgresql", "--url-file", "-"],
        env,
        input=url,
    )
    assert moved.returncode == 0, moved.stderr
    assert password not in moved.stdout + moved.stderr
    status = run_as_service(
        [sys.executable, "-I", "-m", "pgpitr", "server", "status", "-o", "json"], env
    )
    shown = json.loads(status.stdout)
    assert shown["answering"] and shown["database"].startswith("postgresql+asyncpg://"), shown
    return shown["url"]


def join(fleet: Fleet, name: str, secret: str) -> None:
    """Host NAME joins the server, makes its cluster (archiving to the repository, one backup)
    and starts its agent."""
    fleet.pgpitr(name, "server", "connect", fleet.api, input=secret + "\n")
    cluster = f"{name}1"
    keys = {"AWS_ACCESS_KEY_ID": S3_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET}
    fleet.pgpitr(
        name,
        "cluster",
        "create",
        cluster,
        "--backup-repo",
        fleet.repository,
        "--port",
        str(free_port()),
        **keys,
    )
    policy = f"{cluster}-postgresql-backup-policy"
    fleet.pgpitr(
        name, "cluster", "edit-backup-policy", policy, "--set", "schedule.logfile.enable=true"
    )
    fleet.pgpitr(name, "cluster", "backup", cluster)
    fleet.pgpitr(name, "agent", "start")

    def serving() -> bool:
        try:
            return fleet.deployment("backup", name)["status"] == "READY"
        except httpx.HTTPStatusError:
            return False

    wait_for(serving, 180, f"the agent of host-{name} serving")


def test_no_host_has_a_route_beyond_the_fleet(fleet: Fleet) -> None:
    for host in fleet.hosts.values():
        routes = host.routes()
        assert routes and all(r.startswith("10.213.0.0/24 ") for r in routes), routes
        assert not any(r.startswith("default") for r in routes)


def test_a_run_for_a_cluster_executes_on_its_own_host_only(fleet: Fleet) -> None:
    before = fleet.pgpitr("a", "cluster", "list-backup", "a1", "-o", "json").stdout
    ran = fleet.ended(fleet.start_run("backup", "a", {"cluster": "a1"}))
    assert ran["state"]["type"] == "COMPLETED", ran["state"]
    assert ran["name"] == "backup-host-a/a1"  # named by the process that ran it: host a's
    after = json.loads(fleet.pgpitr("a", "cluster", "list-backup", "a1", "-o", "json").stdout)
    assert len(after) == len(json.loads(before)) + 1

    # host b's agent is asked to back up host a's cluster: it does not know it, and says so
    refused = fleet.ended(fleet.start_run("backup", "b", {"cluster": "a1"}))
    assert refused["state"]["type"] == "FAILED", refused["state"]
    assert "a1" in refused["state"]["message"]
    again = fleet.pgpitr("a", "cluster", "list-backup", "a1", "-o", "json").stdout
    assert len(json.loads(again)) == len(after)


def test_a_restore_of_host_as_cluster_works_from_host_b(fleet: Fleet) -> None:
    with at(fleet.envs["a"]):
        noted = rows_either_side_of_a_second("a1")
    fleet.pgpitr(
        "b",
        "cluster",
        "restore",
        "a1-on-b",
        "--restore-to-time",
        timeparse.format_kbcli(noted, "Asia/Shanghai"),
        "--source-cluster",
        "a1",
        "--backup-repo",
        fleet.repository,
    )
    with at(fleet.envs["b"]):
        assert rows("a1-on-b") == [1]  # row 2 committed a second after the time: not there
    assert not (Path(fleet.envs["a"]["PGPITR_HOME"]) / "clusters" / "a1-on-b").exists()


def test_a_killed_agents_run_is_crashed_and_its_host_flagged_on_the_others(
    fleet: Fleet,
) -> None:
    # the run waits for the backup slot the test holds, so it is surely running when killed
    slot = slot_name("backup", "c1", "host-c")
    with contextlib.suppress(httpx.HTTPStatusError):  # 409: c1's first backup made it
        fleet.call("POST", "/v2/concurrency_limits/", {"name": slot, "limit": 1})
    fleet.call(
        "POST",
        "/v2/concurrency_limits/increment",
        {"names": [slot], "slots": 1, "mode": "concurrency"},
    )
    try:
        run_id = fleet.start_run("backup", "c", {"cluster": "c1"})
        wait_for(
            lambda: fleet.run(run_id)["state"]["type"] == "RUNNING", 120, "c1's backup running"
        )
        fleet.agent_seen("a", "c1", "serving", 60)
        stop_agent(Path(fleet.envs["c"]["PGPITR_HOME"]))
        killed = time.monotonic()

        flagged = fleet.agent_seen("a", "c1", "none", 90)
        assert flagged["host"] == "host-c"
        crashed = wait_for(
            lambda: (run := fleet.run(run_id))["state"]["type"] == "CRASHED" and run,
            150,
            "c1's orphaned backup run marked Crashed",
            interval=2,
        )
        print(f"the killed agent's run was marked Crashed {time.monotonic() - killed:.0f} s later")
        assert "no heartbeat" in crashed["state"]["message"]
        shown = fleet.describe("a", "c1")
        assert shown["last_run_state"] == "Crashed", shown
        table = fleet.pgpitr("a", "cluster", "describe", "c1", "--backup-repo", fleet.repository)
        assert "NOT served: no agent of host host-c polls" in table.stdout
    finally:
        fleet.call(
            "POST",
            "/v2/concurrency_limits/decrement",
            {"names": [slot], "slots": 1, "mode": "concurrency"},
        )


def test_a_host_given_a_wrong_auth_string_or_no_server_joins_nothing(fleet: Fleet) -> None:
    elsewhere = owned_by_service(reachable_tempdir("pgpitr-fleet-joining-"))
    fresh = {"HOME": str(elsewhere), "PREFECT_HOME": str(elsewhere)}  # a host not joined yet
    try:
        wrong = fleet.pgpitr(
            "a",
            "server",
            "connect",
            fleet.api,
            input="pgpitr:not-the-secret\n",
            check=False,
            **fresh,
        )
        assert wrong.returncode != 0 and "refused the credentials" in wrong.stderr, wrong.stderr
        assert "not-the-secret" not in wrong.stdout + wrong.stderr
        nowhere = fleet.api.replace(fleet.api.rsplit(":", 1)[1], f"{free_port()}/api")
        secret = ":".join(fleet.auth) + "\n"
        absent = fleet.pgpitr("a", "server", "connect", nowhere, input=secret, check=False, **fresh)
        assert absent.returncode != 0 and "does not answer" in absent.stderr, absent.stderr
        assert list(elsewhere.iterdir()) == []  # no profile written
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
