"""`berth prune --schedule ns/name`: one run of a PruneSchedule, in the CronJob's Pod or
by hand, reported into the schedule's status.

    read the schedule and its Registry -> URL, credentials, CA, host names ->
    berth.prune.run.execute -> status.lastRun, status.plan, LastRunSucceeded, an Event

The reconciler (berth.reconcile.pruneschedule) writes other parts of the same status;
each write is a read-modify-write with the object's resourceVersion as precondition, so
neither drops the other's conditions.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from dataclasses import dataclass, field

from pydantic import ValidationError

from berth.api.common import expand_namespace, parse_duration
from berth.api.pruneschedule import (
    ERRORS_LIMIT,
    PLAN_LIMIT,
    PruneScheduleConditionType,
    PruneScheduleSpec,
)
from berth.k8s.api import JSON, ApiClient, ApiException, Kube
from berth.k8s.events import post_event
from berth.k8s.kinds import PRUNE_SCHEDULE
from berth.prune.gc import GCTimeouts, skip_reason
from berth.prune.retention import Action, RetentionRules
from berth.prune.run import Progress, PruneRequest, RunReport, ScopedSelection, execute
from berth.reconcile.conditions import Cond, now_rfc3339
from berth.reconcile.endpoints import RegistryProblem, referenced_registry, registry_access
from berth.reconcile.invalid import InvalidSpec, validation_message
from berth.reconcile.kit import INVALID_SPEC, Outcome, publish
from berth.reconcile.pruneschedule import CROSS_NAMESPACE_REFUSED, registry_namespace
from berth.resources.pruneschedule import gc_storage

logger = logging.getLogger(__name__)

LAST_RUN_SUCCEEDED = PruneScheduleConditionType.LAST_RUN_SUCCEEDED.value


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
        problem = RunProblem(INVALID_SPEC, validation_message(error))
    except (InvalidSpec, ValueError) as error:
        problem = RunProblem(INVALID_SPEC, str(error))
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
    """LastRunSucceeded and the run's fields; the reconciler owns the rest."""
    outcome = Outcome([condition], fields)
    await publish(kube, PRUNE_SCHEDULE, schedule, outcome, observes_spec=False)


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
