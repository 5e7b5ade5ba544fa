"""kopf handlers for TagPolicies: a pass on every change, and a daemon per object that
runs the next pass when a scheduled import or a poll of the registry is due. Pushes the
registry reports through its notifications wake a policy at once (handlers/notifications).

No finalizer: nothing outside the object needs cleaning up, and the images stay in the
registry when the policy goes (PruneSchedules decide about them)."""

from __future__ import annotations

import logging
from typing import Any

import kopf

from berth.constants import GROUP, TAG_POLICY_PLURAL, VERSION
from berth.handlers.settings import Memo, refuse_invalid
from berth.reconcile import tagpolicy as reconcile

TAG_POLICIES = (GROUP, VERSION, TAG_POLICY_PLURAL)

logger = logging.getLogger(__name__)


@kopf.on.resume(*TAG_POLICIES)
@kopf.on.create(*TAG_POLICIES)
@kopf.on.update(*TAG_POLICIES)
async def tag_policy_changed(namespace: str | None, name: str, memo: Memo, **_: Any) -> None:
    assert namespace is not None  # TagPolicies are namespaced
    refuse_invalid(
        await reconcile.reconcile_tag_policy(
            memo.kube, namespace, name, poll_interval=memo.tag_poll_interval
        )
    )


@kopf.daemon(*TAG_POLICIES, cancellation_timeout=5.0)
async def tag_policy_daemon(
    namespace: str | None, name: str, memo: Memo, stopped: kopf.DaemonStopped, **_: Any
) -> None:
    """Scheduled imports and polling: a pass, then sleep until the next one is due."""
    assert namespace is not None
    while not stopped:
        try:
            outcome = await reconcile.reconcile_tag_policy(
                memo.kube, namespace, name, poll_interval=memo.tag_poll_interval
            )
        except Exception:
            # A failed pass must not end the daemon: the next one retries.
            logger.exception("a pass of TagPolicy %s/%s failed", namespace, name)
            delay = float(memo.tag_poll_interval)
        else:
            if outcome is None:
                return
            delay = (
                outcome.next_check
                if outcome.next_check is not None
                else float(memo.tag_poll_interval)
            )
        await stopped.wait(delay)


@kopf.on.delete(*TAG_POLICIES, optional=True)
async def tag_policy_deleted(namespace: str | None, name: str, **_: Any) -> None:
    assert namespace is not None
    reconcile.forget(namespace, name)
