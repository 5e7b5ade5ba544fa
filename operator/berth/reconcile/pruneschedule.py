"""PruneSchedules: the reconciler that keeps their CronJob and RBAC in place, and the
entry point of one run (`berth prune`), which reports into the same status.

Reconcile pass (operator):
    read the schedule -> check what admission cannot (the Registry exists, the
    repositories reach the schedule's namespace) -> apply the children that differ ->
    remove the ones a changed registryRef left behind -> Ready

Run (`berth prune --schedule ns/name`, in the CronJob's Pod or by hand):
    read the schedule and its Registry -> URL, credentials, CA, host names ->
    berth.prune.run.execute -> status.lastRun, status.plan, LastRunSucceeded, an Event

The two write different parts of status; each write is a read-modify-write with the
object's resourceVersion as precondition, so neither drops the other's conditions.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import logging
from dataclasses import dataclass, field
from typing import Final

from pydantic import ValidationError

from berth.api.common import expand_namespace, glob_to_regex, parse_duration
from berth.api.pruneschedule import (
    ERRORS_LIMIT,
    PLAN_LIMIT,
    PruneScheduleConditionType,
    PruneScheduleSpec,
)
from berth.api.registry import RegistrySpec
from berth.constants import PRUNE_SCHEDULE_KIND, operator_image
from berth.k8s.api import JSON, ApiClient, ApiException, Kube
from berth.k8s.events import post_event
from berth.k8s.kinds import (
    CLUSTER_ROLE,
    CLUSTER_ROLE_BINDING,
    PRUNE_SCHEDULE,
    REGISTRY,
    ROLE,
    ROLE_BINDING,
)
from berth.observability import RECONCILE_SECONDS, RECONCILES
from berth.prune.gc import GCTimeouts, skip_reason
from berth.prune.retention import Action, RetentionRules
from berth.prune.run import (
    Progress,
    PruneRequest,
    RunReport,
    ScopedSelection,
    execute,
)
from berth.reconcile.conditions import Cond, find, merge_conditions, now_rfc3339
from berth.reconcile.endpoints import RegistryProblem, referenced_registry, registry_access
from berth.reconcile.invalid import InvalidSpec, api_message, validation_message
from berth.reconcile.locks import ObjectLocks
from berth.reconcile.status import patch_status
from berth.resources.pruneschedule import (
    PruneInputs,
    PruneNames,
    desired_children,
    gc_storage,
    unowned_children,
    unowned_selector,
)

logger = logging.getLogger(__name__)

ROUTE_API: Final = "route.openshift.io/v1"

READY = PruneScheduleConditionType.READY.value
LAST_RUN_SUCCEEDED = PruneScheduleConditionType.LAST_RUN_SUCCEEDED.value


@dataclass
class Outcome:
    conditions: list[Cond]
    writes: int = 0  # child writes this pass made

    @property
    def ready(self) -> Cond:
        return next(c for c in self.conditions if c.type == READY)


_locks = ObjectLocks()


def forget(namespace: str, name: str) -> None:
    _locks.forget(namespace, name)


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
    started = asyncio.get_running_loop().time()
    async with _locks.hold(namespace, name):
        schedule = await kube.get(PRUNE_SCHEDULE, namespace, name)
        if schedule is None or schedule["metadata"].get("deletionTimestamp"):
            return None
        try:
            outcome = await _reconcile(kube, schedule)
        except Exception:
            RECONCILES.labels(PRUNE_SCHEDULE_KIND, "error").inc()
            raise
        finally:
            RECONCILE_SECONDS.labels(PRUNE_SCHEDULE_KIND).observe(
                asyncio.get_running_loop().time() - started
            )
        RECONCILES.labels(PRUNE_SCHEDULE_KIND, "ok" if outcome.ready.status else "not-ready").inc()
        return outcome


async def _reconcile(kube: Kube, schedule: JSON) -> Outcome:
    if not (schedule.get("status") or {}).get("conditions"):
        first = [Cond(READY, None, "Reconciling", "Berth is setting up the schedule")]
        await _publish_conditions(kube, schedule, first)
    try:
        spec = PruneScheduleSpec.model_validate(schedule.get("spec") or {})
        outcome = await _apply(kube, schedule, spec)
    except ValidationError as error:
        outcome = Outcome([Cond(READY, False, "InvalidSpec", validation_message(error))])
    except InvalidSpec as error:
        outcome = Outcome([Cond(READY, False, "InvalidSpec", str(error))])
    await _publish_conditions(kube, schedule, outcome.conditions)
    return outcome


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
    return Outcome([ready], writes)


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


# -- status --------------------------------------------------------------------------------


async def _publish_conditions(kube: Kube, schedule: JSON, conditions: list[Cond]) -> None:
    """Ready and observedGeneration; an Event when Ready changes its reason."""

    def update(old: JSON, current: JSON) -> JSON:
        generation = current["metadata"].get("generation")
        return {
            **old,
            "observedGeneration": generation,
            "conditions": merge_conditions(old.get("conditions"), conditions, generation),
        }

    changed = await patch_status(kube, PRUNE_SCHEDULE, schedule, update)
    if changed is None:
        return
    before, after = find(changed[0].get("conditions"), READY), find(changed[1]["conditions"], READY)
    reason_changed = after and (before is None or before.get("reason") != after.get("reason"))
    if reason_changed and after and after["status"] == "False":
        await post_event(
            kube, schedule, reason=after["reason"], message=after["message"], warning=True
        )


# -- one run ---------------------------------------------------------------------------


# The run cannot start: `reason` is a CamelCase word, the message says why.
RunProblem = RegistryProblem


@dataclass
class RunOutcome:
    """What `berth prune` prints: the report (None when the run could not start), and
    the condition it wrote."""

    schedule: str
    report: RunReport | None
    condition: Cond
    last_run: JSON = field(default_factory=dict)

    @property
    def succeeded(self) -> bool:
        return self.condition.status is True

    def to_json(self) -> JSON:
        """`berth prune --output json`: the whole plan (uncapped) and the summary."""
        report = self.report
        return {
            "schedule": self.schedule,
            "succeeded": self.succeeded,
            "result": {"reason": self.condition.reason, "message": self.condition.message},
            "summary": self.last_run,
            "plan": [
                {
                    "repository": entry.repository,
                    "tag": entry.tag,
                    "digest": entry.digest,
                    "action": entry.action.value,
                    "basis": entry.basis.value,
                    "reason": entry.reason,
                }
                for entry in (report.entries() if report else [])
            ],
            "deleted": [list(pair) for pair in report.deleted] if report else [],
            "notes": list(report.notes) if report else [],
            "errors": list(report.errors) if report else [self.condition.message],
        }


async def run_schedule(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    dry_run: bool = False,
    registry_url: str | None = None,
    scan_client: ApiClient | None = None,
    progress: Progress | None = None,
    gc_timeouts: GCTimeouts | None = None,
) -> RunOutcome:
    """Run the PruneSchedule namespace/name once and record the result in its status.

    `dry_run` plans only, as does spec.dryRun. `registry_url` overrides the address the
    Registry's status gives (needed outside the cluster). `scan_client` is the API
    connection the in-use scan uses (kube's by default).
    """
    schedule = await kube.get(PRUNE_SCHEDULE, namespace, name)
    if schedule is None:
        raise RunProblem("NotFound", f"PruneSchedule {namespace}/{name} does not exist")
    label = f"{namespace}/{name}"
    try:
        spec = PruneScheduleSpec.model_validate(schedule.get("spec") or {})
        request = await resolve_request(
            kube, schedule, spec, dry_run=dry_run, registry_url=registry_url
        )
    except ValidationError as error:
        problem = RunProblem("InvalidSpec", validation_message(error))
    except (InvalidSpec, ValueError) as error:
        problem = RunProblem("InvalidSpec", str(error))
    except RunProblem as error:
        problem = error
    else:
        if gc_timeouts is not None:
            request = dataclasses.replace(request, gc_timeouts=gc_timeouts)
        return await _run(kube, schedule, label, request, scan_client, progress)
    condition = Cond(LAST_RUN_SUCCEEDED, False, problem.reason, f"nothing was done: {problem}")
    now = now_rfc3339()
    await _publish_run(kube, schedule, condition, {"lastScheduleTime": now})
    await post_event(kube, schedule, reason=problem.reason, message=condition.message, warning=True)
    return RunOutcome(label, None, condition)


async def _run(
    kube: Kube,
    schedule: JSON,
    label: str,
    request: PruneRequest,
    scan_client: ApiClient | None,
    progress: Progress | None,
) -> RunOutcome:
    started = now_rfc3339()
    await _publish_run(
        kube,
        schedule,
        Cond(LAST_RUN_SUCCEEDED, None, "Running", f"a run started at {started}"),
        {"lastScheduleTime": started},
    )
    logger.info("pruning %s: registry %s", label, request.access.url)
    # The scan's own connection is the caller's: it stays open.
    scan = Kube(scan_client, owns_client=False) if scan_client is not None else None
    try:
        report = await execute(request, kube=kube, scan=scan, progress=progress)
    finally:
        if scan is not None:
            scan.close()
    last_run = summary(report)
    fields: JSON = {"lastRun": last_run, "plan": status_plan(report)}
    condition = run_condition(report)
    if report.succeeded:
        fields["lastSuccessfulTime"] = last_run["completionTime"]
    try:
        await _publish_run(kube, schedule, condition, fields)
    except ApiException as error:
        # The run is over, whatever happened to its record: say so, and still report.
        logger.error("could not write the status of %s: %s", label, error)
        condition = Cond(
            LAST_RUN_SUCCEEDED,
            False,
            "StatusNotWritten",
            f"{condition.message}; writing status failed: {error.status} {error.reason}",
        )
        return RunOutcome(label, report, condition, last_run)
    await post_event(
        kube,
        schedule,
        reason=condition.reason,
        message=condition.message,
        warning=not condition.status,
    )
    return RunOutcome(label, report, condition, last_run)


async def _publish_run(kube: Kube, schedule: JSON, condition: Cond, fields: JSON) -> None:
    def update(old: JSON, current: JSON) -> JSON:
        generation = current["metadata"].get("generation")
        return {
            **old,
            **fields,
            "conditions": merge_conditions(old.get("conditions"), [condition], generation),
        }

    await patch_status(kube, PRUNE_SCHEDULE, schedule, update)


def _rfc3339(moment: datetime.datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def summary(report: RunReport) -> JSON:
    """status.lastRun."""
    the_plan = report.plan
    manifests = (
        (the_plan.manifests_deleted if report.dry_run else len(report.deleted)) if the_plan else 0
    )
    return {
        "startTime": _rfc3339(report.started),
        "completionTime": _rfc3339(report.completed),
        "dryRun": report.dry_run,
        "repositories": len(the_plan.repositories) if the_plan else 0,
        "tagsScanned": the_plan.tags_scanned if the_plan else 0,
        "tagsDeleted": report.tags_deleted,
        "manifestsDeleted": manifests,
        "bytesReclaimed": report.bytes_reclaimed,
        "keptInUse": the_plan.kept_in_use if the_plan else 0,
        "keptByRule": the_plan.kept_by_rule if the_plan else 0,
        "errors": [error[:1024] for error in report.errors[:ERRORS_LIMIT]],
    }


def status_plan(report: RunReport) -> list[JSON]:
    """status.plan: deletions first, capped at PLAN_LIMIT."""
    entries = sorted(report.entries(), key=lambda e: e.action is not Action.DELETE)
    plan: list[JSON] = []
    for entry in entries[:PLAN_LIMIT]:
        item: JSON = {
            "repository": entry.repository,
            "digest": entry.digest,
            "action": entry.action.value,
            "reason": entry.reason[:256],
        }
        if entry.tag is not None:
            item["tag"] = entry.tag
        plan.append(item)
    return plan


def _size(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} B"


def run_condition(report: RunReport) -> Cond:
    """LastRunSucceeded: the outcome in a sentence, with the notes."""
    the_plan = report.plan
    if report.failure is not None:
        return Cond(LAST_RUN_SUCCEEDED, False, report.failure, "; ".join(report.errors))
    assert the_plan is not None
    notes = "".join(f"; {note}" for note in report.notes)
    basis = {
        "measured": " (measured from the garbage collector's log)",
        "estimated": " (estimated: blobs of deleted images no kept image shares; upper bound)",
        "none": "",
    }[report.bytes_basis]
    if report.dry_run:
        text = (
            f"dry run: would delete {the_plan.manifests_deleted} manifests "
            f"({the_plan.tags_deleted} tags) of {the_plan.tags_scanned} tags in "
            f"{len(the_plan.repositories)} repositories, freeing up to "
            f"{_size(report.bytes_reclaimed)}{basis}{notes}"
        )
        return Cond(LAST_RUN_SUCCEEDED, True, "DryRun", text)
    text = (
        f"deleted {len(report.deleted)} manifests ({report.tags_deleted} tags) of "
        f"{the_plan.tags_scanned} tags in {len(the_plan.repositories)} repositories; "
        f"{_size(report.bytes_reclaimed)} reclaimed{basis}{notes}"
    )
    if report.errors:
        gc_failed = report.gc is not None and bool(report.gc.errors)
        reason = "GarbageCollectionFailed" if gc_failed else "DeleteFailed"
        if report.gc is not None and not report.gc.restored:
            reason = "ReadWriteNotRestored"
        return Cond(LAST_RUN_SUCCEEDED, False, reason, f"{text}; errors: {report.errors[0]}")
    return Cond(LAST_RUN_SUCCEEDED, True, "Succeeded", text)


# -- resolving the registry ------------------------------------------------------------------


async def resolve_request(
    kube: Kube,
    schedule: JSON,
    spec: PruneScheduleSpec,
    *,
    dry_run: bool = False,
    registry_url: str | None = None,
) -> PruneRequest:
    """The run's inputs from the schedule, its Registry and the Registry's Secrets."""
    namespace = schedule["metadata"]["namespace"]
    registry_ns = registry_namespace(schedule, spec)
    registry_name = spec.registry_ref.name
    registry, registry_spec = await referenced_registry(kube, registry_ns, registry_name)
    cross = registry_ns != namespace
    if cross:
        raise RunProblem("CrossNamespaceRefused", CROSS_NAMESPACE_REFUSED)
    access = await registry_access(kube, registry, registry_spec, registry_url)
    retention = spec.retention
    selection = ScopedSelection(
        include=tuple(expand_namespace(p, namespace) for p in spec.repositories.include),
        exclude=tuple(expand_namespace(p, namespace) for p in spec.repositories.exclude),
        scope=f"{namespace}/**" if cross else None,
    )
    rules = RetentionRules(
        keep_last=retention.keep_last,
        keep_younger_than=parse_duration(retention.keep_younger_than),
        keep_tags=tuple(retention.keep_tags or ()),
        delete_untagged=retention.delete_untagged,
        repositories=selection,
    )
    gc_possible = gc_storage(registry_spec) is not None and not cross
    gc_note = None
    if spec.garbage_collect.enabled and not gc_possible:
        gc_note = skip_reason(registry_spec) or (
            "storage GC skipped: only a schedule in the Registry's namespace may make the "
            "whole registry read-only"
        )
    return PruneRequest(
        access=access,
        rules=rules,
        registry_namespace=registry_ns,
        registry_name=registry_name,
        protect_in_use=spec.protect_in_use,
        dry_run=dry_run or spec.dry_run,
        garbage_collect=spec.garbage_collect.enabled and gc_possible,
        gc_note=gc_note,
    )
