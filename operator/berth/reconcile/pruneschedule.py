"""PruneSchedules: the reconciler that keeps their CronJob and RBAC in place.

Reconcile pass (operator):
    read the schedule -> check what admission cannot (the Registry exists, the
    repositories reach the schedule's namespace) -> apply the children that differ ->
    remove the ones a changed registryRef left behind -> Ready

What the CronJob runs (`berth prune`) is berth.actions.prune; it writes other parts of
the same status. Each write is a read-modify-write with the object's resourceVersion as
precondition, so neither drops the other's conditions.
"""

from __future__ import annotations

from typing import Final

from pydantic import ValidationError

from berth.api.common import ConditionType, glob_to_regex
from berth.api.pruneschedule import PruneScheduleSpec
from berth.api.registry import RegistrySpec
from berth.constants import operator_image
from berth.k8s.api import JSON, ApiException, Kube
from berth.k8s.kinds import (
    CLUSTER_ROLE,
    CLUSTER_ROLE_BINDING,
    PRUNE_SCHEDULE,
    REGISTRY,
    ROLE,
    ROLE_BINDING,
)
from berth.reconcile.conditions import Cond
from berth.reconcile.invalid import InvalidSpec, api_message, validation_message
from berth.reconcile.kit import Outcome, Passes, checked, publish
from berth.resources.pruneschedule import (
    PruneInputs,
    PruneNames,
    desired_children,
    unowned_children,
    unowned_selector,
)

ROUTE_API: Final = "route.openshift.io/v1"

READY = ConditionType.READY

_passes = Passes(PRUNE_SCHEDULE)


def forget(namespace: str, name: str) -> None:
    _passes.forget(namespace, name)


def registry_namespace(schedule: JSON, spec: PruneScheduleSpec) -> str:
    return spec.registry_ref.namespace or str(schedule["metadata"]["namespace"])


def reaches_namespace(pattern: str, namespace: str) -> bool:
    """Whether a repository glob can match anything under `<namespace>/`."""
    segments = pattern.split("/")
    if segments[0] == "**":
        return True
    if len(segments) == 1:
        return False  # one segment names a top-level repository, never `<ns>/...`
    return glob_to_regex(segments[0]).fullmatch(namespace) is not None


# A schedule outside its Registry's namespace would run with a credential of the whole
# registry (the admin Secret, or the external credentials) that its namespace's tenants
# could read through the schedule's ServiceAccount. Until such runs use a delete-scoped
# credential of the namespace itself, they are refused (the scoping in ScopedSelection and
# reaches_namespace is what such runs will use).
CROSS_NAMESPACE_REFUSED: Final = (
    "spec.registryRef.namespace: a PruneSchedule must be in its Registry's namespace for "
    "now; from another namespace it would hand the registry's own credential to that "
    "namespace's ServiceAccounts"
)


def _check_scope(schedule_namespace: str, spec: PruneScheduleSpec, cross: bool) -> None:
    if cross:
        raise InvalidSpec(CROSS_NAMESPACE_REFUSED)


# -- the reconciler ------------------------------------------------------------------------


async def reconcile_prune_schedule(kube: Kube, namespace: str, name: str) -> Outcome | None:
    """One pass for one PruneSchedule; None when it is gone or being deleted."""
    return await _passes.run(kube, namespace, name, lambda schedule: _reconcile(kube, schedule))


async def _reconcile(kube: Kube, schedule: JSON) -> Outcome:
    if not (schedule.get("status") or {}).get("conditions"):
        first = Cond(READY, None, "Reconciling", "Berth is setting up the schedule")
        await publish(kube, PRUNE_SCHEDULE, schedule, Outcome([first]))
    outcome = await checked(_validated(kube, schedule))
    await publish(kube, PRUNE_SCHEDULE, schedule, outcome)
    return outcome


async def _validated(kube: Kube, schedule: JSON) -> Outcome:
    spec = PruneScheduleSpec.model_validate(schedule.get("spec") or {})
    return await _apply(kube, schedule, spec)


async def _apply(kube: Kube, schedule: JSON, spec: PruneScheduleSpec) -> Outcome:
    metadata = schedule["metadata"]
    namespace = metadata["namespace"]
    registry_ns = registry_namespace(schedule, spec)
    registry = await kube.get(REGISTRY, registry_ns, spec.registry_ref.name)
    if registry is None:
        raise InvalidSpec(
            f"spec.registryRef: Registry {registry_ns}/{spec.registry_ref.name} does not exist"
        )
    try:
        registry_spec = RegistrySpec.model_validate(registry.get("spec") or {})
    except ValidationError as error:
        raise InvalidSpec(
            f"spec.registryRef: Registry {registry_ns}/{spec.registry_ref.name} has an invalid "
            f"spec ({validation_message(error)})"
        ) from error
    _check_scope(namespace, spec, registry_ns != namespace)
    inputs = PruneInputs(
        owner=schedule,
        spec=spec,
        registry_name=spec.registry_ref.name,
        registry_namespace=registry_ns,
        registry_spec=registry_spec,
        image=operator_image(),
        openshift=await kube.has_api(ROUTE_API),
    )
    writes = 0
    live: dict[str, JSON] = {}
    for child in [*unowned_children(inputs), *desired_children(inputs)]:
        try:
            written, state = await kube.ensure(child)
        except ApiException as error:
            if error.status in (400, 422):
                raise InvalidSpec(api_message(child, error)) from error
            raise
        writes += written
        live[child["kind"]] = state
    writes += await _delete_stale_roles(kube, inputs)
    cron_job = live["CronJob"]
    names = inputs.names
    if spec.suspend:
        ready = Cond(READY, True, "Suspended", "spec.suspend is true: no runs are scheduled")
    else:
        zone = f" ({spec.time_zone})" if spec.time_zone else ""
        ready = Cond(
            READY,
            True,
            "Scheduled",
            f"CronJob {cron_job['metadata']['name']} runs {spec.schedule!r}{zone} as "
            f"ServiceAccount {names.service_account}",
        )
    return Outcome([ready], writes=writes)


async def _delete_stale_roles(kube: Kube, inputs: PruneInputs) -> int:
    """Roles and RoleBindings left in a namespace the registryRef no longer names."""
    wanted = {inputs.names.namespace}
    if inputs.cross_namespace:
        wanted.add(inputs.registry_namespace)
    deleted = 0
    for kind in (ROLE, ROLE_BINDING):
        async for item in kube.list(kind, None, label_selector=unowned_selector(inputs.names)):
            item_ns = item["metadata"]["namespace"]
            if item_ns not in wanted:
                deleted += await kube.delete(kind, item_ns, item["metadata"]["name"])
    return deleted


async def cleanup(kube: Kube, namespace: str, name: str) -> None:
    """What the finalizer removes: the children no owner reference reaches."""
    names = PruneNames(name, namespace)
    await kube.delete(CLUSTER_ROLE_BINDING, None, names.cluster_role)
    await kube.delete(CLUSTER_ROLE, None, names.cluster_role)
    for kind in (ROLE_BINDING, ROLE):
        async for item in kube.list(kind, None, label_selector=unowned_selector(names)):
            await kube.delete(kind, item["metadata"]["namespace"], item["metadata"]["name"])
