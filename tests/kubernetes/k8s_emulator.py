"""A Kubernetes API emulator on 127.0.0.1 for the real ``kubernetes`` client.

kmock's ``KubernetesEmulator`` stores objects and answers create (409 on a duplicate), read (404),
list, merge patch and delete.  This subclass adds what the setup flows need from a cluster:

- the built-in resources are declared, so that listing an empty kind answers ``[]``, not 404;
- "controllers": a created CRD becomes Established, a Deployment or DaemonSet ready, a PVC Bound
  (unless the test holds that kind back to simulate a stuck rollout);
- injected failures (status code per method, resource and name), answered before any state
  changes, so that a refused create leaves nothing behind as on a real API server.

kmock merges dicts naively (lists are replaced, never merged by key); the tests do not rely on
strategic-merge semantics.  The server runs on an asyncio loop in a background thread.
"""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass
from typing import Any

import kmock
from kmock._internal import enums, parsing, rendering

_parse_path = parsing.parse_path


def _parse_path_with_namespaces(path: str) -> parsing.ParsedPath:
    """kmock 0.8 reads ``/api/v1/namespaces[/name]`` as a namespace prefix with nothing after
    it (and fails); on a real server it is the cluster-scoped Namespace resource."""
    parts = path.strip("/").split("/")
    if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
        return parsing.ParsedPath(
            "", "v1", "namespaces", None, parts[3] if len(parts) == 4 else None
        )
    return _parse_path(path)


parsing.parse_path = _parse_path_with_namespaces

BUILTIN_RESOURCES: dict[str, tuple[str, bool]] = {
    "v1/namespaces": ("Namespace", False),
    "v1/nodes": ("Node", False),
    "v1/secrets": ("Secret", True),
    "v1/configmaps": ("ConfigMap", True),
    "v1/serviceaccounts": ("ServiceAccount", True),
    "v1/persistentvolumeclaims": ("PersistentVolumeClaim", True),
    "apps/v1/deployments": ("Deployment", True),
    "apps/v1/daemonsets": ("DaemonSet", True),
    "rbac.authorization.k8s.io/v1/clusterroles": ("ClusterRole", False),
    "rbac.authorization.k8s.io/v1/clusterrolebindings": ("ClusterRoleBinding", False),
    "rbac.authorization.k8s.io/v1/roles": ("Role", True),
    "rbac.authorization.k8s.io/v1/rolebindings": ("RoleBinding", True),
    "storage.k8s.io/v1/storageclasses": ("StorageClass", False),
    "storage.k8s.io/v1/csidrivers": ("CSIDriver", False),
    "apiextensions.k8s.io/v1/customresourcedefinitions": ("CustomResourceDefinition", False),
    "snapshot.storage.k8s.io/v1/volumesnapshotclasses": ("VolumeSnapshotClass", False),
    "snapshot.storage.k8s.io/v1/volumesnapshots": ("VolumeSnapshot", True),
    "snapshot.storage.k8s.io/v1/volumesnapshotcontents": ("VolumeSnapshotContent", False),
}


def _ready_status(plural: str, obj: dict[str, Any]) -> dict[str, Any] | None:
    """What the cluster's controllers would write into ``status`` once the object settles."""
    spec = obj.get("spec") or {}
    if plural == "customresourcedefinitions":
        return {"conditions": [{"type": "Established", "status": "True"}]}
    if plural == "deployments":
        replicas = spec.get("replicas", 1)
        return {"replicas": replicas, "readyReplicas": replicas, "availableReplicas": replicas}
    if plural == "daemonsets":
        return {"desiredNumberScheduled": 2, "numberReady": 2, "updatedNumberScheduled": 2}
    if plural == "persistentvolumeclaims":
        return {"phase": "Bound"}
    return None


@dataclass
class Failure:
    """An injected answer: ``status`` for requests matching method, plural and (optional) name."""

    method: str
    plural: str
    name: str | None
    status: int
    times: int | None  # None: every matching request
    echo: bool = False  # put the request body into the error message, as some webhooks do

    def matches(self, request: rendering.Request) -> bool:
        if request.resource is None or request.resource.plural != self.plural:
            return False
        if request.method.value != self.method:
            return False
        if self.name is None:
            return True
        name = request.name or (request.data or {}).get("metadata", {}).get("name")
        return name == self.name


class ApiEmulator(kmock.KubernetesEmulator):
    """kmock's emulator with built-in resources, settle-on-create controllers and failures."""

    def __attrs_post_init__(self) -> None:
        super().__attrs_post_init__()
        for key, (kind, namespaced) in BUILTIN_RESOURCES.items():
            self.resources[key] = kmock.ResourceInfo(
                kind=kind, namespaced=namespaced, verbs={"get", "list", "create", "patch", "delete"}
            )
        self.failures: list[Failure] = []
        self.held_back: set[str] = set()  # plurals whose controllers never report ready

    def fail(
        self,
        method: str,
        plural: str,
        *,
        name: str | None = None,
        status: int = 403,
        times: int | None = None,
        echo: bool = False,
    ) -> None:
        self.failures.append(Failure(method.upper(), plural, name, status, times, echo))

    async def _handle(self, request: rendering.Request):  # type: ignore[override]
        for failure in self.failures:
            if failure.matches(request) and failure.times != 0:
                if failure.times is not None:
                    failure.times -= 1
                raise kmock.KubernetesError(
                    status=failure.status,
                    reason={403: "Forbidden", 422: "Invalid"}.get(failure.status, "Injected"),
                    message=f"injected failure for {request.method.value} {request.url.path}"
                    + (f": {request.text}" if failure.echo else ""),
                    details={},
                )
        response = await super()._handle(request)
        if request.action in (enums.action.CREATE, enums.action.UPDATE) and request.resource:
            await self._settle(request)
        return response

    async def _settle(self, request: rendering.Request) -> None:
        plural = request.resource.plural
        if plural in self.held_back:
            return
        meta = (request.data or {}).get("metadata", {})
        key = (
            request.resource,
            request.namespace or meta.get("namespace"),
            request.name or meta.get("name"),
        )
        async with self._lock:
            if key not in self.objects or self.objects[key].deleted:
                return
            status = _ready_status(plural, self.objects[key].raw)
            if status is not None:
                self.objects[key].patch({"status": status})

    # -- helpers for assertions -------------------------------------------------------------

    def stored(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        key = (kmock.resource(resource), namespace, name)
        if key not in self.objects or self.objects[key].deleted:
            return None
        return self.objects[key].raw

    def put(self, resource: str, namespace: str | None, name: str, body: dict[str, Any]) -> None:
        self.objects[resource, namespace, name] = body

    def names(self, resource: str) -> set[str]:
        return {
            name
            for (res, _ns, name), obj in self.objects.items()
            if res == kmock.resource(resource) and not obj.deleted
        }

    def changing_requests(self) -> list[str]:
        return [f"{r.method.value} {r.url.path}" for r in self.all_requests() if r.method != "GET"]

    def all_requests(self) -> list[rendering.Request]:
        return list(self._requests)


class EmulatorThread:
    """Serves an ``ApiEmulator`` from an asyncio loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.emulator: ApiEmulator | None = None
        self.url = ""
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)

    def __enter__(self) -> EmulatorThread:
        self._thread.start()
        if not self._started.wait(30):
            raise RuntimeError("the Kubernetes API emulator did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        self.emulator = ApiEmulator()
        async with self.emulator, kmock.Server(self.emulator, host="127.0.0.1") as server:
            self.url = f"http://127.0.0.1:{server.port}"
            self._started.set()
            await self._stop.wait()
