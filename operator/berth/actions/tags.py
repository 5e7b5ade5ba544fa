"""`berth tags NS/NAME`: what each tag of a TagPolicy pointed to, newest first."""

from __future__ import annotations

from dataclasses import dataclass

from berth.actions import ActionError
from berth.api.common import ConditionType
from berth.k8s.api import JSON, Kube
from berth.k8s.kinds import TAG_POLICY


@dataclass(frozen=True)
class TagHistory:
    title: str  # status.pullSpec, or the policy's name before there is one
    tags: list[JSON]  # status.tags: per tag its items (newest first) and conditions
    ready: JSON | None  # the policy's Ready condition


async def tag_history(kube: Kube, namespace: str, name: str) -> TagHistory:
    policy = await kube.get(TAG_POLICY, namespace, name)
    if policy is None:
        raise ActionError(f"TagPolicy {namespace}/{name} does not exist")
    status = policy.get("status") or {}
    ready = next(
        (c for c in status.get("conditions") or [] if c.get("type") == ConditionType.READY), None
    )
    return TagHistory(f"{status.get('pullSpec') or name}", status.get("tags") or [], ready)
