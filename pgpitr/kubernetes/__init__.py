"""The Kubernetes platform: manifests as data, the steps of each operation, and their order.

- ``target``: ``KubeTarget``, which cluster (and whether this is a dry run), as plain values.
- ``client``: configuration from --kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster; ``Kube``
  reads, creates, merge-patches and deletes objects given as dicts.  The only module that imports
  the ``kubernetes`` client library (the optional extra pgpitr[kubernetes]), and only
  ``KubeTarget.connect`` imports it: the manifests, the settings and a dry run without a
  cluster do not need it.
- ``apply``: ``ensure`` (create-or-patch, idempotent), ``wait_ready``, ``undo``, ``remove``.
- ``snapshot``, ``csi_s3``, ``storageclass``, ``dataprotection``, ``crds``: the manifests.
- ``addons``: add-on definitions and their status as the cluster reports it.
- ``settings``: ``--set`` keys, their parsing and checking; secrets kept apart.
- ``steps``: each step of the platform operations (one read or one change, undone on rollback).
- ``setup``: the operations (setup, addon enable/disable, storageclass set-default, config),
  each the only place its order of steps is written.

Plain Python: Prefect is imported by ``tasks/`` and ``flows/`` only.
"""

from __future__ import annotations

from typing import Any

from pgpitr.kubernetes.target import KubeTarget

__all__ = ["Applied", "Kube", "KubeTarget", "ObjectRef", "connect", "ref_of"]

_LAZY = {
    "Applied": "pgpitr.kubernetes.apply",
    "Kube": "pgpitr.kubernetes.client",
    "connect": "pgpitr.kubernetes.client",
    "ObjectRef": "pgpitr.kubernetes.resources",
    "ref_of": "pgpitr.kubernetes.resources",
}


def __getattr__(name: str) -> Any:  # the client library is imported by whoever needs it
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
