"""PruneSchedule: periodic deletion of old images from a registry, and storage GC."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from pydantic import ConfigDict, Field

from berth.api.common import (
    BerthModel,
    Condition,
    CronSchedule,
    Duration,
    FreeForm,
    RegistryReference,
    RepositoryGlob,
    StatusModel,
    TagGlob,
    TimeZone,
    conditions_field,
)
from berth.constants import API_VERSION, PRUNE_SCHEDULE_KIND

# status.plan holds at most this many entries; the rest are only counted in status.lastRun.
PLAN_LIMIT: Final = 500
# status.lastRun.errors holds at most this many messages.
ERRORS_LIMIT: Final = 50


class PruneScheduleConditionType(StrEnum):
    """A PruneSchedule's own condition types, beside the common ones (ConditionType)."""

    LAST_RUN_SUCCEEDED = "LastRunSucceeded"


class PlanAction(StrEnum):
    DELETE = "Delete"
    KEEP = "Keep"


class RepositorySelection(BerthModel):
    """Which repositories are pruned."""

    include: list[RepositoryGlob] = Field(
        default_factory=lambda: ["**"],
        min_length=1,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Repository globs to prune: "*" matches within one path segment, "**" any depth."""
    exclude: list[RepositoryGlob] = Field(
        default_factory=list, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Repository globs never pruned, even when included."""


class Retention(BerthModel):
    """What is kept. An image is kept when any rule keeps it."""

    keep_last: int = Field(default=3, ge=0, le=10000)
    """Newest images kept per repository, by image creation or push time."""
    keep_younger_than: Duration = "60m"
    """Images pushed more recently than this are kept, as a Go duration (e.g. 168h)."""
    keep_tags: list[TagGlob] | None = Field(
        default=None, max_length=64, json_schema_extra={"x-kubernetes-list-type": "set"}
    )
    """Tag globs (e.g. v*, release-*) whose images are always kept."""
    delete_untagged: bool = True
    """Also delete manifests that no tag points to."""


class GarbageCollect(BerthModel):
    """Storage garbage collection after deletes."""

    enabled: bool = True
    """Run the registry's garbage collector after a run that deleted something, to free
    the storage of blobs no manifest uses. The registry is read-only while it runs."""


class PruneScheduleSpec(BerthModel):
    """The desired state of a PruneSchedule."""

    registry_ref: RegistryReference
    """The Registry to prune. For now it must be in the schedule's own namespace: a
    schedule elsewhere is refused (InvalidSpec), since its runs would need the whole
    registry's credential."""
    schedule: CronSchedule = "0 3 * * *"
    """When to run, in cron format (minute hour day-of-month month day-of-week) or a macro
    such as @daily."""
    time_zone: TimeZone | None = None
    """IANA time zone of the schedule, e.g. Europe/Berlin; the controller's zone when
    unset."""
    suspend: bool = False
    """Skip scheduled runs while true; a running prune is not stopped."""
    repositories: RepositorySelection = Field(default_factory=RepositorySelection)
    """Repositories to prune."""
    retention: Retention = Field(default_factory=Retention)
    """Images to keep."""
    protect_in_use: bool = True
    """Never delete an image referenced by a Pod, or by the Pod template of a Deployment,
    ReplicaSet, StatefulSet, DaemonSet, Job or CronJob in any namespace, or by a
    TagPolicy's current tags. If any of these cannot be listed, the run aborts and
    deletes nothing."""
    garbage_collect: GarbageCollect = Field(default_factory=GarbageCollect)
    """Storage garbage collection after deletes."""
    dry_run: bool = False
    """Plan only: status.plan lists what would be deleted, nothing is."""
    successful_jobs_history_limit: int = Field(default=3, ge=0, le=100)
    """Finished prune Jobs kept."""
    failed_jobs_history_limit: int = Field(default=3, ge=0, le=100)
    """Failed prune Jobs kept."""
    resources: FreeForm | None = None
    """Compute resources of the prune Job's container (a core/v1 ResourceRequirements)."""


class RunSummary(StatusModel):
    """Counts from one prune run."""

    start_time: datetime | None = None
    """When the run started."""
    completion_time: datetime | None = None
    """When the run finished."""
    dry_run: bool | None = None
    """Whether the run only planned."""
    repositories: int | None = Field(default=None, ge=0)
    """Repositories scanned."""
    tags_scanned: int | None = Field(default=None, ge=0)
    """Tags looked at."""
    tags_deleted: int | None = Field(default=None, ge=0)
    """Tags deleted (or that would be, in a dry run)."""
    manifests_deleted: int | None = Field(default=None, ge=0)
    """Manifests deleted (or that would be, in a dry run)."""
    bytes_reclaimed: int | None = Field(default=None, ge=0)
    """Storage freed by garbage collection."""
    kept_in_use: int | None = Field(default=None, ge=0)
    """Images kept because something in the cluster references them."""
    kept_by_rule: int | None = Field(default=None, ge=0)
    """Images kept by a retention rule."""
    errors: list[str] = Field(default_factory=list, max_length=ERRORS_LIMIT)
    """Errors met during the run (the first few)."""


class PlanEntry(StatusModel):
    """One decision of a prune run."""

    repository: str = Field(max_length=255)
    """The repository."""
    tag: str | None = Field(default=None, max_length=128)
    """The tag, absent for untagged manifests."""
    digest: str = Field(max_length=256)
    """Manifest digest."""
    action: str = Field(max_length=32)
    """Delete or Keep."""
    reason: str | None = Field(default=None, max_length=256)
    """Why, e.g. keepLast, inUse, keepTags."""


class PruneScheduleStatus(StatusModel):
    """The observed state of a PruneSchedule."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this status describes."""
    conditions: list[Condition] = conditions_field()
    """Ready: the CronJob is in place. LastRunSucceeded: how the last run ended."""
    last_schedule_time: datetime | None = None
    """When a run was last started."""
    last_successful_time: datetime | None = None
    """When a run last succeeded."""
    last_run: RunSummary | None = None
    """Summary of the last run."""
    plan: list[PlanEntry] = Field(default_factory=list, max_length=PLAN_LIMIT)
    """Decisions of the last run, deletions first; capped, see lastRun for totals."""


class PruneSchedule(BerthModel):
    """Deletes old images from a Registry on a schedule: keeps the newest, the young, the
    tagged-to-keep and everything in use in the cluster, then runs storage garbage
    collection."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = PRUNE_SCHEDULE_KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: PruneScheduleSpec
    status: PruneScheduleStatus = Field(default_factory=PruneScheduleStatus)
