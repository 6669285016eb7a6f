"""Root installs, and every other pgpitr process runs as the service account: the install makes
the account, its home and the API credentials; a command root starts leaves root for the
account and refuses a home root owns; the local API refuses whoever lacks the credentials, and
a server another account runs on the port is sent none."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from deployments import localserver
from pgpitr.privilege import Account, make_service_account
from tests.conftest import PGPITR, free_port, reachable_tempdir, stop_everything_under
from tests.flows.api import wait_for

pytestmark = [pytest.mark.root, pytest.mark.timeout(300)]


ACCOUNT = "pgpitr-satest"


@pytest.fixture
def base() -> Iterator[Path]:
    path = reachable_tempdir("pgpitr-install-")
    yield path
    stop_everything_under(path / "home")
    with contextlib.suppress(OSError, ValueError, KeyError):
        pid = json.loads((path / "home" / "prefect" / "server.json").read_text())["pid"]
        os.killpg(pid, 9)
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def account(monkeypatch: pytest.MonkeyPatch) -> Account:
    """A service account of the test's own, with no login directory (its Prefect profile then
    goes in its PGPITR_HOME): the machine's own account and profile stay as they are."""
    try:
        pwd.getpwnam(ACCOUNT)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--user-group", "--home-dir", "/nonexistent", "--shell",
             "/usr/sbin/nologin", ACCOUNT],
            check=True,
        )  # fmt: skip
    monkeypatch.setenv("PGPITR_OS_USER", ACCOUNT)
    return make_service_account()


def environment(base: Path, **more: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(
        PGPITR_OS_USER=ACCOUNT,
        PGPITR_HOME=str(base / "home"),
        PREFECT_HOME=str(base / "root-prefect"),
        PGPITR_PREFECT_PORT=str(free_port()),
        **more,
    )
    return env


def pgpitr(env: dict[str, str], *args: str, user: int | None = None) -> subprocess.CompletedProcess:
    identity = {} if user is None else {"user": user, "group": user, "extra_groups": []}
    return subprocess.run(
        [*PGPITR, *args], capture_output=True, text=True, env=env, timeout=240, **identity
    )


def test_install_makes_the_account_its_home_and_the_api_credentials(
    base: Path, account: Account
) -> None:
    env = environment(base)
    home = base / "home"
    done = pgpitr(env, "install")
    assert done.returncode == 0, done.stderr
    assert f"pgpitr runs as {account.name}" in done.stderr
    assert (home.stat().st_uid, home.stat().st_mode & 0o777) == (account.uid, 0o750)
    secret_file = home / "prefect" / "api-credentials"
    info = secret_file.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (account.uid, 0o600)
    secret = secret_file.read_text().strip()
    # root's own `prefect` reaches the local server with them; the file is root's alone
    profile = base / "root-prefect" / "profiles.toml"
    assert profile.stat().st_uid == 0 and profile.stat().st_mode & 0o777 == 0o600
    settings = tomllib.loads(profile.read_text())["profiles"]["pgpitr"]
    assert settings["PREFECT_API_AUTH_STRING"] == secret
    assert secret not in done.stdout + done.stderr

    # an older home of root's is handed over, without following a link planted in it
    sentinel = base / "root-sentinel"
    sentinel.write_text("root's")
    (home / "clusters").mkdir()
    os.chown(home / "clusters", 0, 0)
    (home / "clusters" / "cluster.json").write_text("{}")
    os.symlink(sentinel, home / "clusters" / "link")
    again = pgpitr(env, "install")
    assert again.returncode == 0, again.stderr
    assert secret_file.read_text().strip() == secret  # kept, not made anew
    for path in (home / "clusters", home / "clusters" / "cluster.json"):
        assert path.stat().st_uid == account.uid
    assert sentinel.stat().st_uid == 0


def test_a_command_root_starts_refuses_a_home_root_owns(base: Path, account: Account) -> None:
    home = base / "home"
    home.mkdir()
    done = pgpitr(environment(base), "cluster", "create", "mine")
    assert done.returncode == 1
    assert f"PGPITR_HOME {home} belongs to root" in done.stderr and "Traceback" not in done.stderr
    assert list(home.iterdir()) == []


def test_the_api_refuses_whoever_lacks_the_credentials(base: Path, account: Account) -> None:
    env = environment(base)
    assert pgpitr(env, "install").returncode == 0
    started = pgpitr(env, "server", "start")
    assert started.returncode == 0, started.stderr
    api = f"http://127.0.0.1:{env['PGPITR_PREFECT_PORT']}/api"
    server = json.loads((base / "home" / "prefect" / "server.json").read_text())["pid"]
    assert Path(f"/proc/{server}").stat().st_uid == account.uid
    nobody = 65534
    probe = textwrap.dedent(f"""
        import httpx, pathlib, sys
        try:
            pathlib.Path({str(base / "home" / "prefect" / "api-credentials")!r}).read_text()
            sys.exit("the credentials were readable")
        except PermissionError:
            pass
        flow = httpx.post({api!r} + "/flows/", json={{"name": "mine"}}, timeout=30)
        run = httpx.post({api!r} + "/flow_runs/filter", json={{}}, timeout=30)
        print(flow.status_code, run.status_code)
        """)
    done = subprocess.run(
        [sys.executable, "-I", "-c", probe],
        capture_output=True,
        text=True,
        user=nobody,
        group=nobody,
        extra_groups=[],
        cwd="/",
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["401", "401"]
    # root's `prefect`, through the profile the install wrote, is let in
    listed = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "ls"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert listed.returncode == 0, listed.stderr
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200  # liveness stays open


def test_a_server_another_account_runs_on_the_port_is_sent_no_credentials(
    base: Path, account: Account
) -> None:
    env = environment(base)
    assert pgpitr(env, "install").returncode == 0
    port = int(env["PGPITR_PREFECT_PORT"])
    heard = base / "heard"
    impostor = textwrap.dedent(f"""
        import http.server
        class Answer(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with open({str(heard)!r}, "a") as f:
                    f.write(self.path + " " + str(self.headers.get("Authorization")) + "\\n")
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"true")
            do_POST = do_GET
        http.server.HTTPServer(("127.0.0.1", {port}), Answer).serve_forever()
        """)
    heard.touch()
    heard.chmod(0o666)
    server = subprocess.Popen(
        [sys.executable, "-I", "-c", impostor],
        user=65534,
        group=65534,
        extra_groups=[],
        cwd="/",
    )
    try:
        wait_for(lambda: localserver.listener_uids(port), 30, "the impostor listening")
        refused = pgpitr(env, "cluster", "create", "mine")
        assert refused.returncode != 0
        assert f"port {port} is held by a process of nobody" in refused.stderr, refused.stderr
        assert not (base / "home" / "clusters" / "mine").exists()
        assert "/api/health None" in heard.read_text()  # it was asked, and
        assert "Basic" not in heard.read_text()  # the credentials never went there
    finally:
        server.kill()
        server.wait(timeout=10)
