"""Status writes shared by the reconcilers: read-modify-write under the resourceVersion,
and no write at all when nothing changed."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from berth.k8s.api import JSON, ApiException, Kube
from berth.k8s.kinds import Kind

STATUS_WRITE_ATTEMPTS: Final = 5


async def patch_status(
    kube: Kube, kind: Kind, obj: JSON, update: Callable[[JSON, JSON], JSON]
) -> tuple[JSON, JSON] | None:
    """Read-modify-write of `obj`'s status. `update(status, object)` returns the new
    status; unchanged status makes no write. A conflict re-reads the object and tries
    again. Returns (old, new) status, None when unchanged or the object is gone."""
    metadata = obj["metadata"]
    current: JSON | None = obj
    for _ in range(STATUS_WRITE_ATTEMPTS):
        if current is None:
            return None
        old = current.get("status") or {}
        new = update(old, current)
        if new == old:
            return None
        patch = {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]}}
        try:
            patched = await kube.merge_patch(
                kind, metadata["namespace"], metadata["name"], {**patch, "status": new}, status=True
            )
        except ApiException as error:
            if error.status == 404:
                return None
            if error.status != 409:
                raise
            current = await kube.get(kind, metadata["namespace"], metadata["name"])
            continue
        obj["status"] = patched.get("status", new)
        obj["metadata"]["resourceVersion"] = patched["metadata"]["resourceVersion"]
        return old, new
    raise RuntimeError(f"status of {metadata['namespace']}/{metadata['name']} kept changing")
