"""kopf handlers for Registries and the children they own."""

from __future__ import annotations

from typing import Any

import kopf

from berth.constants import (
    GROUP,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    REGISTRY_KIND,
    REGISTRY_PLURAL,
    VERSION,
)
from berth.handlers.settings import DRIFT_INTERVAL, Memo
from berth.reconcile import registry as reconcile

REGISTRIES = (GROUP, VERSION, REGISTRY_PLURAL)
# Every kind a Registry owns; an edit or deletion of one by hand is drift to correct.
CHILD_RESOURCES = [
    ("", "v1", "serviceaccounts"),
    ("", "v1", "configmaps"),
    ("", "v1", "secrets"),
    ("", "v1", "services"),
    ("", "v1", "persistentvolumeclaims"),
    ("apps", "v1", "deployments"),
    ("policy", "v1", "poddisruptionbudgets"),
    ("networking.k8s.io", "v1", "networkpolicies"),
    ("networking.k8s.io", "v1", "ingresses"),
]


async def _pass(memo: Memo, namespace: str, name: str) -> reconcile.Outcome | None:
    return await reconcile.reconcile_registry(memo.kube, namespace, name)


@kopf.on.resume(*REGISTRIES)
@kopf.on.create(*REGISTRIES)
@kopf.on.update(*REGISTRIES)
async def registry_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    assert namespace is not None  # Registries are namespaced
    outcome = await _pass(memo, namespace, name)
    if outcome is not None and outcome.ready.reason == "InvalidSpec":
        # Status and an Event say why; retrying the same generation cannot help. The
        # drift timer notices when what was missing (a Secret, an API) appears.
        raise kopf.PermanentError(outcome.ready.message)


@kopf.timer(*REGISTRIES, interval=DRIFT_INTERVAL, initial_delay=DRIFT_INTERVAL)
async def registry_drift(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    assert namespace is not None
    await _pass(memo, namespace, name)


@kopf.on.delete(*REGISTRIES, optional=True)  # ownerReferences clean up; no finalizer
async def registry_deleted(namespace: str | None, name: str, **_: Any) -> None:
    if namespace is not None:
        reconcile.forget(namespace, name)


def _owner(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == REGISTRY_KIND and ref.get("apiVersion", "").startswith(GROUP):
            return str(ref["name"])
    return None


async def _child_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, memo: Any, **_: Any
) -> None:
    if event.get("type") is None or namespace is None:  # the initial listing
        return
    owner = _owner(body)
    if owner is not None:
        memo.registry_debouncer.request(namespace, owner)


for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(_group, _version, _plural, labels={LABEL_MANAGED_BY: MANAGED_BY})(_child_event)
