"""Kubernetes Events about Berth's objects, posted on purpose (kopf's own posting is
limited to warnings)."""

from __future__ import annotations

import datetime
import logging
import uuid
from typing import Any

from berth.constants import MANAGED_BY
from berth.k8s.api import ApiException, Kube

logger = logging.getLogger(__name__)


async def post_event(
    kube: Kube, about: dict[str, Any], *, reason: str, message: str, warning: bool = False
) -> None:
    """Post an Event about `about`. A failure to post is logged, never raised: an Event
    is a courtesy to people, not part of the reconcile."""
    metadata = about["metadata"]
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            "name": f"{metadata['name']}.{uuid.uuid4().hex[:12]}",
            "namespace": metadata.get("namespace") or "default",
        },
        "involvedObject": {
            "apiVersion": about["apiVersion"],
            "kind": about["kind"],
            "name": metadata["name"],
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
        },
        "type": "Warning" if warning else "Normal",
        "reason": reason,
        "message": message[:1024],
        "source": {"component": MANAGED_BY},
        "reportingComponent": MANAGED_BY,
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
    try:
        await kube.create(event)
    except ApiException as error:
        logger.warning("could not post Event %s about %s: %s", reason, metadata["name"], error)
