"""The Kubernetes platform: manifests as data and apply helpers over the official client.

- ``client``: configuration from --kubeconfig, $KUBECONFIG, ~/.kube/config or in-cluster; ``Kube``
  reads, creates, merge-patches and deletes objects given as dicts.
- ``apply``: ``ensure`` (create-or-patch, idempotent), ``wait_ready``, ``undo``, ``remove``.
- ``snapshot``, ``csi_s3``, ``storageclass``, ``dataprotection``, ``crds``: the manifests.
- ``addons``: add-on definitions and their status as the cluster reports it.
- ``settings``: ``--set`` keys, their parsing and checking; secrets kept apart.

Plain Python: Prefect is imported by ``tasks/`` and ``flows/`` only.
"""

from pgpitr.kubernetes.apply import Applied, ensure, undo, wait_ready
from pgpitr.kubernetes.client import Kube, KubeTarget, connect
from pgpitr.kubernetes.resources import ObjectRef, ref_of

__all__ = [
    "Applied",
    "Kube",
    "KubeTarget",
    "ObjectRef",
    "connect",
    "ensure",
    "ref_of",
    "undo",
    "wait_ready",
]
