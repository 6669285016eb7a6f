"""Running pgpitr as its service account on a test's hosts (root only): the environment of a host
of its own, its agent stopped hard at the end, the S3 repository the hosts share, and the hosts
seen from the test (``Fleet``: their commands and the Prefect API)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.fleet.netns import Host
from tests.flows.api import wait_for

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def run_as_service(
    argv: list[str],
    env: dict[str, str],
    input: str | None = None,
    timeout: float = 300,
    on: Host | None = None,
) -> subprocess.CompletedProcess[str]:
    """ARGV as pgpitr's service account, in host ON's namespace if given (entering it takes
    root: the account is taken on inside it)."""
    from pgpitr.privilege import make_service_account

    account = make_service_account()
    identity = [f"--reuid={account.uid}", f"--regid={account.gid}", "--clear-groups"]
    return subprocess.run(
        on.command(["setpriv", *identity, *argv]) if on else ["setpriv", *identity, *argv],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",
    )


def owned_by_service(path: Path) -> Path:
    from pgpitr.privilege import make_service_account

    account = make_service_account()
    os.chown(path, account.uid, account.gid)
    return path


def base_env(home: Path, **settings: str) -> dict[str, str]:
    """A clean environment: nothing of the test process's Prefect API or home."""
    prefect_home = home / "prefect-home"
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(prefect_home),
        "PREFECT_HOME": str(prefect_home),
        "PGPITR_HOME": str(home),
        "TZ": "UTC",
        "LANG": "C.UTF-8",
        **settings,
    }


def stop_agent(home: Path) -> None:
    try:
        pid = json.loads((home / "agent" / "agent.json").read_text())["pid"]
        os.killpg(pid, signal.SIGKILL)
    except (OSError, ValueError, KeyError):
        pass


@contextlib.contextmanager
def s3_repository(address: str, prefix: str) -> Iterator[str]:
    """moto's S3 server on ADDRESS (the fleet's) with a bucket of its own: the repository URL
    the hosts share."""
    import logging

    import boto3
    from moto.server import ThreadedMotoServer

    from tests.conftest import S3_KEY, S3_SECRET, free_port

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # a line per S3 request
    port = free_port()
    moto = ThreadedMotoServer(ip_address=address, port=port, verbose=False)
    moto.start()
    try:
        endpoint = f"http://{address}:{port}"
        bucket = f"{prefix}-{os.urandom(5).hex()}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEY,
            aws_secret_access_key=S3_SECRET,
        ).create_bucket(Bucket=bucket)
        yield f"s3://{bucket}/backups?endpoint={endpoint}&region=us-east-1"
    finally:
        moto.stop()


@dataclass
class Fleet:
    """Hosts joined to one Prefect server, seen from the test: their commands and the API."""

    api: str  # http://ADDRESS:PORT/api
    auth: tuple[str, str]  # the server's credentials, as the hosts were given them
    repository: str  # the S3 URL every cluster keeps its backups in
    envs: dict[str, dict[str, str]] = field(default_factory=dict)  # per host
    hosts: dict[str, Host] = field(default_factory=dict)

    def pgpitr(
        self, host: str, *args: str, input: str | None = None, check: bool = True, **extra: str
    ) -> subprocess.CompletedProcess[str]:
        """`pgpitr ARGS` on HOST: in its namespace, as the service account, in its home."""
        done = run_as_service(
            [sys.executable, "-I", "-m", "pgpitr", *args],
            {**self.envs[host], **extra},
            input,
            on=self.hosts[host],
        )
        if check:
            assert done.returncode == 0, f"{host}: pgpitr {' '.join(args)}\n{done.stderr}"
        return done

    def call(self, method: str, path: str, body: Any = None) -> Any:
        answer = httpx.request(method, self.api + path, json=body, auth=self.auth, timeout=30)
        answer.raise_for_status()
        return answer.json() if answer.content else None

    def deployment(self, flow: str, host: str) -> dict[str, Any]:
        return self.call("GET", f"/deployments/name/{flow}/pgpitr-host-{host}")

    def start_run(self, flow: str, host: str, parameters: dict[str, Any]) -> str:
        deployment = self.deployment(flow, host)
        made = self.call(
            "POST", f"/deployments/{deployment['id']}/create_flow_run", {"parameters": parameters}
        )
        return made["id"]

    def run(self, run_id: str) -> dict[str, Any]:
        return self.call("GET", f"/flow_runs/{run_id}")

    def ended(self, run_id: str, timeout: float = 180) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            found = self.run(run_id)
            return found if found["state"]["type"] in TERMINAL else None

        return wait_for(done, timeout, f"flow run {run_id} to end")

    def agent_seen(self, host: str, cluster: str, agent: str, timeout: float) -> dict[str, Any]:
        """HOST's describe of CLUSTER once it says AGENT (serving, none) of its host's agent."""
        last: dict[str, Any] = {}

        def says() -> dict[str, Any] | None:
            last.update(self.describe(host, cluster))
            return dict(last) if last["agent"] == agent else None

        try:
            return wait_for(says, timeout, f"{host}'s describe of {cluster}: agent {agent}", 2)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; it said {last}") from None

    def describe(self, host: str, cluster: str) -> dict[str, Any]:
        """What HOST's `describe --backup-repo` says of CLUSTER (another host's)."""
        shown = self.pgpitr(
            host, "cluster", "describe", cluster, "--backup-repo", self.repository, "-o", "json"
        )
        return json.loads(shown.stdout)

    def runs(self, name_like: str) -> list[dict[str, Any]]:
        """The flow runs whose names are like NAME_LIKE (SQL LIKE)."""
        return self.call("POST", "/flow_runs/filter", {"flow_runs": {"name": {"like_": name_like}}})
