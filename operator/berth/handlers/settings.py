"""All kopf settings in one startup handler, and the objects handlers share (memo)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Final

import kopf

from berth.constants import GROUP
from berth.handlers.debounce import Debouncer
from berth.handlers.nodes import follow_reports
from berth.handlers.notifications import NotificationServer
from berth.k8s.api import Kube
from berth.reconcile.access import reconcile_access
from berth.reconcile.kit import Outcome
from berth.reconcile.registry import reconcile_registry
from berth.reconcile.tagpolicy import INDEX, reconcile_tag_policy

DRIFT_INTERVAL: Final = 60.0  # seconds between drift passes per object
CHILD_EVENT_DELAY: Final = 0.5  # seconds a burst of child events is coalesced over
NOTIFICATION_DELAY: Final = 0.2  # seconds a burst of push notifications is coalesced over
DEFAULT_TAG_POLL_INTERVAL: Final = 30.0  # seconds between polls of a TagPolicy's tags
KOPF_PREFIX: Final = f"kopf.{GROUP}"


class Memo(kopf.Memo):
    kube: Kube
    registry_debouncer: Debouncer
    access_debouncer: Debouncer
    registries: set[tuple[str, str]]
    tag_policy_debouncer: Debouncer
    tag_poll_interval: float
    # host:port the notifications endpoint listens on; None: no endpoint.
    notifications_address: str | None
    notifications: NotificationServer
    node_reports: asyncio.Task[None]


def refuse_invalid(outcome: Outcome | None) -> None:
    """A spec that cannot work: status and an Event say why, and retrying the same
    generation cannot help (the drift timer or daemon notices a fix elsewhere, such as a
    missing Secret or API appearing)."""
    if outcome is not None and outcome.invalid:
        raise kopf.PermanentError(outcome.ready.message)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    return kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: Memo, **_: Any) -> None:
    # Every INFO log about an object would be an Event (an API write): post warnings only.
    settings.posting.level = logging.WARNING
    # kopf's bookkeeping in annotations under a prefix of its own, not in status. kopf
    # ignores changes to annotations under its storage prefix, and berth.dev/* ones
    # (e.g. berth.dev/maintenance) must trigger a pass.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{KOPF_PREFIX}/finalizer"
    settings.execution.max_workers = 20
    # Handlers that fail for a transient reason retry soon, then back off.
    settings.execution.default_backoff = 10
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.queueing.error_delays = (1, 2, 5, 10, 30)

    memo.kube = Kube.from_environment()

    async def reconcile(namespace: str, name: str) -> object:
        return await registry_pass(memo, namespace, name)

    memo.registry_debouncer = Debouncer(CHILD_EVENT_DELAY, reconcile)

    async def access(namespace: str, name: str) -> object:
        return await reconcile_access(memo.kube, namespace, name)

    memo.access_debouncer = Debouncer(CHILD_EVENT_DELAY, access)
    memo.registries = set()

    if not getattr(memo, "tag_poll_interval", None):
        memo.tag_poll_interval = DEFAULT_TAG_POLL_INTERVAL

    async def tag_policy(namespace: str, name: str) -> object:
        return await reconcile_tag_policy(
            memo.kube, namespace, name, poll_interval=memo.tag_poll_interval
        )

    memo.tag_policy_debouncer = Debouncer(NOTIFICATION_DELAY, tag_policy)
    memo.notifications = NotificationServer(memo.kube, INDEX, memo.tag_policy_debouncer.request)
    if getattr(memo, "notifications_address", None):
        await memo.notifications.start(str(memo.notifications_address))

    def request_all_registries() -> None:
        for namespace, name in list(memo.registries):
            memo.registry_debouncer.request(namespace, name)

    memo.node_reports = asyncio.create_task(follow_reports(memo.kube, request_all_registries))


async def registry_pass(memo: Memo, namespace: str, name: str) -> Outcome | None:
    """A Registry's pass, and the next one asked for when it is due before the drift
    timer's (a CA rotation's next step)."""
    outcome = await reconcile_registry(memo.kube, namespace, name)
    due = outcome.next_check if outcome is not None else None
    if due is not None and due < DRIFT_INTERVAL:
        memo.registry_debouncer.request_after(namespace, name, due)
    return outcome


@kopf.on.cleanup()
async def cleanup(memo: Memo, **_: Any) -> None:
    memo.node_reports.cancel()
    await memo.registry_debouncer.close()
    await memo.access_debouncer.close()
    await memo.tag_policy_debouncer.close()
    await memo.notifications.stop()
    memo.kube.close()
