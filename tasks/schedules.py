"""Each cluster's backup policy, as schedules of the pgpitr deployments: one source of truth;
and the tasks that write them.

One deployment per flow and host serves every cluster of that host (the cluster is a flow
parameter; ``FLOW/pgpitr-HOST``, tasks/naming.py).  Each cluster has one schedule on its host's
``backup``, ``apply-retention`` and ``refresh-recoverable-window`` deployments, whose slug is
``HOST/NAME`` and whose parameters name the cluster:

- backup: the policy's ``schedule.datafile.cronExpression`` in its timezone, active while
  ``schedule.datafile.enable`` is true, and retention applied right after each scheduled backup;
  and a second one, slug ``HOST/NAME/incremental``, for ``schedule.incremental.cronExpression``
  (incremental backups, PostgreSQL 17+), active while ``schedule.incremental.enable`` is true;
- drill: the policy's ``schedule.drill.cronExpression`` (daily by default) in its timezone,
  active while ``schedule.drill.enable`` is true.

The host's housekeeping is one run for all its clusters, not one per cluster (a run is a process
of its own: fifty clusters made three hundred of them an hour), on its ``housekeeping``
deployment, slugs ``HOST/*`` and ``HOST/*/retention``: every ten minutes each cluster's window is
refreshed (which also checks that WAL archiving keeps up), and at half past each hour its
retention applied too (a backup that expires between two backups still goes).  Each cluster's
refresh and retention still run, and show, as that cluster's own (sub)flow runs.

``sync`` writes a cluster's schedules from its policy (``edit-backup-policy`` runs it in the same
flow that saves the policy); ``remove`` takes them away when the cluster is deleted; serving the
deployments (``deployments.serve``) recreates all of them from the saved policies, and
``python -m deployments.schedules`` rewrites them after a ``prefect deploy``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from prefect import task

from pgpitr import policy as pol
from pgpitr import policy_store, scratch
from pgpitr.postgres.cluster import Cluster
from tasks._common import RETRYING, logger
from tasks.naming import deployment_name, schedule_slug, this_host

#: the host's housekeeping: the windows every ten minutes, with retention at half past the hour
#: (one run then does both)
WINDOW_CRON = "0,10,20,40,50 * * * *"
RETENTION_CRON = "30 * * * *"
#: a slug's cluster part that no cluster name can be: every cluster of the host
EVERY_CLUSTER = "*"
#: Runs created ahead of time for each schedule when it changes (the scheduler adds the rest).
NEXT_RUNS = 3
SCHEDULED_FLOWS = ("backup", "drill")


@dataclass(frozen=True)
class ClusterSchedule:
    flow: str
    cluster: str
    cron: str
    timezone: str
    active: bool
    parameters: dict[str, Any] = field(default_factory=dict)
    host: str = field(default_factory=this_host)
    #: a second schedule of the same flow and cluster ("incremental"): its slug's last part
    variant: str = ""

    @property
    def slug(self) -> str:
        base = schedule_slug(self.cluster, self.host)
        return f"{base}/{self.variant}" if self.variant else base

    @property
    def deployment(self) -> str:
        return f"{self.flow}/{deployment_name(self.host)}"


def for_policy(policy: pol.BackupPolicy, host: str | None = None) -> list[ClusterSchedule]:
    name = policy.cluster
    if scratch.is_scratch(name):
        return []  # a drill's scratch cluster lives for minutes: serving it would leave schedules
    host = host or this_host()
    return [
        ClusterSchedule(
            "backup",
            name,
            policy.cron,
            policy.timezone,
            policy.datafile_enabled,
            {"cluster": name, "apply_retention_after": True},
            host,
        ),
        ClusterSchedule(
            "backup",
            name,
            policy.incremental_cron,
            policy.timezone,
            policy.incremental_enabled,
            {"cluster": name, "apply_retention_after": True, "backup_type": "incremental"},
            host,
            variant="incremental",
        ),
        ClusterSchedule(
            "drill",
            name,
            policy.drill_cron,
            policy.timezone,
            policy.drill_enabled,
            {"cluster": name, "at": "random"},
            host,
        ),
    ]


def for_host(host: str | None = None) -> list[ClusterSchedule]:
    """The host's housekeeping schedules (every cluster of the host in one run)."""
    host = host or this_host()
    return [
        ClusterSchedule(
            "housekeeping", EVERY_CLUSTER, WINDOW_CRON, "UTC", True, {"retention": False}, host
        ),
        ClusterSchedule(
            "housekeeping",
            EVERY_CLUSTER,
            RETENTION_CRON,
            "UTC",
            True,
            {"retention": True},
            host,
            variant="retention",
        ),
    ]


def as_prefect(schedule: ClusterSchedule) -> Any:
    """The schedule as ``flow.to_deployment(schedules=...)`` takes it."""
    from prefect.schedules import Cron

    return Cron(
        schedule.cron,
        timezone=schedule.timezone,
        active=schedule.active,
        parameters=schedule.parameters,
        slug=schedule.slug,
    )


def sync(policy: pol.BackupPolicy, client: Any = None, host: str | None = None) -> list[str]:
    """Create or update the cluster's schedules on every deployment that exists; say what."""
    return _sync(for_policy(policy, host), client)


def sync_host(host: str | None = None, client: Any = None) -> list[str]:
    """Create or update the host's housekeeping schedules (after a ``prefect deploy``)."""
    return _sync(for_host(host), client)


def _sync(schedules: list[ClusterSchedule], client: Any) -> list[str]:
    """Each deployment is read once and, when one of its schedules was written, asked once to
    schedule its next runs: the server deletes every cluster's scheduled runs of a deployment
    when any of its schedules changes, and they must not wait for the scheduler's next pass."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    done = []
    began = datetime.now(UTC)
    by_deployment: dict[str, list[ClusterSchedule]] = {}
    for wanted in schedules:
        by_deployment.setdefault(wanted.deployment, []).append(wanted)
    with _client(client, get_client) as api:
        for target, wanted_here in by_deployment.items():
            try:
                deployment = api.read_deployment_by_name(target)
            except ObjectNotFound:
                done.append(f"{target}: not deployed")
                continue
            existing = {s.slug: s for s in deployment.schedules}
            runs_to_make = False
            for wanted in wanted_here:
                state = "active" if wanted.active else "paused"
                said = f"{target}: {wanted.cron} ({wanted.timezone}), {state}"
                if wanted.slug in existing and _same(existing[wanted.slug], wanted):
                    # a policy change elsewhere (retention, log backup): no write, and the runs
                    # already scheduled stand
                    done.append(f"{said}, unchanged")
                    continue
                _write(api, deployment.id, existing.get(wanted.slug), wanted)
                runs_to_make = True
                done.append(said)
            if runs_to_make:
                _make_runs(api, deployment.id, began)
    return done


def _make_runs(api: Any, deployment_id: Any, since: datetime) -> None:
    """Place the deployment's next runs now rather than at the server's next scheduling pass
    (runs are keyed by schedule and time: never twice), from SINCE, a moment before the write
    that deleted them: a run of another cluster due between the two is made again, not lost."""
    api.request(
        "POST",
        f"/deployments/{deployment_id}/schedule",
        json={"max_runs": NEXT_RUNS, "start_time": since.isoformat()},
    )


def _write(api: Any, deployment_id: Any, existing: Any, wanted: ClusterSchedule) -> None:
    """Update the deployment's schedule of that slug, or create it."""
    from prefect.client.schemas.actions import DeploymentScheduleCreate
    from prefect.client.schemas.schedules import CronSchedule

    cron = CronSchedule(cron=wanted.cron, timezone=wanted.timezone)
    if existing is not None:
        api.update_deployment_schedule(
            deployment_id,
            existing.id,
            active=wanted.active,
            schedule=cron,
            parameters=wanted.parameters,
        )
        return
    api.create_deployment_schedules(
        deployment_id,
        [
            DeploymentScheduleCreate(
                schedule=cron, active=wanted.active, parameters=wanted.parameters, slug=wanted.slug
            )
        ],
    )


def _same(schedule: Any, wanted: ClusterSchedule) -> bool:
    """Whether a deployment's schedule already is the one the policy wants."""
    shown = schedule.schedule
    return (
        getattr(shown, "cron", None) == wanted.cron
        and getattr(shown, "timezone", None) == wanted.timezone
        and schedule.active == wanted.active
        and (schedule.parameters or {}) == wanted.parameters
    )


def remove(cluster: str, client: Any = None, host: str | None = None) -> list[str]:
    """Take the cluster's schedules off its host's deployments (their scheduled runs go too)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    done = []
    began = datetime.now(UTC)
    with _client(client, get_client) as api:
        for flow_name in SCHEDULED_FLOWS:
            target = f"{flow_name}/{deployment_name(host)}"
            try:
                deployment = api.read_deployment_by_name(target)
            except ObjectNotFound:
                continue
            mine = schedule_slug(cluster, host)
            removed = False
            for schedule in deployment.schedules:
                # a cluster name has no '/': HOST/NAME/... is this cluster's and no other's
                if schedule.slug == mine or (schedule.slug or "").startswith(f"{mine}/"):
                    api.delete_deployment_schedule(deployment.id, schedule.id)
                    done.append(f"{target}: schedule of {cluster} removed")
                    removed = True
            if removed:
                # the deletion took every cluster's scheduled runs of the deployment with it
                _make_runs(api, deployment.id, began)
    return done


class _client:
    """The caller's client, or a new synchronous one closed afterwards."""

    def __init__(self, given: Any, factory: Any) -> None:
        self._given = given
        self._factory = factory
        self._own: Any = None

    def __enter__(self) -> Any:
        if self._given is not None:
            return self._given
        self._own = self._factory(sync_client=True)
        return self._own.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._own is not None:
            self._own.__exit__(*exc)


@task(name="sync-schedules", **RETRYING)
def sync_schedules(cluster: str) -> list[str]:
    """Write the cluster's policy into the deployments' schedules."""
    found = Cluster.get(cluster)
    done = sync(policy_store.load_policy(found), host=found.state.host)
    for line in done:
        logger().info(line)
    return done


@task(name="remove-schedules", **RETRYING)
def remove_schedules(cluster: str) -> list[str]:
    done = remove(cluster)
    for line in done:
        logger().info(line)
    return done
