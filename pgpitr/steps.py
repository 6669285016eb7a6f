"""How an operation's steps run.

Each operation (backup, restore, retention, …) writes the order of its steps once, in its engine
module, as a function that takes a ``Steps`` and calls every step through it::

    def run(steps: Steps, cluster: str, name: str) -> Manifest:
        policy = steps(check_cluster, cluster)
        manifest = steps(stream, cluster, name)
        ...

``Steps`` itself runs each step here, in order, with nothing around it: what tests and plain
Python callers use.  The Prefect layer (``tasks/``) passes a ``Steps`` that runs each step as its
task (retries, timeouts, the UI), inside Prefect transactions.  So the engine owns the order and
the orchestration owns how a step is run, and neither is written twice.

A step that creates something names its undo with ``@undone_by(fn)``: inside
``steps.transaction()``, when a later step fails, ``fn(result)`` is called for every completed
step in reverse order.  Hooks for what only the orchestration has (the deployments' schedules)
are methods that do nothing here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
R = TypeVar("R")

log = logging.getLogger("pgpitr")


def undone_by(undo: Callable[[Any], None]) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Mark a step as creating something that ``undo(result)`` removes on rollback."""

    def mark(step: Callable[P, R]) -> Callable[P, R]:
        step.undo = undo  # type: ignore[attr-defined]
        return step

    return mark


def undo_of(step: Callable[..., Any]) -> Callable[[Any], None] | None:
    return getattr(step, "undo", None)


class Steps:
    """Runs steps here, in this process: no retries; undo on failure inside a transaction."""

    def __init__(self) -> None:
        self._undo: list[list[tuple[Callable[[Any], None], Any]]] = []

    def __call__(self, step: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        result = step(*args, **kwargs)
        undo = undo_of(step)
        if undo is not None and self._undo:
            self._undo[-1].append((undo, result))
        return result

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Steps completed inside are undone, newest first, if the block fails."""
        self._undo.append([])
        try:
            yield
        except BaseException:
            for undo, result in reversed(self._undo.pop()):
                try:
                    undo(result)
                except Exception as exc:  # keep undoing; the original failure is what matters
                    log.warning("rollback step %s failed: %s", undo.__name__, exc)
            raise
        else:
            done = self._undo.pop()
            if self._undo:  # a nested transaction's steps belong to the outer one now
                self._undo[-1].extend(done)

    # -- hooks for what only the orchestration has ------------------------------------------
    def sync_schedules(self, cluster: str) -> list[str]:
        """Make the deployments' schedules follow the cluster's policy (nothing to do here)."""
        return []

    def remove_schedules(self, cluster: str) -> list[str]:
        """Remove the cluster's schedules from the deployments (nothing to do here)."""
        return []

    def keep_on_member_hosts(self, spec: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
        """Have the agents of the other hosts keep the HA cluster SPEC describes (see
        pgpitr/operations/register/member_hosts.py): per host asked, the placements of its
        members.  Other hosts are reached through their agents, which only the orchestration
        has."""
        from pgpitr.errors import ClusterStateError

        names = ", ".join(m["name"] for m in spec["members"])
        raise ClusterStateError(
            f"members of {spec['cluster']['name']!r} run on other hosts ({names}), whose "
            "agents only a flow reaches",
            hint="register it with `pgpitr cluster register --patroni`",
        )

    def run_on_host(
        self,
        host: str,
        flow: str,
        parameters: dict[str, Any],
        *,
        needs: str,
        secrets: dict[str, str] | None = None,
    ) -> None:
        """Have the agent of HOST run FLOW with PARAMETERS (an operation that NEEDS the primary
        of an HA cluster, which runs there: pgpitr/operations/primary_host.py), and wait for it;
        SECRETS reach that run without being parameters.  Other hosts are reached through their
        agents, which only the orchestration has."""
        from pgpitr.errors import ClusterStateError

        cluster = parameters["cluster"]
        raise ClusterStateError(
            f"the primary of {cluster!r} runs on host {host}, whose agent only a flow reaches: "
            f"{needs} needs the primary's host",
            hint=f"run it through pgpitr's command line or a deployment (flow {flow})",
            transient=True,
        )

    def drop_on_member_hosts(self, cluster: str, hosts: list[str]) -> None:
        """Have the agents of HOSTS forget their copy of CLUSTER (none to reach here)."""
        if hosts:
            from pgpitr.errors import ClusterStateError

            raise ClusterStateError(
                f"hosts {', '.join(hosts)} keep {cluster!r}, and only a flow reaches their agents",
                hint=f"unregister it with `pgpitr cluster unregister {cluster}`",
            )
