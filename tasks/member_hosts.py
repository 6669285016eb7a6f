"""Reaching the other hosts of an HA cluster's members: their agents run the
``keep-for-members`` and ``drop-for-members`` flows (flows/clusters.py) on their deployments,
as child runs of the registration, so the UI shows what each host did; and, while the primary
runs on one of them, what needs the primary (``run_on_host``: pgpitr/operations/primary_host.py).

The secrets a member's host needs (the repository's keys, Patroni's REST credentials) never
travel as a parameter: they go in a Prefect Secret block of a random name, which the Prefect
server keeps encrypted and only a caller with the API's credentials reads, for as long as the
child runs take; the block is deleted when they end, however they end.  What each host found
(its members' placements) comes back as a table artifact of its run: a run's result stays in
its own host's result storage, which this host cannot read.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from typing import Any

from prefect import task

from pgpitr import waits
from pgpitr.errors import ClusterStateError, PitrError
from pgpitr.operations.register import member_hosts
from pgpitr.repository import RepositoryUrl
from tasks._common import ONCE, RETRYING, artifact_key
from tasks.naming import deployment_name, this_host

KEEP_FLOW = "keep-for-members"
DROP_FLOW = "drop-for-members"
TERMINAL = ("COMPLETED", "FAILED", "CRASHED", "CANCELLED")


def placements_key(host: str, cluster: str) -> str:
    return artifact_key("members", host, cluster)


def keep_on_member_hosts(spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Ask every other host whose agent serves pgpitr to keep the cluster SPEC describes; per
    host asked, the placements of its members (none: it wrote nothing)."""
    hosts = [h for h in served_hosts(KEEP_FLOW) if h != this_host()]
    if not hosts:
        return {}
    record = spec["cluster"]
    found = member_hosts.secrets_of_environment(RepositoryUrl.parse(record["repository"]))
    block = _store_secrets(found) if found else None
    try:
        runs = {
            host: _start(
                KEEP_FLOW,
                host,
                {"cluster": record["name"], "spec": spec, "secrets_block": block},
            )
            for host in hosts
        }
        ended = {host: _ended(run) for host, run in runs.items()}
    finally:
        if block is not None:
            _delete_block(block)
    failed = {h: r for h, r in ended.items() if r.state is None or not r.state.is_completed()}
    answers = {
        host: _placements(run.id, host, record["name"])
        for host, run in ended.items()
        if host not in failed
    }
    if failed:
        drop_on_member_hosts(record["name"], sorted(h for h, placed in answers.items() if placed))
        why = "; ".join(f"{h}: {_message(r)}" for h, r in sorted(failed.items()))
        raise ClusterStateError(
            f"the hosts of {record['name']!r}'s other members could not keep it: {why}",
            hint="see the keep-for-members runs in the Prefect UI; nothing was changed",
        )
    return answers


def drop_on_member_hosts(cluster: str, hosts: list[str]) -> None:
    """Have the agents of HOSTS forget their copy of CLUSTER; every host is asked even when
    one fails, and the failures are raised together."""
    runs = {
        host: _start(DROP_FLOW, host, {"cluster": cluster, "home_host": this_host()})
        for host in hosts
    }
    failed = {
        h: r
        for h, r in ((h, _ended(r)) for h, r in runs.items())
        if r.state is None or not r.state.is_completed()
    }
    if failed:
        why = "; ".join(f"{h}: {_message(r)}" for h, r in sorted(failed.items()))
        raise ClusterStateError(
            f"hosts could not forget their copy of {cluster!r}: {why}",
            hint=f"run `pgpitr cluster unregister {cluster}` again once their agents run",
            transient=True,
        )


def run_on_host(
    host: str,
    flow_name: str,
    parameters: dict[str, Any],
    *,
    needs: str,
    secrets: dict[str, str] | None = None,
) -> Any:
    """Run FLOW_NAME on HOST's deployment as a child run of this one, with PARAMETERS, and wait
    for it (an operation that NEEDS the primary, which runs there); SECRETS go through a Secret
    block named in its ``secrets_block`` parameter, deleted when it ends.  Its failure is raised
    here as the error it raised there (its type, message and hint, from the run's state)."""
    cluster = parameters["cluster"]
    if host not in served_hosts(flow_name):
        raise ClusterStateError(
            f"the primary of {cluster!r} runs on host {host}, whose agent does not serve "
            f"pgpitr now: {needs} needs the primary's host",
            hint=f"start `pgpitr agent` on host {host}",
            transient=True,
        )
    block = _store_secrets(secrets) if secrets else None
    try:
        given = {**parameters, "secrets_block": block} if block else parameters
        run = _ended(_start(flow_name, host, given))
    finally:
        if block is not None:
            _delete_block(block)
    if run.state is None or not run.state.is_completed():
        raise _raised_there(run, host, flow_name, cluster)
    return run


#: how Prefect words a failed flow run's state: "…exception: TypeName: message\n  hint: …"
_FAILURE = re.compile(r"^Flow run encountered an exception: (\w+): (.*)$", re.DOTALL)


def _raised_there(run: Any, host: str, flow_name: str, cluster: str) -> PitrError:
    """The error a run on HOST ended with: one of pgpitr's errors, as raised there (named by
    its type only, and only looked up among pgpitr's errors), or a ClusterStateError."""
    from pgpitr import errors

    matched = _FAILURE.match((getattr(run.state, "message", None) or "").strip())
    kind = getattr(errors, matched.group(1), None) if matched else None
    if matched and isinstance(kind, type) and issubclass(kind, PitrError):
        message, _, hint = matched.group(2).partition("\n  hint: ")
        error = kind.__new__(kind)
        # not retried here: the run there retried what could succeed later
        PitrError.__init__(error, f"host {host}: {message}", hint=hint or None, transient=False)
        return error
    return ClusterStateError(
        f"{flow_name} of {cluster!r} on host {host} ended {_message(run)}",
        hint=f"see the run {run.name} in the Prefect UI",
    )


def served_hosts(flow_name: str) -> list[str]:
    """The hosts whose agent serves FLOW_NAME now (its deployment READY), by the deployment's
    host tag."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        deployments = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name]))
        )
    hosts = set()
    for deployment in deployments:
        status = getattr(deployment.status, "value", deployment.status)
        if status != "READY":
            continue
        hosts.update(t.removeprefix("host:") for t in deployment.tags if t.startswith("host:"))
    return sorted(hosts)


def _start(flow_name: str, host: str, parameters: dict[str, Any]) -> Any:
    from prefect.deployments import run_deployment

    return run_deployment(f"{flow_name}/{deployment_name(host)}", parameters=parameters, timeout=0)


def _ended(flow_run: Any) -> Any:
    """FLOW_RUN once it ended; cancelled when no agent started it in time."""
    from prefect.client.orchestration import get_client
    from prefect.states import Cancelled

    began = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run.id)
            if run.state is not None and run.state.type.value in TERMINAL:
                return run
            waited = time.monotonic() - began
            if (
                run.state is not None
                and run.state.is_scheduled()
                and waited > waits.RUN_START.seconds()
            ):
                client.set_flow_run_state(flow_run.id, Cancelled(message="no agent started it"))
                return client.read_flow_run(flow_run.id)
            time.sleep(0.5)


def _message(run: Any) -> str:
    state = run.state
    text = (getattr(state, "message", None) or (state.name if state else "no state")).strip()
    return (text.splitlines() or [""])[0][:300]


def _placements(run_id: Any, host: str, cluster: str) -> list[dict[str, Any]]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter

    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(
                key=ArtifactFilterKey(any_=[placements_key(host, cluster)])
            ),
            flow_run_filter=FlowRunFilter(id={"any_": [run_id]}),
        )
    if not artifacts:
        raise PitrError(f"the keep-for-members run of host {host} left no table of its members")
    data = artifacts[0].data
    rows = json.loads(data) if isinstance(data, str) else data
    return [row for row in rows if row.get("datadir")]


def _store_secrets(found: dict[str, str]) -> str:
    from prefect.blocks.system import Secret

    name = f"pgpitr-members-{secrets.token_hex(8)}"
    Secret(value=found).save(name)
    return name


def _delete_block(name: str) -> None:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        document = client.read_block_document_by_name(name, block_type_slug="secret")
        client.delete_block_document(document.id)


def secrets_of_block(name: str | None) -> dict[str, str]:
    """The secrets a keep-for-members run was given (by its block's name)."""
    if not name:
        return {}
    from prefect.blocks.system import Secret

    value = Secret.load(name).get()
    return dict(json.loads(value) if isinstance(value, str) else value)


# -- on the member's host --------------------------------------------------------------------


@task(name="keep-cluster-copy", **ONCE)
def keep_here(
    cluster: str, spec: dict[str, Any], secrets_block: str | None
) -> list[dict[str, Any]]:
    """This host keeps CLUSTER for its members (if it runs any); a table artifact says which."""
    from prefect.artifacts import create_table_artifact

    placed = member_hosts.keep(spec, secrets_of_block(secrets_block))
    create_table_artifact(
        placed or [{"name": "", "datadir": "", "note": "no member of the cluster runs here"}],
        key=placements_key(this_host(), cluster),
        description=f"members of {cluster} on host {this_host()}",
    )
    return placed


drop_here = task(name="drop-cluster-copy", **RETRYING)(member_hosts.drop)


@task(name="create-account", **ONCE)
def create_account_here(cluster: str, username: str, secrets_block: str | None) -> None:
    """Create USERNAME in CLUSTER with the password the Secret block SECRETS_BLOCK holds (the
    password is neither a parameter nor this task's result)."""
    from pgpitr.errors import InvalidInput
    from pgpitr.operations import accounts
    from pgpitr.postgres.cluster import Cluster

    password = secrets_of_block(secrets_block).get(accounts.PASSWORD_ENV)
    if not password:
        raise InvalidInput(
            f"no password came with the request to create {username!r}",
            hint="run `pgpitr cluster create-account` on the cluster's own host",
        )
    accounts.create_account(Cluster.get(cluster), username, password)
