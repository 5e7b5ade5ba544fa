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
from berth.handlers.settings import DRIFT_INTERVAL, Memo, refuse_invalid, registry_pass
from berth.reconcile import access
from berth.reconcile import registry as reconcile
from berth.resources.access import LABEL_REGISTRY, LABEL_REGISTRY_NAMESPACE
from berth.resources.registry import RegistryNames, watched_kinds

REGISTRIES = (GROUP, VERSION, REGISTRY_PLURAL)
# The kinds a Registry owns that are watched (from the table of its children); an edit
# or deletion of one by hand is drift to correct.
CHILD_RESOURCES = [kind.resource for kind in watched_kinds()]


@kopf.on.resume(*REGISTRIES)
@kopf.on.create(*REGISTRIES)
@kopf.on.update(*REGISTRIES)
async def registry_changed(namespace: str | None, name: str, memo: Memo, **_: Any) -> None:
    assert namespace is not None  # Registries are namespaced
    memo.registries.add((namespace, name))
    memo.access_debouncer.request(namespace, name)
    refuse_invalid(await registry_pass(memo, namespace, name))


@kopf.timer(*REGISTRIES, interval=DRIFT_INTERVAL, initial_delay=DRIFT_INTERVAL)
async def registry_drift(namespace: str | None, name: str, memo: Memo, **_: Any) -> None:
    assert namespace is not None
    await registry_pass(memo, namespace, name)
    # Also moves rotations on: a pending credential is handed out after its propagation.
    memo.access_debouncer.request(namespace, name)


@kopf.on.delete(*REGISTRIES)
async def registry_deleted(namespace: str | None, name: str, memo: Memo, **_: Any) -> None:
    """ownerReferences clean up the namespaced children; the finalizer this handler
    implies is for what they cannot reach: pull Secrets and ServiceAccount references in
    other namespaces, and the token server's ClusterRoleBinding."""
    assert namespace is not None
    memo.registries.discard((namespace, name))
    # A pass already running would otherwise re-create what is removed here; passes that
    # start later see the deletionTimestamp and do nothing.
    async with reconcile.exclusive(namespace, name), access.exclusive(namespace, name):
        await access.revoke_everything(memo.kube, namespace, name)
        await reconcile.delete_cluster_children(memo.kube, namespace, name)
    reconcile.forget(namespace, name)
    access.forget(namespace, name)


def _owner(body: kopf.Body) -> str | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("kind") == REGISTRY_KIND and ref.get("apiVersion", "").startswith(GROUP):
            return str(ref["name"])
    return None


async def _child_event(
    event: kopf.RawEvent, body: kopf.Body, namespace: str | None, memo: Memo, **_: Any
) -> None:
    if event.get("type") is None or namespace is None:  # the initial listing
        return
    owner = _owner(body)
    if owner is not None:
        memo.registry_debouncer.request(namespace, owner)
        names = RegistryNames(owner)
        if (body.get("kind"), body.get("metadata", {}).get("name")) in (
            ("Secret", names.admin),
            ("Service", names.service),
        ):
            # The access pass reads the admin credential and the Service's cluster IP.
            memo.access_debouncer.request(namespace, owner)
    labels = body.get("metadata", {}).get("labels") or {}
    if LABEL_REGISTRY in labels and LABEL_REGISTRY_NAMESPACE in labels:  # a pull Secret
        memo.access_debouncer.request(labels[LABEL_REGISTRY_NAMESPACE], labels[LABEL_REGISTRY])


def _request_access_everywhere(memo: Memo) -> None:
    for namespace, name in list(memo.registries):
        memo.access_debouncer.request(namespace, name)


@kopf.on.event("", "v1", "namespaces")
async def namespace_event(event: kopf.RawEvent, memo: Memo, **_: Any) -> None:
    """A namespace appeared, changed its labels or annotations, or went: grants may now
    select it or not."""
    if event.get("type") is not None:
        _request_access_everywhere(memo)


# Not ours: Berth creates ServiceAccounts of its own with every Registry, and those
# never need a pull Secret; reacting to them would make every creation a storm.
@kopf.on.event("", "v1", "serviceaccounts", labels={LABEL_MANAGED_BY: kopf.ABSENT})
async def service_account_event(event: kopf.RawEvent, memo: Memo, **_: Any) -> None:
    """A new ServiceAccount (e.g. `default` in a new namespace) may need our pull Secret."""
    if event.get("type") == "ADDED":
        _request_access_everywhere(memo)


for _group, _version, _plural in CHILD_RESOURCES:
    kopf.on.event(_group, _version, _plural, labels={LABEL_MANAGED_BY: MANAGED_BY})(_child_event)
