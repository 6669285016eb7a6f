"""Building blocks shared by the manifests (plain dicts) and their YAML rendering for --dry-run."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import yaml

from pgpitr.kubernetes.apply import MANAGED_BY, MANAGED_BY_LABEL

REDACTED = "<redacted>"


def metadata(
    name: str,
    namespace: str | None = None,
    *,
    component: str | None = None,
    annotations: dict[str, str] | None = None,
) -> dict[str, Any]:
    labels = {MANAGED_BY_LABEL: MANAGED_BY}
    if component:
        labels["app.kubernetes.io/part-of"] = component
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    meta["labels"] = labels
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def service_account(name: str, namespace: str, component: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": metadata(name, namespace, component=component),
    }


def rule(api_groups: list[str], resources: list[str], verbs: list[str]) -> dict[str, Any]:
    return {"apiGroups": api_groups, "resources": resources, "verbs": verbs}


def cluster_role(name: str, component: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": metadata(name, component=component),
        "rules": rules,
    }


def cluster_role_binding(
    name: str, component: str, role: str, account: str, namespace: str
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": metadata(name, component=component),
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        "roleRef": {"kind": "ClusterRole", "name": role, "apiGroup": "rbac.authorization.k8s.io"},
    }


def role(name: str, namespace: str, component: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": metadata(name, namespace, component=component),
        "rules": rules,
    }


def role_binding(
    name: str, namespace: str, component: str, role_name: str, account: str
) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": metadata(name, namespace, component=component),
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
        "roleRef": {"kind": "Role", "name": role_name, "apiGroup": "rbac.authorization.k8s.io"},
    }


def redacted(manifest: dict[str, Any]) -> dict[str, Any]:
    """A copy safe to print: a Secret keeps its keys, never its values."""
    if manifest.get("kind") != "Secret":
        return manifest
    safe = copy.deepcopy(manifest)
    for section in ("data", "stringData"):
        if section in safe:
            safe[section] = {key: REDACTED for key in safe[section]}
    return safe


class _Dumper(yaml.SafeDumper):
    """Writes a value shared by two parts of a manifest twice, not as an ``&id001`` anchor."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def to_yaml(manifests: Iterable[dict[str, Any]]) -> str:
    """A multi-document YAML stream, as ``kubectl apply -f -`` takes it, secrets redacted."""
    return yaml.dump_all(
        [redacted(m) for m in manifests],
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
    )


def patch_yaml(kind: str, name: str, patch: dict[str, Any]) -> str:
    """One merge patch as a commented YAML document, for --dry-run output."""
    return f"# merge patch for {kind} {name}\n" + yaml.safe_dump(patch, sort_keys=False)
