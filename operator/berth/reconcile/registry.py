"""The Registry reconciler: one idempotent pass, whatever triggered it.

    read the Registry -> check what admission cannot -> the Service, then material
    (secrets, certificates) -> apply every child that differs, stage by stage
    -> delete children no longer wanted -> observe the children -> write status only
    when it changed

The children are declared once, in `berth.resources.registry.children`; this module
only walks that table. Passes for one Registry never overlap (the kit's lock per
object), so a child's event, the slow timer and kopf's handlers can all ask for a pass.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AbstractAsyncContextManager
from typing import Final

from berth.api.common import ConditionType
from berth.api.registry import ManagementState, RegistrySpec, TLSMode
from berth.constants import notifications_url, operator_image
from berth.k8s.api import JSON, ApiException, Kube
from berth.k8s.kinds import PVC, REGISTRY, SECRET
from berth.reconcile import nodes
from berth.reconcile.conditions import Cond
from berth.reconcile.invalid import InvalidSpec, api_message
from berth.reconcile.kit import EventRule, Outcome, Passes, checked, invalid_outcome, publish
from berth.reconcile.registry_material import (
    check_references,
    new_token,
    registry_material,
)
from berth.reconcile.registry_observe import Live, observe
from berth.reconcile.unmanaged import probe_external
from berth.resources.nodeagent import agent_settings
from berth.resources.registry import (
    ROUTE_API,
    Child,
    RegistryInputs,
    RegistryNames,
    RegistryTarget,
    Stage,
    address_children,
    build,
    cluster_scoped,
    notifications_secret,
    removed,
    unwanted,
    wanted_children,
)

logger = logging.getLogger(__name__)

READY = ConditionType.READY
PROGRESSING = ConditionType.PROGRESSING
DEGRADED = ConditionType.DEGRADED
# Ready False for these reasons is what the user asked for: no Warning Event.
EVENTS: Final = EventRule(announce_ready=True, quiet=frozenset({"Removed", "ScaledToZero"}))

_passes = Passes(REGISTRY)


def forget(namespace: str, name: str) -> None:
    _passes.forget(namespace, name)


def exclusive(namespace: str, name: str) -> AbstractAsyncContextManager[None]:
    """Hold off this kind of pass for one Registry (e.g. while it is being deleted)."""
    return _passes.exclusive(namespace, name)


async def reconcile_registry(kube: Kube, namespace: str, name: str) -> Outcome | None:
    """One pass for one Registry; None when it is gone or being deleted."""
    return await _passes.run(kube, namespace, name, lambda registry: _reconcile(kube, registry))


async def _reconcile(kube: Kube, registry: JSON) -> Outcome:
    if not (registry.get("status") or {}).get("conditions"):
        # First visit: say that nothing is known yet before doing any work.
        first = Cond(READY, None, "Reconciling", "Berth is setting up the registry")
        await publish(kube, REGISTRY, registry, Outcome([first]), EVENTS)
    outcome = await checked(_by_state(kube, registry), _invalid)
    await publish(kube, REGISTRY, registry, outcome, EVENTS)
    return outcome


def _invalid(message: str) -> Outcome:
    return invalid_outcome(message, rollout=True)


async def _by_state(kube: Kube, registry: JSON) -> Outcome:
    spec = RegistrySpec.model_validate(registry.get("spec") or {})
    target = RegistryTarget(
        registry,
        spec,
        openshift=await kube.has_api(ROUTE_API),
        notifications_url=notifications_url(),
        operator_image=operator_image(),
    )
    if spec.management_state is ManagementState.MANAGED:
        return await _managed(kube, target)
    if spec.management_state is ManagementState.UNMANAGED:
        return await _unmanaged(kube, target)
    return await _removed(kube, target)


# -- Managed -----------------------------------------------------------------------------


class _Applier:
    """Applies children, counting writes and keeping what the API server returned."""

    def __init__(self, kube: Kube) -> None:
        self.kube = kube
        self.writes = 0
        self.live: Live = {}

    async def ensure(self, child: JSON) -> JSON:
        try:
            written, state = await self.kube.ensure(child)
        except ApiException as error:
            if error.status in (400, 422):
                raise InvalidSpec(api_message(child, error)) from error
            raise
        self.writes += written
        self.live[(child["kind"], child["metadata"]["name"])] = state
        return state

    async def stage(self, children: list[JSON]) -> None:
        await asyncio.gather(*(self.ensure(child) for child in children))


async def _managed(kube: Kube, target: RegistryTarget) -> Outcome:
    await check_references(kube, target.namespace, target.spec)
    applier = _Applier(kube)
    # The Service first: its cluster IP belongs in the serving certificate.
    (service,) = [await applier.ensure(child) for child in address_children(target)]
    cluster_ip = service.get("spec", {}).get("clusterIP")
    read = await registry_material(kube, target, cluster_ip)
    inputs = target.with_material(read.material)
    for stage in (Stage.FOUNDATION, Stage.WORKLOAD):
        await applier.stage([build(child, inputs) for child in wanted_children(inputs, stage)])
    applier.writes += await _delete_all(kube, target, unwanted(inputs))
    await _read_observed(kube, inputs, applier.live)
    outcome = observe(inputs, applier.live)
    token = applier.live.get(("Service", inputs.names.token_server))
    nodes_result = await nodes.integrate(
        kube, inputs, cluster_ip, (token or {}).get("spec", {}).get("clusterIP")
    )
    hosting = await nodes.local_hosting(kube, inputs, outcome.fields["endpoint"])
    outcome.conditions += [nodes_result.condition, hosting.condition]
    outcome.fields.update(nodes_result.fields)
    outcome.writes = applier.writes + nodes_result.writes + hosting.writes
    outcome.events += read.notes + hosting.events
    outcome.next_check = read.next_check
    return outcome


async def _read_observed(kube: Kube, inputs: RegistryInputs, live: Live) -> None:
    """What observation looks at beyond the children just applied: a claim the user
    made, and the Secret cert-manager issues."""
    names, spec = inputs.names, inputs.spec
    pvc = spec.storage.pvc if spec.storage else None
    if pvc is not None and pvc.existing_claim:
        claim = await kube.get(PVC, inputs.namespace, pvc.existing_claim)
        if claim is not None:
            live[("PersistentVolumeClaim", pvc.existing_claim)] = claim
    if spec.tls.mode is TLSMode.CERT_MANAGER:
        issued = await kube.get(SECRET, inputs.namespace, names.tls)
        if issued is not None:
            live[("Secret", names.tls)] = issued


async def _delete_all(kube: Kube, target: RegistryTarget, children: list[Child]) -> int:
    """Delete those of `children` that exist; a kind whose API the cluster does not
    serve has nothing to delete."""
    deleted = 0
    for child in children:
        if child.requires_api and not await kube.has_api(child.requires_api):
            continue
        namespace = target.namespace if child.kind.namespaced else None
        name = child.object_name(target)
        if await kube.get(child.kind, namespace, name) is not None:
            deleted += await kube.delete(child.kind, namespace, name)
    return deleted


async def delete_cluster_children(kube: Kube, namespace: str, name: str) -> int:
    """Cluster-scoped children and the plan for the nodes (in the agent's namespace),
    which ownerReferences cannot clean up."""
    names = RegistryNames(name)
    deleted = await nodes.withdraw(kube, namespace, name, agent_settings())
    for child in cluster_scoped():
        deleted += await kube.delete(child.kind, None, child.name_in(names, namespace))
    return deleted


# -- Removed and Unmanaged ---------------------------------------------------------------


async def _removed(kube: Kube, target: RegistryTarget) -> Outcome:
    """The workload goes; storage, certificates and credentials stay, so that turning
    the registry back on finds its images and its clients still trust it."""
    writes = await _delete_all(kube, target, removed(target))
    writes += await nodes.withdraw(kube, target.namespace, target.names.registry, agent_settings())
    pvc = target.spec.storage.pvc if target.spec.storage else None
    kept = "storage deleted (deleteOnRemove)" if pvc and pvc.delete_on_remove else "storage kept"
    return Outcome(
        [
            Cond(READY, False, "Removed", f"managementState is Removed: workload deleted, {kept}"),
            Cond(PROGRESSING, False, "Removed", ""),
            Cond(DEGRADED, False, "Removed", ""),
            Cond(nodes.NODES_READY, False, "Removed", "no registry to configure nodes for"),
            Cond(nodes.LOCAL_HOSTING, False, "Removed", "no registry to publish"),
        ],
        {"readyReplicas": 0, "nodes": None},
        writes,
    )


async def _unmanaged(kube: Kube, target: RegistryTarget) -> Outcome:
    spec = target.spec
    assert spec.external is not None
    writes = await _keep_notifications_token(kube, target)
    # Was it Managed before? Its names are no longer Berth's to pin on the nodes.
    writes += await nodes.withdraw(kube, target.namespace, target.names.registry, agent_settings())
    result = await probe_external(kube, target.namespace, spec.external)
    readiness = (
        Cond(READY, True, "Reachable", result.message)
        if result.ok
        else Cond(READY, False, result.reason, result.message)
    )
    return Outcome(
        [
            readiness,
            Cond(PROGRESSING, False, "Unmanaged", "Berth does not run this registry"),
            Cond(
                DEGRADED,
                not result.ok,
                result.reason if not result.ok else "AsExpected",
                "" if result.ok else result.message,
            ),
            Cond(
                nodes.NODES_READY,
                False,
                "Unmanaged",
                "Berth configures no node for a registry it does not run",
            ),
            Cond(nodes.LOCAL_HOSTING, False, "Unmanaged", ""),
        ],
        {"endpoint": {"external": spec.external.url}, "nodes": None},
        writes,
    )


async def _keep_notifications_token(kube: Kube, target: RegistryTarget) -> int:
    """An Unmanaged registry is configured by its owner to send notifications with the
    token in `<name>-notifications`: a Secret that exists is the user's and is kept; a
    missing one is made once (the pass is its one writer)."""
    if target.notifications_url is None:
        return 0
    if await kube.get(SECRET, target.namespace, target.names.notifications) is not None:
        return 0
    try:
        await kube.create(notifications_secret(target.owner, new_token()))
    except ApiException as error:
        if error.status != 409:  # made meanwhile: that one stands
            raise
        return 0
    return 1
