"""The agents' reports reach the Registries: a watch on the agent Pods (server-side
label selector, one namespace; not a watch of every Pod of the cluster), and a pass for
every Registry when a report, an agent's phase or its node changes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Final

from berth.k8s.api import ApiException, Kube
from berth.k8s.kinds import POD
from berth.resources.nodeagent import REPORT_ANNOTATION, agent_selector, agent_settings

logger = logging.getLogger(__name__)

RESYNC_SECONDS: Final = 60
RETRY_SECONDS: Final = 5.0


async def follow_reports(kube: Kube, request_all: Callable[[], None]) -> None:
    """Until cancelled: call `request_all` whenever what the agents report changes."""
    settings = agent_settings()
    if not settings.enabled:
        return
    selector = agent_selector()
    seen: object = None
    while True:
        try:
            pods, version = await kube.list_with_version(
                POD, settings.namespace, label_selector=selector
            )
            state = sorted(
                (
                    pod["metadata"]["name"],
                    str((pod.get("spec") or {}).get("nodeName")),
                    str((pod.get("status") or {}).get("phase")),
                    str(pod["metadata"].get("deletionTimestamp")),
                    (pod["metadata"].get("annotations") or {}).get(REPORT_ANNOTATION, ""),
                )
                for pod in pods
            )
            if state != seen:
                if seen is not None:
                    request_all()
                seen = state
            await kube.watch_once(
                POD, settings.namespace, label_selector=selector, version=version,
                seconds=RESYNC_SECONDS,
            )  # fmt: skip
        except (ApiException, OSError) as error:
            logger.warning("following the node agents' reports: %s", error)
            await asyncio.sleep(RETRY_SECONDS)
