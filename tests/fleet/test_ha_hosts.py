"""A Patroni cluster whose members run on two hosts, one of them serving the other's runs.

Hosts a and b are network namespaces (tests/fleet/netns.py), each with its own address and its
own PGPITR_HOME mounted at the same path (as every machine has its own /var/lib/pgpitr), joined
to one Prefect server; host b runs its agent (host a needs none: its commands run their flows
themselves); the repository is moto's S3 server.  One Patroni member runs on each host, as
pgpitr's service account.  Proven here: registering on the primary's
host has host b's agent keep the cluster for its member (with the repository's and Patroni's
credentials, which never travel as a parameter), and refuses, leaving nothing anywhere, while
b's agent is down; after a switchover to b's member, b archives the new timeline and takes
host a's backup of it (its primary is b's now), so a restore on host a from that backup to a
time after it holds exactly the rows committed before that time; unregister makes b forget the
cluster and leaves Patroni as it was."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from pgpitr.postgres.conf import ARCHIVE_OFF
from tests.conftest import S3_KEY, S3_SECRET, free_port, reachable_tempdir
from tests.fleet.netns import Host, network
from tests.fleet.service import (
    Fleet,
    base_env,
    owned_by_service,
    run_as_service,
    s3_repository,
    stop_agent,
)
from tests.flows.api import wait_for
from tests.ha.patroni import PatroniCluster, Site, require_patroni
from tests.ha.writer import Writer

pytestmark = [pytest.mark.root, pytest.mark.timeout(900)]

PG15 = Path("/usr/lib/postgresql/15/bin")
NAME = "pgha"
POLICY = f"{NAME}-postgresql-backup-policy"
ACCOUNT_PASSWORD = "reporter-Pa55-never-shown"


@dataclass
class Hosts(Fleet):
    #: where each host sees its own home, and each host's home as the test sees it
    common_home: Path = Path("/")
    homes: dict[str, Path] = field(default_factory=dict)

    def serving(self, host: str) -> bool:
        try:
            return self.deployment("keep-for-members", host)["status"] == "READY"
        except httpx.HTTPStatusError:
            return False


@pytest.fixture(scope="module")
def hosts() -> Iterator[Hosts]:
    require_patroni()
    base = reachable_tempdir("pgpitr-ha-hosts-")
    common = Path(tempfile.mkdtemp(prefix="pgpitr-home-", dir="/tmp"))  # only ever mounted on
    common.chmod(0o755)
    homes = {}
    for name in ("server", "a", "b"):
        (base / name).mkdir(mode=0o755)
        homes[name] = owned_by_service(base / name)
        (homes[name] / "prefect-home").mkdir(mode=0o700)
        owned_by_service(homes[name] / "prefect-home")
    with (
        network(["a", "b"], subnet="10.215.0") as net,
        s3_repository(net.address, "pgpitr-ha") as repository,
    ):
        server_env = base_env(
            homes["server"],
            PGPITR_PREFECT_ADDRESS=net.address,
            PGPITR_PREFECT_PORT=str(free_port()),
        )
        try:
            started = run_as_service(
                [sys.executable, "-I", "-m", "pgpitr", "server", "start", "-o", "json"],
                server_env,
            )
            assert started.returncode == 0, started.stderr
            status = run_as_service(
                [sys.executable, "-I", "-m", "pgpitr", "server", "status", "-o", "json"],
                server_env,
            )
            url = json.loads(status.stdout)["url"]
            secret = (homes["server"] / "prefect" / "api-credentials").read_text().strip()
            user, _, password = secret.partition(":")
            made = Hosts(
                api=url,
                auth=(user, password),
                repository=repository,
                common_home=common,
                homes=homes,
                hosts={n: h.with_home(homes[n], common) for n, h in net.hosts.items()},
            )
            for name in ("a", "b"):
                made.envs[name] = base_env(
                    common,
                    PGPITR_HOST=f"host-{name}",
                    PREFECT_RUNNER_POLL_FREQUENCY="1",
                    PGPITR_METRICS_PORT="off",
                )
                made.pgpitr(name, "server", "connect", url, input=secret + "\n")
            yield made
        finally:
            for name in ("a", "b"):
                stop_agent(homes[name])
            run_as_service([sys.executable, "-I", "-m", "pgpitr", "server", "stop"], server_env)
    shutil.rmtree(base, ignore_errors=True)
    shutil.rmtree(common, ignore_errors=True)


def start_agent(hosts: Hosts, name: str) -> None:
    hosts.pgpitr(name, "agent", "start")
    wait_for(lambda: hosts.serving(name), 180, f"the agent of host-{name} serving")


@pytest.fixture(scope="module")
def patroni(hosts: Hosts) -> Iterator[PatroniCluster]:
    from pgpitr.privilege import make_service_account

    account = make_service_account()
    identity = [f"--reuid={account.uid}", f"--regid={account.gid}", "--clear-groups"]

    def wrap(host: Host):
        return lambda argv: host.command(["setpriv", *identity, *argv])

    base = owned_by_service(reachable_tempdir("pgpitr-ha-members-"))
    cluster = PatroniCluster(
        base,
        scope=NAME,
        members=2,
        sites=[Site(h.address, wrap(h)) for h in (hosts.hosts["a"], hosts.hosts["b"])],
        os_user=account.name,
        client_addresses=[f"{hosts.hosts['a'].address.rsplit('.', 1)[0]}.1"],
    )
    try:
        cluster.start()
        if cluster.leader().name != cluster.members[0].name:  # the primary on host a
            cluster.switchover(candidate=cluster.members[0])
        yield cluster
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        cluster.stop(graceful=False)
        shutil.rmtree(base, ignore_errors=True)


def _rows(conninfo: str) -> list[tuple[int, datetime]]:
    with psycopg.connect(conninfo, autocommit=True) as db:
        return db.execute("SELECT n, at FROM ha_writes ORDER BY n").fetchall()


def _restored_rows(hosts: Hosts, cluster: str) -> list[int]:
    state = json.loads((hosts.homes["a"] / "clusters" / cluster / "cluster.json").read_text())
    socket_dir = hosts.common_home / "clusters" / cluster / "run"
    done = run_as_service(
        [
            str(PG15 / "psql"),
            "-h",
            str(socket_dir),
            "-p",
            str(state["port"]),
            "-d",
            "postgres",
            "-XAtc",
            "SELECT n FROM ha_writes ORDER BY n",
        ],
        {"PATH": "/usr/bin:/bin"},
        on=hosts.hosts["a"],
    )
    assert done.returncode == 0, done.stderr
    return [int(line) for line in done.stdout.split()]


def test_a_member_on_another_host_is_kept_by_its_agent_and_archives_after_a_switchover(
    hosts: Hosts, patroni: PatroniCluster
) -> None:
    user, password = patroni.rest_auth
    secrets = {
        "PATRONI_RESTAPI_USERNAME": user,
        "PATRONI_RESTAPI_PASSWORD": password,
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
    }
    on_a, on_b = patroni.members
    config_before = patroni.dcs_config()
    register = ["cluster", "register", NAME, "--patroni", on_a.rest_url, "--restart"]
    register += ["--backup-repo", hosts.repository]

    # no agent runs yet (host a needs none: the CLI runs its flows), so b's member has no host,
    # and nothing is left anywhere
    refused = hosts.pgpitr("a", *register, check=False, **secrets)
    assert refused.returncode != 0, refused.stdout
    assert f"{on_b.name} ({on_b.host}:{on_b.port})" in refused.stderr, refused.stderr
    assert "run on no host pgpitr serves" in refused.stderr
    for name in ("a", "b"):
        assert not (hosts.homes[name] / "clusters" / NAME).exists()
    assert patroni.dcs_config() == config_before

    start_agent(hosts, "b")
    writer = Writer(patroni.conninfo()).start()
    try:
        writer.wait_for_more(5)
        done = hosts.pgpitr("a", *register, **secrets)
        output = done.stdout + done.stderr
        for secret in (password, S3_SECRET):
            assert secret not in output
        copy = hosts.homes["b"] / "clusters" / NAME
        kept = json.loads((copy / "cluster.json").read_text())
        assert kept["host"] == "host-a" and kept["patroni_scope"] == NAME
        assert [m["name"] for m in kept["members"]] == [on_b.name]
        assert kept["pgdata"] == str(on_b.datadir.resolve())
        for secret_file in ("aws-credentials", "patroni-credentials"):
            assert (copy / secret_file).stat().st_mode & 0o777 == 0o600
        assert not (copy / "policy.json").exists()  # the policy stays host a's
        mine = json.loads((hosts.homes["a"] / "clusters" / NAME / "cluster.json").read_text())
        assert {m["name"]: m["host"] for m in mine["members"]} == {
            on_a.name: "",
            on_b.name: "host-b",
        }
        # the secrets went through a block that is gone; b's run shows what it kept
        blocks = hosts.call("POST", "/block_documents/filter", {})
        assert not [b for b in blocks if b["name"].startswith("pgpitr-members-")], blocks
        keep_runs = hosts.runs("keep-for-members-host-b/%")
        assert [r["state"]["type"] for r in keep_runs] == ["COMPLETED"] * len(keep_runs)
        for run in keep_runs:
            assert password not in json.dumps(run["parameters"])

        hosts.pgpitr(
            "a", "cluster", "edit-backup-policy", POLICY, "--set", "schedule.logfile.enable=true"
        )
        # the receiver runs under host a's agent: it could not follow a primary on host b
        stream = [
            "cluster",
            "edit-backup-policy",
            POLICY,
            "--set",
            "schedule.logfile.method=stream",
        ]
        refused = hosts.pgpitr("a", *stream, check=False)
        assert refused.returncode != 0, refused.stdout
        assert "members of it run on other hosts (host-b)" in refused.stderr, refused.stderr
        hosts.pgpitr("a", "cluster", "backup", NAME, **secrets)
        writer.wait_for_more(5)

        patroni.switchover(candidate=on_b)
        writer.wait_for_more(5)
        # the primary runs on host b now: host a's backup is taken there, by b's agent
        hosts.pgpitr("a", "cluster", "backup", NAME, "--backup-name", "on-b", **secrets)
        ran = hosts.runs("backup-for-members-host-b/%")
        assert [r["state"]["type"] for r in ran] == ["COMPLETED"], ran
        listed = json.loads(hosts.pgpitr("a", "cluster", "list-backup", NAME, "-o", "json").stdout)
        taken = next(b for b in listed if b["name"] == "on-b")
        [first] = [b for b in listed if b["name"] != "on-b"]  # on host a's member, before
        # the switchover's timeline (the fixture may have switched over to a already)
        assert (taken["status"], taken["timeline"]) == ("Completed", first["timeline"] + 1), listed
        backed_up = datetime.fromisoformat(taken["completion_time"])
        # what else needs the primary is handed to b's agent the same way
        hosts.pgpitr("a", "cluster", "create-restore-point", NAME, "--name", "on-b")
        hosts.pgpitr(
            "a",
            "cluster",
            "create-account",
            NAME,
            "--username",
            "reporter",
            "--password-stdin",
            input=ACCOUNT_PASSWORD + "\n",
        )
        hosts.pgpitr(
            "a", "cluster", "grant-role", NAME, "--username", "reporter", "--role", "readonly"
        )
        writer.wait_for_more(15)
        with psycopg.connect(patroni.conninfo(), autocommit=True) as db:
            db.execute("SELECT pg_switch_wal()")
            db.execute("SELECT pg_switch_wal()")  # the rows above are in a finished segment
        last = writer.last_acknowledged()
    finally:
        writer.stop()
    truth = _rows(patroni.conninfo())
    numbers = [n for n, _ in truth]

    # host b archived the new timeline: the window, read on host a, reaches past the switch
    def window_past_switchover() -> dict[str, Any] | None:
        shown = json.loads(hosts.pgpitr("a", "cluster", "describe", NAME, "-o", "json").stdout)
        ends = [datetime.fromisoformat(end) for _, end in shown["recoverable_time"]]
        return shown if len(ends) == 1 and ends[0] >= last.server_at else None

    shown = wait_for(window_past_switchover, 120, "the window to reach past the switchover", 2)
    periods = shown["recoverable_time"]
    # host a shows where the primary runs, and which host serves each member
    assert (shown["primary_host"], shown["ha_problem"]) == ("host-b", None), shown
    assert {m["name"]: m["pgpitr_host"] for m in shown["members"]} == {
        on_a.name: "",
        on_b.name: "host-b",
    }
    # host b keeps the cluster for its member only: it reads it as host a's, from the repository
    seen_on_b = json.loads(hosts.pgpitr("b", "cluster", "describe", NAME, "-o", "json").stdout)
    assert seen_on_b["host"] == "host-a", seen_on_b
    assert seen_on_b["recoverable_time"][0][0] == periods[0][0], seen_on_b
    policies = hosts.pgpitr("b", "cluster", "list-backup-policy", "-o", "json").stdout
    assert json.loads(policies) == []  # its policy is host a's
    [point] = shown["restore_points"]
    assert (point["name"], point["timeline"]) == ("on-b", taken["timeline"]), point
    assert point["restorable"], point
    with psycopg.connect(patroni.conninfo(), autocommit=True) as db:
        granted = db.execute(
            "SELECT r.rolcanlogin, pg_has_role(r.oid, 'pg_read_all_data', 'MEMBER'), "
            "starts_with(a.rolpassword, 'SCRAM-SHA-256$') "
            "FROM pg_roles r JOIN pg_authid a USING (oid) WHERE r.rolname = 'reporter'"
        ).fetchall()
    assert granted == [(True, True, True)]
    handed = hosts.runs("create-account-for-members-host-b/%")
    handed += hosts.runs("grant-role-host-b/%") + hosts.runs("create-restore-point-host-b/%")
    assert [r["state"]["type"] for r in handed] == ["COMPLETED"] * 3, handed
    for run in handed:
        assert ACCOUNT_PASSWORD not in json.dumps(run["parameters"])
    blocks = hosts.call("POST", "/block_documents/filter", {})
    assert not [b for b in blocks if b["name"].startswith("pgpitr-members-")], blocks

    after = [(n, at) for n, at in truth if at > backed_up and n < last.n]
    n, at = after[len(after) // 2]
    following = truth[numbers.index(n) + 1][1]
    target = at + (following - at) / 2
    hosts.pgpitr(
        "a",
        "cluster",
        "restore",
        f"{NAME}-at",
        "--restore-to-time",
        target.isoformat(),
        "--source-cluster",
        NAME,
        "--backup",
        "on-b",
        **secrets,
    )
    assert _restored_rows(hosts, f"{NAME}-at") == [m for m in numbers if m <= n]

    # the log-backup switch: Patroni's configuration set and a segment confirmed by host b,
    # the policy saved on host a
    archiving = patroni.dcs_config()["postgresql"]["parameters"]["archive_command"]
    toggle = ["cluster", "edit-backup-policy", POLICY, "--set", "schedule.logfile.enable="]
    for enabled, command in (("false", ARCHIVE_OFF), ("true", archiving)):
        hosts.pgpitr("a", *toggle[:-1], toggle[-1] + enabled, **secrets)
        assert patroni.dcs_config()["postgresql"]["parameters"]["archive_command"] == command
        policy = json.loads((hosts.homes["a"] / "clusters" / NAME / "policy.json").read_text())
        assert policy["logfile_enabled"] is (enabled == "true"), policy
    switched = hosts.runs("set-log-backup-for-members-host-b/%")
    assert [r["state"]["type"] for r in switched] == ["COMPLETED"] * 2, switched

    hosts.pgpitr("a", "cluster", "unregister", NAME, **secrets)
    assert not (hosts.homes["b"] / "clusters" / NAME).exists()
    assert not (hosts.homes["a"] / "clusters" / NAME).exists()
    drop_runs = hosts.runs("drop-for-members-host-b/%")
    assert [r["state"]["type"] for r in drop_runs] == ["COMPLETED"]
    assert patroni.dcs_config() == config_before
