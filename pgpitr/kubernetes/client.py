"""A thin, typed door to the API server over the official ``kubernetes`` client.

Configuration comes from the standard places, in kubectl's order: an explicit kubeconfig path,
``$KUBECONFIG`` (a colon-separated list), ``~/.kube/config``, then the in-cluster service account.
Objects are plain dicts (manifests as data); requests go through the client's ``ApiClient`` so
that authentication, TLS and proxies behave exactly as in every other Kubernetes tool.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException

from pgpitr.errors import KubernetesError, NotFound
from pgpitr.kubernetes.errors import api_error, unreachable
from pgpitr.kubernetes.resources import ObjectRef, ResourceType, ref_of

__all__ = ["Kube", "connect"]

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


class Kube:
    """Read, create, patch and delete objects given as dicts; errors become PitrErrors."""

    def __init__(self, api: k8s_client.ApiClient, where: str, *, timeout: float = 30.0) -> None:
        self.api = api
        self.where = where
        self.timeout = timeout
        self._secrets: set[str] = set()

    # -- redaction ------------------------------------------------------------------------------

    def add_secret(self, value: str) -> None:
        """Register a value that must never appear in an error message."""
        if value and len(value) >= 3:
            self._secrets.add(value)

    def redact(self, text: str) -> str:
        for value in sorted(self._secrets, key=len, reverse=True):
            text = text.replace(value, "***")
        return text

    # -- verbs ------------------------------------------------------------------------------------

    def get(self, ref: ObjectRef) -> dict[str, Any] | None:
        """The object, or None when it does not exist."""
        try:
            return self._call("GET", ref.type, ref.namespace, ref.name)
        except NotFound:
            return None

    def list(self, rtype: ResourceType, namespace: str | None = None) -> list[dict[str, Any]]:
        return list(self._call("GET", rtype, namespace, None).get("items") or [])

    def create(self, manifest: dict[str, Any]) -> dict[str, Any]:
        ref = ref_of(manifest)
        return self._call("POST", ref.type, ref.namespace, None, body=manifest, name=ref.name)

    def patch(self, ref: ObjectRef, patch: dict[str, Any]) -> dict[str, Any]:
        """A JSON merge patch (RFC 7386): dicts merge, lists and scalars replace, None removes."""
        return self._call(
            "PATCH",
            ref.type,
            ref.namespace,
            ref.name,
            body=patch,
            content_type="application/merge-patch+json",
        )

    def delete(self, ref: ObjectRef) -> bool:
        """Delete in the background; False when it was already gone."""
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        try:
            self._call("DELETE", ref.type, ref.namespace, ref.name, body=body)
        except NotFound:
            return False
        return True

    # -- transport --------------------------------------------------------------------------------

    def _call(
        self,
        method: str,
        rtype: ResourceType,
        namespace: str | None,
        path_name: str | None,
        *,
        body: Any = None,
        name: str | None = None,
        content_type: str = "application/json",
    ) -> Any:
        path = rtype.path(namespace, path_name)
        headers = {"Accept": "application/json", "Content-Type": content_type}
        request = self.api.param_serialize(method, path, header_params=headers, body=body)
        try:
            response = self.api.call_api(*request, _request_timeout=(5.0, self.timeout))
            response.read()
        except ApiException as exc:  # status 0: TLS trouble before any HTTP answer
            raise unreachable(self.where, self.api.configuration.host, exc) from None
        except urllib3.exceptions.HTTPError as exc:
            raise unreachable(self.where, self.api.configuration.host, exc) from None
        data = response.data or b""
        if not 200 <= response.status <= 299:
            raise api_error(
                response.status,
                data.decode("utf-8", "replace"),
                method=method,
                rtype=rtype,
                namespace=namespace,
                name=path_name or name,
                where=self.where,
                redact=self.redact,
            )
        return json.loads(data) if data else {}


def _kubeconfig_paths(kubeconfig: str | None) -> str | None:
    """The kubeconfig to load, kubectl's way; None when only in-cluster config can apply."""
    if kubeconfig:
        return kubeconfig
    env = os.environ.get("KUBECONFIG")
    if env and any(Path(p).expanduser().exists() for p in env.split(os.pathsep) if p):
        return env
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.exists() else None


def connect(
    kubeconfig: str | None = None, context: str | None = None, *, timeout: float = 30.0
) -> Kube:
    """A client for the cluster named by the kubeconfig and context, or the in-cluster one."""
    configuration = k8s_client.Configuration()
    configuration.retries = 0  # retrying is the Prefect task's decision, with backoff
    if kubeconfig and not Path(kubeconfig).expanduser().is_file():
        raise KubernetesError(
            f"kubeconfig {kubeconfig} does not exist",
            hint="pass --kubeconfig the file your cluster's tools wrote (e.g. ~/.kube/config)",
        )
    path = _kubeconfig_paths(kubeconfig)
    if path:
        try:
            contexts, active = k8s_config.list_kube_config_contexts(path)
            chosen = context or (active or {}).get("name")
            k8s_config.load_kube_config(
                config_file=path,
                context=context,
                client_configuration=configuration,
                persist_config=False,
            )
        except (ConfigException, OSError, ValueError) as exc:
            names = ", ".join(c["name"] for c in (locals().get("contexts") or [])) or "none"
            raise KubernetesError(
                f"cannot use context {context or '(current)'} of kubeconfig {path}: {exc}",
                hint=f"contexts in that file: {names}; pick one with --context",
            ) from None
        where = f"context {chosen!r} of {path}"
    elif os.environ.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_TOKEN.exists():
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)
        except ConfigException as exc:
            raise KubernetesError(f"in-cluster configuration failed: {exc}") from None
        where = "the in-cluster service account"
    else:
        raise KubernetesError(
            "no Kubernetes configuration found: tried --kubeconfig, $KUBECONFIG, ~/.kube/config "
            "and the in-cluster service account",
            hint="point KUBECONFIG at your cluster's kubeconfig, or pass --kubeconfig",
        )
    return Kube(k8s_client.ApiClient(configuration), where, timeout=timeout)
