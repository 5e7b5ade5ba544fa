"""Plain-dict access to the API server through the official client's connection pool
and credentials.

The official client is synchronous; every call here runs on a small dedicated thread
pool so kopf's event loop never blocks, and the pool's size bounds Berth's fan-out.
Writes are server-side applies with one field manager, preceded by a read: an object
that already matches makes no write at all.
"""

from __future__ import annotations

import asyncio
import builtins
import json
import os
import threading
import time
import urllib.parse
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.config import ConfigException

from berth.constants import FIELD_MANAGER
from berth.k8s.diff import is_subset
from berth.k8s.kinds import KINDS, POD, Kind, kind_of
from berth.observability import API_WRITES

JSON = dict[str, Any]
# The official client's connection, for the callers that hold one already (tests, and
# `berth prune`'s in-use scan through another connection): Kube(api_client) wraps it.
ApiClient = k8s_client.ApiClient
# A seconds total, or (connect, read) seconds; None waits as long as the client does.
RequestTimeout = float | tuple[float, float] | None
MAX_PARALLEL_CALLS: Final = 16
API_DISCOVERY_TTL: Final = 60.0

__all__ = [
    "JSON",
    "ApiClient",
    "ApiException",
    "ConfigException",
    "Kube",
    "RequestTimeout",
    "is_not_found",
]


def is_not_found(error: BaseException) -> bool:
    return isinstance(error, ApiException) and error.status == 404


class Kube:
    def __init__(
        self,
        api_client: k8s_client.ApiClient,
        *,
        field_manager: str = FIELD_MANAGER,
        owns_client: bool = True,
    ) -> None:
        """`owns_client=False` leaves `api_client` open at close(): it is the caller's."""
        self.api_client = api_client
        self.field_manager = field_manager
        self._owns_client = owns_client
        self._pool = ThreadPoolExecutor(MAX_PARALLEL_CALLS, thread_name_prefix="berth-kube")
        self._api_groups: dict[str, tuple[bool, float]] = {}
        self.writes = 0  # write calls made through this instance (benchmarks, tests)

    @classmethod
    def from_environment(cls, kubeconfig: str | None = None, context: str | None = None) -> Kube:
        """In-cluster credentials inside a Pod, else the kubeconfig (KUBECONFIG, ~/.kube)."""
        configuration = k8s_client.Configuration()
        # Read KUBECONFIG now: the client library reads it once, at import.
        kubeconfig = kubeconfig or os.environ.get("KUBECONFIG")
        if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        configuration.connection_pool_maxsize = MAX_PARALLEL_CALLS
        return cls(k8s_client.ApiClient(configuration))

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        if self._owns_client:
            self.api_client.close()  # type: ignore[no-untyped-call]

    # -- raw requests ------------------------------------------------------------------

    def _call_sync(
        self,
        method: str,
        path: str,
        headers: dict[str, str],
        body: Any,
        request_timeout: RequestTimeout,
    ) -> bytes:
        """The answer's body; ApiException for an error status."""
        _, url, header_params, serialized_body, _ = self.api_client.param_serialize(
            method, path, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        response = self.api_client.call_api(
            method, url, header_params, serialized_body, _request_timeout=request_timeout
        )
        data: bytes = response.read()  # type: ignore[no-untyped-call]
        if response.status >= 400:
            raise ApiException(status=response.status, reason=response.reason, body=data.decode())
        return data

    def request_sync(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        request_timeout: RequestTimeout = None,
    ) -> JSON:
        if query:
            path = f"{path}?{urllib.parse.urlencode(query)}"
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        data = self._call_sync(method, path, headers, body, request_timeout)
        return json.loads(data) if data else {}

    async def request(self, method: str, path: str, **kwargs: Any) -> JSON:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, lambda: self.request_sync(method, path, **kwargs)
        )

    # -- reads -------------------------------------------------------------------------

    async def get(self, kind: Kind, namespace: str | None, name: str) -> JSON | None:
        try:
            return await self.request("GET", kind.path(namespace, name))
        except ApiException as error:
            if error.status == 404:
                return None
            raise

    async def list(
        self,
        kind: Kind,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        page_size: int = 500,
        request_timeout: RequestTimeout = None,
    ) -> AsyncIterator[JSON]:
        """Every item, page by page (limit/continue), so no list is held whole; with no
        namespace, every namespace's. `request_timeout` bounds each page's request."""
        query: dict[str, str] = {"limit": str(page_size)}
        if label_selector:
            query["labelSelector"] = label_selector
        while True:
            page = await self.request(
                "GET", kind.path(namespace), query=dict(query), request_timeout=request_timeout
            )
            for item in page.get("items") or []:
                yield item
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                return
            query["continue"] = token

    async def list_with_version(
        self, kind: Kind, namespace: str | None, *, label_selector: str
    ) -> tuple[builtins.list[JSON], str]:
        """A small list whole, with the resourceVersion to watch it from."""
        page = await self.request(
            "GET", kind.path(namespace), query={"labelSelector": label_selector}
        )
        version = str((page.get("metadata") or {}).get("resourceVersion") or "")
        return builtins.list(page.get("items") or []), version

    def _watch_once_sync(
        self,
        kind: Kind,
        namespace: str | None,
        label_selector: str,
        version: str,
        seconds: int,
        streams: _Streams,
    ) -> bool:
        query = urllib.parse.urlencode(
            {
                "watch": "1",
                "labelSelector": label_selector,
                "resourceVersion": version,
                "timeoutSeconds": str(seconds),
                "allowWatchBookmarks": "false",
            }
        )
        _, url, headers, _, _ = self.api_client.param_serialize(
            "GET",
            f"{kind.path(namespace)}?{query}",
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            "GET", url, headers, None, _request_timeout=seconds + 15
        )
        stream = response.response
        streams.add(stream)  # so that a cancellation can interrupt the read
        try:
            if response.status >= 400:
                raise ApiException(status=response.status, reason=response.reason)
            return bool(stream.readline().strip())
        finally:
            stream.close()

    async def watch_once(
        self, kind: Kind, namespace: str | None, *, label_selector: str, version: str, seconds: int
    ) -> bool:
        """Wait until something selected changes after `version` (True), or `seconds`
        pass (False). An expired version counts as a change: list again."""
        loop = asyncio.get_running_loop()
        streams = _Streams()
        try:
            return await loop.run_in_executor(
                self._pool,
                lambda: self._watch_once_sync(
                    kind, namespace, label_selector, version, seconds, streams
                ),
            )
        except asyncio.CancelledError:
            # The thread would block in its read until the watch times out (and the
            # interpreter waits for it at exit): end the read now.
            streams.shut()
            raise

    async def pod_log(
        self, namespace: str, name: str, *, request_timeout: RequestTimeout = None
    ) -> str:
        """The log of Pod namespace/name (its only container), as text."""
        path = POD.path(namespace, name) + "/log"
        # The log subresource is text, but the API server negotiates it only from */*.
        headers = {"Accept": "*/*"}
        loop = asyncio.get_running_loop()
        data = await loop.run_in_executor(
            self._pool, lambda: self._call_sync("GET", path, headers, None, request_timeout)
        )
        return data.decode()

    async def has_api(self, group_version: str) -> bool:
        """Whether the cluster serves an API group version, e.g. route.openshift.io/v1.
        An answer is remembered for a minute: an API can be installed while we run."""
        known = self._api_groups.get(group_version)
        if known is not None and time.monotonic() - known[1] < API_DISCOVERY_TTL:
            return known[0]
        try:
            await self.request("GET", f"/apis/{group_version}")
            served = True
        except ApiException as error:
            if error.status != 404:
                raise
            served = False
        self._api_groups[group_version] = (served, time.monotonic())
        return served

    # -- writes ------------------------------------------------------------------------

    def _count_write(self, verb: str, kind: str) -> None:
        self.writes += 1
        API_WRITES.labels(verb, kind).inc()

    async def apply(self, obj: JSON) -> JSON:
        """Server-side apply `obj` as Berth's field manager, taking over conflicting
        fields (a hand edit of a field Berth owns is drift to correct)."""
        kind = kind_of(obj)
        metadata = obj["metadata"]
        self._count_write("apply", kind.kind)
        return await self.request(
            "PATCH",
            kind.path(metadata.get("namespace"), metadata["name"]),
            query={"fieldManager": self.field_manager, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    async def ensure(self, desired: JSON) -> tuple[bool, JSON]:
        """Apply `desired` unless the live object already matches. Returns (written, live)."""
        kind = kind_of(desired)
        metadata = desired["metadata"]
        live = await self.get(kind, metadata.get("namespace"), metadata["name"])
        if live is not None and is_subset(desired, live):
            return False, live
        return True, await self.apply(desired)

    async def delete(
        self, kind: Kind, namespace: str | None, name: str, *, propagation: str = "Background"
    ) -> bool:
        """Delete if present; False when it was already gone."""
        self._count_write("delete", kind.kind)
        try:
            await self.request(
                "DELETE",
                kind.path(namespace, name),
                body={"propagationPolicy": propagation},
            )
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    async def merge_patch(
        self, kind: Kind, namespace: str | None, name: str, patch: JSON, *, status: bool = False
    ) -> JSON:
        self._count_write("patch-status" if status else "patch", kind.kind)
        path = kind.path(namespace, name) + ("/status" if status else "")
        return await self.request(
            "PATCH", path, body=patch, content_type="application/merge-patch+json"
        )

    async def create(self, obj: JSON) -> JSON:
        kind = kind_of(obj)
        self._count_write("create", kind.kind)
        return await self.request("POST", kind.path(obj["metadata"].get("namespace")), body=obj)


class _Streams:
    """The response streams a watch thread reads; `shut` ends their reads, and the read
    of a stream added afterwards (a cancellation while the request was being sent)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._streams: list[Any] = []
        self._shut = False

    def add(self, stream: Any) -> None:
        with self._lock:
            self._streams.append(stream)
            if self._shut:
                stream.shutdown()

    def shut(self) -> None:
        with self._lock:
            self._shut = True
            for stream in self._streams:
                stream.shutdown()


def kind(api_version: str, kind_name: str) -> Kind:
    return KINDS[(api_version, kind_name)]
