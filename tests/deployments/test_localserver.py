"""The embedded default Prefect server: started once by the first command that needs the API,
reused by the next ones (same pid and port), found by the `prefect` CLI through the profile it
writes, stopped by `pgpitr server stop`.  Each test has its own PGPITR_HOME, PREFECT_HOME and
port, and no PREFECT_API_URL (the session's harness stays out of it)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments import localserver
from pgpitr.errors import PitrError
from tests.conftest import PGPITR, free_port, reachable_tempdir, stop_everything_under


@pytest.fixture
def alone() -> Iterator[dict[str, str]]:
    """A child environment with its own homes and port, and no Prefect API configured."""
    base = reachable_tempdir("pgpitr-local-")
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(
        PGPITR_HOME=str(base / "home"),
        PREFECT_HOME=str(base / "prefect-home"),
        PGPITR_PREFECT_PORT=str(free_port()),
        PGPITR_HOST="solo",
        TZ="UTC",
    )
    yield env
    stop_everything_under(base / "home")
    with contextlib.suppress(OSError, ValueError, KeyError):  # whatever the test left running
        pid = json.loads((base / "home" / "prefect" / "server.json").read_text())["pid"]
        os.killpg(pid, signal.SIGKILL)
    shutil.rmtree(base, ignore_errors=True)


def pgpitr(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([*PGPITR, *args], capture_output=True, text=True, env=env, timeout=300)
    if check:
        assert done.returncode == 0, f"pgpitr {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done


def credentials(env: dict[str, str]) -> str:
    """The local server's auth string, as the account's commands read it."""
    return (Path(env["PGPITR_HOME"]) / "prefect" / "api-credentials").read_text().strip()


def server_status(env: dict[str, str]) -> dict:
    return json.loads(pgpitr(env, "server", "status", "-o", "json").stdout)


def test_the_first_command_starts_one_server_and_the_next_reuse_it(alone):
    port = int(alone["PGPITR_PREFECT_PORT"])
    first = pgpitr(alone, "cluster", "create", "my-pg", "--port", str(free_port()))
    assert "started the local Prefect server" in first.stderr
    before = server_status(alone)
    assert before["answering"] and before["managed"] and before["port"] == port
    assert Path(before["database"]).is_relative_to(Path(alone["PGPITR_HOME"]) / "prefect")

    second = pgpitr(alone, "cluster", "create-account", "my-pg", "--username", "u")
    assert "started the local Prefect server" not in second.stderr
    after = server_status(alone)
    assert (after["pid"], after["port"]) == (before["pid"], before["port"])

    # the API asks for the credentials, which only the account's 0600 files hold
    api = f"http://127.0.0.1:{port}/api"
    secret_file = Path(alone["PGPITR_HOME"]) / "prefect" / "api-credentials"
    secret = secret_file.read_text().strip()
    assert secret.startswith("pgpitr:") and len(secret) > 40
    assert secret_file.stat().st_mode & 0o777 == 0o600
    assert httpx.post(f"{api}/flow_runs/filter", json={}, timeout=10).status_code == 401
    assert httpx.get(f"{api}/deployments/name/a/b", timeout=10).status_code == 401
    authed = httpx.post(f"{api}/flow_runs/filter", json={}, auth=tuple(secret.split(":", 1)))
    assert authed.status_code == 200
    for name in ("server.log", "server.json"):
        assert secret not in (Path(alone["PGPITR_HOME"]) / "prefect" / name).read_text()

    # the `prefect` CLI finds the same server through the profile pgpitr wrote
    profile_file = Path(alone["PREFECT_HOME"]) / "profiles.toml"
    assert profile_file.stat().st_mode & 0o777 == 0o600  # it holds the auth string
    profiles = tomllib.loads(profile_file.read_text())
    assert profiles["active"] == "pgpitr"
    assert profiles["profiles"]["pgpitr"]["PREFECT_API_URL"] == api
    assert profiles["profiles"]["pgpitr"]["PREFECT_API_AUTH_STRING"] == secret
    runs = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "ls", "-o", "json"],
        capture_output=True,
        text=True,
        env=alone,
        timeout=120,
    )
    assert runs.returncode == 0, runs.stderr
    names = {run["name"] for run in json.loads(runs.stdout)}
    assert {"create-cluster-solo/my-pg", "create-account-solo/my-pg-u"} <= names

    stopped = pgpitr(alone, "server", "stop")
    assert str(before["pid"]) in stopped.stderr
    assert not server_status(alone)["answering"]

    # with no server nothing fires: describe says so (and, reading only, starts none)
    described = pgpitr(alone, "cluster", "describe", "my-pg")
    assert (
        "warning: scheduled backups of my-pg will not run: no Prefect API is configured or "
        "running — start pgpitr's local Prefect server and this host's agent with "
        "`pgpitr agent start`" in described.stderr
    ), described.stderr
    shown = json.loads(pgpitr(alone, "cluster", "describe", "my-pg", "-o", "json").stdout)
    assert "will not run" in shown["schedule_warning"], shown
    assert not server_status(alone)["answering"]


def test_read_only_commands_and_refused_input_start_no_server(alone):
    listed = pgpitr(alone, "cluster", "list-backup-policy")
    assert listed.returncode == 0
    # checks that need no flow answer before any flow (or server) starts
    unknown = pgpitr(alone, "cluster", "backup", "nope", check=False)
    assert unknown.returncode == 3 and "cluster 'nope' does not exist" in unknown.stderr
    scheme = pgpitr(alone, "cluster", "create", "x", "--backup-repo", "http://a/b", check=False)
    assert scheme.returncode != 0 and "expected file://" in scheme.stderr
    (Path(alone["PGPITR_HOME"]) / "clusters" / "taken").mkdir(parents=True)
    taken = pgpitr(alone, "cluster", "create", "taken", check=False)
    assert taken.returncode == 4 and "cluster 'taken' already exists" in taken.stderr
    assert not (Path(alone["PGPITR_HOME"]) / "prefect" / "server.json").exists()
    assert not server_status(alone)["answering"]


def test_the_profile_keeps_the_users_other_profiles(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    (tmp_path / "profiles.toml").write_text(
        'active = "work"\n\n[profiles.work]\nPREFECT_API_URL = "https://prefect.example/api"\n'
        "PREFECT_API_ENABLE_HTTP2 = false\n"
    )
    localserver.write_profile("http://127.0.0.1:4999/api")
    data = tomllib.loads((tmp_path / "profiles.toml").read_text())
    assert data["active"] == "pgpitr"
    assert data["profiles"]["pgpitr"] == {"PREFECT_API_URL": "http://127.0.0.1:4999/api"}
    assert data["profiles"]["work"] == {
        "PREFECT_API_URL": "https://prefect.example/api",
        "PREFECT_API_ENABLE_HTTP2": False,
    }


def test_the_server_listens_on_the_address_asked_and_refuses_a_vague_one(monkeypatch):
    monkeypatch.delenv(localserver.ADDRESS_ENV, raising=False)
    monkeypatch.setenv(localserver.PORT_ENV, "4321")
    assert localserver.url() == "http://127.0.0.1:4321/api"
    monkeypatch.setenv(localserver.ADDRESS_ENV, "10.0.0.5")
    assert localserver.url() == "http://10.0.0.5:4321/api"
    monkeypatch.setenv(localserver.ADDRESS_ENV, "fd00::5")
    assert localserver.url() == "http://[fd00::5]:4321/api"
    for vague, says in (("0.0.0.0", "listens everywhere"), ("db1.example", "not an IP address")):
        monkeypatch.setenv(localserver.ADDRESS_ENV, vague)
        with pytest.raises(PitrError, match=says):
            localserver.url()
