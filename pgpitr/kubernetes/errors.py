"""Turn what the API server (or its absence) says into errors a person can act on.

Errors worth another try carry ``transient = True``, which ``pgpitr.transient`` (and so the
Prefect tasks' retry condition) honours: no answer, 429, 5xx.  Refusals never retry.

Every message names the context that was used, the verb and the resource, and the next step.
Server messages pass through a redactor so that a value from a Secret can never reach a log line.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from pgpitr.errors import AlreadyExists, KubernetesError, NotFound, PitrError
from pgpitr.kubernetes.resources import ResourceType


class ApiUnreachable(KubernetesError):
    """No API server answered (connection refused, DNS, TLS, timeout)."""

    transient = True


class ApiForbidden(KubernetesError):
    """RBAC refused a verb on a resource."""


class ApiUnavailable(KubernetesError):
    """The API server answered 429 or 5xx: worth another try later."""

    transient = True


class CrdIncompatible(KubernetesError):
    """A CustomResourceDefinition is installed in a version pgpitr cannot work with."""


class NotReady(KubernetesError):
    """An object did not become ready within its timeout."""


class ImmutableField(KubernetesError):
    """An existing object differs in a field the API server will not let anyone change."""


def verb_of(method: str, name: str | None) -> str:
    method = method.upper()
    if method == "GET":
        return "get" if name else "list"
    return {"POST": "create", "PATCH": "patch", "PUT": "update", "DELETE": "delete"}.get(
        method, method.lower()
    )


def server_message(body: str | None) -> str:
    """The ``message`` of a Kubernetes Status body, shortened; never the raw body."""
    if not body:
        return ""
    try:
        data = json.loads(body)
    except ValueError:
        return ""
    message = data.get("message", "") if isinstance(data, dict) else ""
    return message if len(message) <= 300 else message[:297] + "..."


def api_error(
    status: int,
    body: str | None,
    *,
    method: str,
    rtype: ResourceType,
    namespace: str | None,
    name: str | None,
    where: str,
    redact: Callable[[str], str],
) -> PitrError:
    """The PitrError for an HTTP error answer; ``.status`` keeps the code for callers."""
    error = _api_error(
        status,
        body,
        method=method,
        rtype=rtype,
        namespace=namespace,
        name=name,
        where=where,
        redact=redact,
    )
    error.status = status  # type: ignore[attr-defined]
    return error


def _api_error(
    status: int,
    body: str | None,
    *,
    method: str,
    rtype: ResourceType,
    namespace: str | None,
    name: str | None,
    where: str,
    redact: Callable[[str], str],
) -> PitrError:
    verb = verb_of(method, name)
    what = rtype.qualified_plural + (f"/{name}" if name else "")
    scope = f" in namespace {namespace}" if namespace and rtype.namespaced else ""
    detail = redact(server_message(body))
    suffix = f": {detail}" if detail else ""
    can_i = f"kubectl auth can-i {verb} {rtype.qualified_plural}" + (
        f" -n {namespace}" if namespace and rtype.namespaced else ""
    )
    if status == 401:
        return KubernetesError(
            f"the API server did not accept the credentials of {where}{suffix}",
            hint="refresh the credentials of this context (for EKS: aws eks update-kubeconfig)",
        )
    if status == 403:
        return ApiForbidden(
            f"forbidden: {where} may not {verb} {what}{scope}{suffix}",
            hint=f"grant the '{verb}' verb on {rtype.qualified_plural} to this user "
            f"(check with: {can_i})",
        )
    if status == 404:
        target = f"{what}{scope}"
        return NotFound(
            f"not found: {target} ({verb} via {where}){suffix}",
            hint="is the namespace there, and does the API server serve "
            f"{rtype.qualified_plural} ({rtype.api_version})?",
        )
    if status == 409:
        return AlreadyExists(f"{what}{scope} already exists{suffix}")
    if status == 429 or status >= 500:
        return ApiUnavailable(
            f"the API server answered {status} to {verb} {what}{scope} via {where}{suffix}",
            hint="the API server is overloaded or restarting; try again in a minute",
        )
    return KubernetesError(
        f"the API server rejected {verb} {what}{scope} ({status}){suffix}",
        hint="the manifest or patch does not fit this cluster's API; see the message above",
    )


def unreachable(where: str, server: str, reason: BaseException) -> ApiUnreachable:
    kind = type(reason).__name__
    return ApiUnreachable(
        f"no Kubernetes API server answered at {server} ({where}): {kind}",
        hint="check that the cluster is running and that `kubectl get nodes` works with "
        "this context; pick another one with --context or KUBECONFIG",
    )
