"""prefect.yaml, written from the one list of flows (flows/registry.py):
``python -m deployments.prefect_yaml --write`` after a change to the list, ``--check`` to see
that the file is what the list makes (tests/deployments/test_prefect_yaml.py does).

Every served flow is deployed to the process work pool (``pgpitr``), and every served flow, the
Kubernetes ones too, to the Kubernetes work pool (``pgpitr-kubernetes``).  The file's first
part, its pools and their settings, is written here as it stands in the file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.registry import FLOWS, FlowEntry

PREFECT_YAML = Path(__file__).resolve().parents[1] / "prefect.yaml"

HEAD = """\
# Written by `python -m deployments.prefect_yaml --write` from flows/registry.py, the list of
# flows: change the list (or that module), not this file.
#
# pgpitr's deployments for Prefect work pools: the same flows `pgpitr serve` serves on one
# machine, here for a `process` work pool (name: pgpitr) and a `kubernetes` work pool (name:
# pgpitr-kubernetes).  From a clone, against any Prefect API (e.g. `prefect server start`):
#
#   PGPITR_HOST=$(hostname) prefect --no-prompt deploy --all   # creates the work pools if missing
#   python -m deployments.schedules           # every cluster's schedules, from its backup policy
#   prefect worker start --pool pgpitr-process --work-queue $(hostname)
#
# The process pool has a work queue per host, named after it (PGPITR_HOST, or the hostname as
# pgpitr has it): each host runs a worker on its own queue, and `pgpitr cluster … --wait` (with
# PGPITR_DEPLOYMENT=pgpitr) sends a run to the queue of the cluster's host.  A deployment has
# one default queue, the one of the host that ran `prefect deploy`; scheduled runs go there, so
# with several hosts their schedules belong on the agents' deployments per host (`pgpitr agent`).
#
# Schedules are not declared here: each cluster's backup policy owns them (one schedule per
# cluster, slug = cluster name), and a `prefect deploy` replaces a deployment's schedules, so run
# `python -m deployments.schedules` after it.  Set PGPITR_DEPLOYMENT=pgpitr-kubernetes for the CLI
# and the schedules to use the Kubernetes deployments.
#
# One backup and one restore per cluster at a time: a deployment's concurrency_limit counts the
# runs of the deployment, and these deployments serve every cluster, so the limit per cluster is
# a global concurrency limit the flows take (pgpitr-backup-CLUSTER waits its turn: enqueue;
# pgpitr-restore-CLUSTER refuses a second restore).  See docs/orchestration.md.
name: pgpitr
prefect-version: 3.8.8

build: null
push: null
# Process pool: runs start in the directory `prefect deploy` ran in (this clone).
pull:
  - prefect.deployments.steps.set_working_directory:
      directory: "{{ $PWD }}"

definitions:
  tags: &tags [pgpitr]
  process_pool: &process_pool
    name: pgpitr-process
    work_queue_name: "{{ $PGPITR_HOST }}"   # the host's queue; set PGPITR_HOST to deploy
    job_variables:
      # a heartbeat every 30 s, as the agents' runs: deployments/orphans.py
      env: {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: "30"}
  kubernetes_pool: &kubernetes_pool
    name: pgpitr-kubernetes
    job_variables:
      image: ghcr.io/pgpitr/pgpitr:0.1.0    # an image with this repository in /opt/pgpitr
      namespace: pgpitr
      service_account_name: pgpitr
      image_pull_policy: IfNotPresent
      env: {PREFECT_FLOWS_HEARTBEAT_FREQUENCY: "30"}
  kubernetes_pull: &kubernetes_pull
    - prefect.deployments.steps.set_working_directory:
        directory: /opt/pgpitr

deployments:
  # First: loading its entrypoint creates the work pools when missing (deployments/pools.py).
  - name: pgpitr
    entrypoint: deployments/pools.py:ensure_work_pools
    description: Create pgpitr's work pools when missing.
    tags: *tags
    work_pool: *process_pool

"""


def _deployment(name: str, entry: FlowEntry, pool: str, pull: str | None) -> str:
    lines = [
        f"  - name: {name}",
        f"    entrypoint: {entry.path}",
        "    tags: *tags",
        f"    work_pool: *{pool}",
    ]
    if pull:
        lines.append(f"    pull: *{pull}")
    return "\n".join(lines) + "\n"


def render() -> str:
    """prefect.yaml as the registry makes it."""
    served = [e for e in FLOWS if e.served]
    process = [_deployment("pgpitr", e, "process_pool", None) for e in served if not e.kubernetes]
    kubernetes = [
        _deployment("pgpitr-kubernetes", e, "kubernetes_pool", "kubernetes_pull") for e in served
    ]
    return (
        HEAD
        + "  # -- process work pool "
        + "-" * 65
        + "\n"
        + "".join(process)
        + "\n  # -- kubernetes work pool "
        + "-" * 62
        + "\n"
        + "".join(kubernetes)
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deployments.prefect_yaml")
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--write", action="store_true", help="write prefect.yaml")
    mode.add_argument("--check", action="store_true", help="fail if prefect.yaml differs")
    args = parser.parse_args(argv)
    wanted = render()
    if args.write:
        PREFECT_YAML.write_text(wanted)
        return 0
    if PREFECT_YAML.read_text() != wanted:
        print(
            f"{PREFECT_YAML} is not what flows/registry.py makes: "
            "run python -m deployments.prefect_yaml --write",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
