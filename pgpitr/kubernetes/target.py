"""Which cluster a run works on, as plain values (safe as flow and task parameters).

Importing this module does not import the ``kubernetes`` client: a dry run, the CLI's help and
the manifests need none of it.  ``connect`` imports it when a cluster is really talked to.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pgpitr.kubernetes.client import Kube


@dataclass(frozen=True)
class KubeTarget:
    """The kubeconfig and context to use; in a dry run, whether a cluster may be read at all.

    ``dry_run``: the changing steps send nothing and return what they would apply.
    ``offline``: in a dry run, why no cluster is read (none configured, none answers); the
    reading steps then return what they assume instead."""

    kubeconfig: str | None = None
    context: str | None = None
    dry_run: bool = False
    offline: str | None = None

    def connect(self, timeout: float = 30.0) -> Kube:
        from pgpitr.kubernetes.client import connect

        return connect(self.kubeconfig, self.context, timeout=timeout)

    def without_cluster(self, reason: str) -> KubeTarget:
        return replace(self, offline=reason)
