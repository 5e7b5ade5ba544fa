"""One prune run: what is in use -> inventory -> plan -> delete -> storage GC.

The order is the safety argument. The scan of what the cluster uses comes first and any
error in it ends the run before the registry is even listed: nothing is deleted on a
partial view. The inventory fails whole, too (see berth.registry.inventory). Just before
deleting, each affected repository's tags are read again: a digest a tag has moved to
since planning, or that a new index names, is kept. Indexes are deleted before the
children they name, and a child whose index could not be deleted is kept.

The caller resolves the registry (URL, credentials, CA, host names) and decides whether
storage GC may run; this module neither reads nor writes the PruneSchedule.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from berth.api.common import glob_match
from berth.concurrency import gather_all
from berth.k8s.api import Kube
from berth.k8s.kinds import TAG_POLICY
from berth.prune.gc import GCResult, GCTimeouts, collect_garbage
from berth.prune.inuse import (
    DEFAULT_PAGE_SIZE,
    InUseImages,
    InUseScanError,
    find_in_use,
    list_all,
)
from berth.prune.retention import (
    Action,
    Basis,
    Plan,
    PlanEntry,
    RepositorySelection,
    RetentionRules,
    plan,
)
from berth.registry.access import RegistryAccess
from berth.registry.client import (
    INDEX_MEDIA_TYPES,
    DigestCache,
    Manifest,
    RegistryClient,
    RegistryError,
)
from berth.registry.inventory import RepositoryInventory, inventory

logger = logging.getLogger(__name__)

# Repositories inventoried (and pruned) at once; the client bounds requests in flight.
PARALLEL_REPOSITORIES: Final = 16
# Requests in flight to the registry. distribution 2.8 on 2 cores serves GETs a little
# faster at 8 connections than at 16 (docs/benchmarks.md), and a prune shares the
# registry with the cluster's pulls.
REGISTRY_CONCURRENCY: Final = 8
# Consecutive failed deletes, with none succeeding, after which the run stops deleting:
# the registry refuses deletes (storage.delete disabled, read-only, no permission).
GIVE_UP_AFTER_FAILURES: Final = 20
# The phases a run reports to its Progress, in order.
PHASE_SCAN: Final = "scanning the cluster for images in use"
PHASE_INVENTORY: Final = "reading repositories"
PHASE_DELETE: Final = "deleting"
PHASE_GC: Final = "storage garbage collection (the registry is read-only)"


class Progress(Protocol):
    """Where a run reports how far it got (a terminal progress bar, or nothing)."""

    def start(self, phase: str, total: int | None) -> None: ...

    def advance(self, amount: int = 1) -> None: ...


class _NoProgress:
    def start(self, phase: str, total: int | None) -> None:
        pass

    def advance(self, amount: int = 1) -> None:
        pass


@dataclass(frozen=True)
class ScopedSelection(RepositorySelection):
    """spec.repositories, further limited to `scope` (e.g. `team-a/**` for a schedule
    outside the Registry's namespace)."""

    scope: str | None = None

    def selects(self, repository: str) -> bool:
        if self.scope is not None and not glob_match(self.scope, repository):
            return False
        return super().selects(repository)


@dataclass(frozen=True)
class PruneRequest:
    access: RegistryAccess
    rules: RetentionRules
    registry_namespace: str
    registry_name: str
    protect_in_use: bool = True
    dry_run: bool = False
    # Storage GC after deletes (the caller checked that it can run); when False,
    # `gc_note` says why not, for the report.
    garbage_collect: bool = False
    gc_note: str | None = None
    gc_timeouts: GCTimeouts = field(default_factory=GCTimeouts)


@dataclass
class RunReport:
    started: datetime.datetime
    dry_run: bool
    completed: datetime.datetime | None = None
    plan: Plan | None = None
    # Set when the run stopped before deleting anything: a CamelCase reason.
    failure: str | None = None
    in_use_references: int = 0
    deleted: list[tuple[str, str]] = field(default_factory=list)
    tags_deleted: int = 0
    kept_after_recheck: list[tuple[str, str]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    gc: GCResult | None = None
    bytes_reclaimed: int = 0
    # How bytes_reclaimed was found: "measured" (the collector's log), "estimated"
    # (the deleted images' blobs that no inventoried image shares; an upper bound), or
    # "none" (nothing was collected).
    bytes_basis: str = "none"

    @property
    def succeeded(self) -> bool:
        return self.failure is None and not self.errors

    def entries(self) -> list[PlanEntry]:
        """The plan's entries as they ended: what the recheck kept is shown kept."""
        if self.plan is None:
            return []
        rescued = set(self.kept_after_recheck)
        return [
            PlanEntry(
                e.repository,
                e.tag,
                e.digest,
                Action.KEEP,
                Basis.REFERENCED,
                "a tag moved to it while pruning",
            )
            if e.action is Action.DELETE and (e.repository, e.digest) in rescued
            else e
            for e in self.plan.entries
        ]


class _RecordingClient(RegistryClient):
    """A RegistryClient that remembers the blob digests and sizes of every manifest it
    fetches: what storage GC can free is computed from them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sizes: dict[str, int] = {}
        self.blobs_of: dict[str, tuple[str, ...]] = {}

    async def get_manifest(self, repository: str, reference: str) -> Manifest:
        manifest = await super().get_manifest(repository, reference)
        self.sizes[manifest.digest] = len(manifest.raw)
        blobs = ((manifest.config,) if manifest.config else ()) + manifest.layers
        for blob in blobs:
            self.sizes[blob.digest] = blob.size
        self.blobs_of[manifest.digest] = tuple(blob.digest for blob in blobs)
        return manifest


def open_client(access: RegistryAccess, *, cache: DigestCache | None = None) -> _RecordingClient:
    return _RecordingClient(
        access.url,
        username=access.username,
        password=access.password,
        ca_pem=access.ca_pem,
        concurrency=REGISTRY_CONCURRENCY,
        cache=cache,
    )


# -- the cluster's side ----------------------------------------------------------------


async def scan_cluster(
    kube: Kube,
    hosts: Iterable[str],
    registry_namespace: str,
    registry_name: str,
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> InUseImages:
    """Images in use: Pods and workload templates anywhere, plus the current image of
    every tag of the TagPolicies on this Registry. Raises InUseScanError."""
    images = await find_in_use(kube, hosts, page_size=page_size)
    policies = list_all(kube, TAG_POLICY, page_size, plural="TagPolicies", detail=str)
    async for policy in policies:
        for key, user in _current_tags(policy, registry_namespace, registry_name):
            images.references.setdefault(key, user)
    return images


def _current_tags(
    policy: Mapping[str, Any], registry_namespace: str, registry_name: str
) -> Iterable[tuple[tuple[str, str], str]]:
    metadata = policy.get("metadata") or {}
    namespace, name = metadata.get("namespace"), metadata.get("name")
    spec = policy.get("spec") or {}
    ref = spec.get("registryRef") or {}
    if ref.get("name") != registry_name or (ref.get("namespace") or namespace) != (
        registry_namespace
    ):
        return
    repository = spec.get("repository") or f"{namespace}/{name}"
    user = f"TagPolicy {namespace}/{name}"
    for tag_status in (policy.get("status") or {}).get("tags") or ():
        items = tag_status.get("items") or []
        if items and items[0].get("digest"):  # newest first: the tag's current image
            yield (repository, str(items[0]["digest"])), user
            if tag_status.get("tag"):
                yield (repository, str(tag_status["tag"])), user


# -- the run -----------------------------------------------------------------------------


async def execute(
    request: PruneRequest,
    *,
    kube: Kube,
    scan: Kube | None = None,
    progress: Progress | None = None,
    now: datetime.datetime | None = None,
) -> RunReport:
    """One run. `scan` is the API connection the in-use scan lists through (`kube` by
    default). Never raises for a failed step: the report says what failed."""
    progress = progress or _NoProgress()
    report = RunReport(started=datetime.datetime.now(datetime.UTC), dry_run=request.dry_run)
    try:
        await _execute(request, kube, scan or kube, progress, report, now)
    finally:
        report.completed = datetime.datetime.now(datetime.UTC)
    return report


async def _execute(
    request: PruneRequest,
    kube: Kube,
    scan: Kube,
    progress: Progress,
    report: RunReport,
    now: datetime.datetime | None,
) -> None:
    in_use: dict[tuple[str, str], str] = {}
    if request.protect_in_use:
        progress.start(PHASE_SCAN, None)
        try:
            found = await scan_cluster(
                scan,
                request.access.hosts,
                request.registry_namespace,
                request.registry_name,
            )
        except InUseScanError as error:
            report.failure = "InUseScanFailed"
            report.errors.append(f"nothing was deleted: {error}")
            return
        in_use = found.references
        report.in_use_references = len(in_use)
        logger.info(
            "%d objects scanned: %d references to this registry are in use",
            found.objects_scanned,
            len(in_use),
        )
        report.notes += found.warnings[:5]
    else:
        report.notes.append("protectInUse is false: images in use were not protected")

    client = open_client(request.access)
    async with client:
        try:
            found_inventory, report.plan = await plan_registry(
                client, request.rules, in_use, now=now, progress=progress
            )
        except (RegistryError, ValueError) as error:
            report.failure = "InventoryFailed"
            report.errors.append(f"nothing was deleted: reading the registry failed: {error}")
            return
        if request.dry_run or not report.plan.deletions:
            report.tags_deleted = report.plan.tags_deleted
            if request.dry_run:
                report.bytes_reclaimed = _estimate(report.plan.deletions, found_inventory, client)
                report.bytes_basis = "estimated"
            return
        logger.info(
            "planned: delete %d of %d manifests",
            len(report.plan.deletions),
            sum(len(r.manifests) for r in found_inventory.values()),
        )
        await _delete(client, report.plan, found_inventory, progress, report)
        if not report.deleted:
            return
        if not request.garbage_collect:
            if request.gc_note:
                report.notes.append(request.gc_note)
            return
        progress.start(PHASE_GC, None)
        report.gc = await collect_garbage(
            kube, request.registry_namespace, request.registry_name, timeouts=request.gc_timeouts
        )
        report.errors += report.gc.errors
        report.notes += report.gc.notes
        if report.gc.swept is not None:
            report.bytes_reclaimed, unknown = reclaimed_bytes(report.gc.swept, client.sizes)
            report.bytes_basis = "measured"
            if unknown:
                report.notes.append(
                    f"{unknown} swept blobs were not seen in this run; their sizes are not counted"
                )
        elif report.gc.succeeded:
            report.bytes_reclaimed = _estimate(report.deleted, found_inventory, client)
            report.bytes_basis = "estimated"


async def plan_registry(
    client: RegistryClient,
    rules: RetentionRules,
    in_use: Mapping[tuple[str, str], str],
    *,
    now: datetime.datetime | None = None,
    progress: Progress | None = None,
) -> tuple[dict[str, RepositoryInventory], Plan]:
    """Inventory the selected repositories and plan: the read-only half of a run (what
    `hack/benchmarks/prune.py` measures)."""
    found = await _inventory(client, rules, progress or _NoProgress())
    return found, plan(found, in_use, rules, now or datetime.datetime.now(datetime.UTC))


async def _inventory(
    client: RegistryClient, rules: RetentionRules, progress: Progress
) -> dict[str, RepositoryInventory]:
    names = [name for name in await client.catalog() if rules.repositories.selects(name)]
    progress.start(PHASE_INVENTORY, len(names))
    gate = asyncio.Semaphore(PARALLEL_REPOSITORIES)

    async def one(name: str) -> dict[str, RepositoryInventory]:
        async with gate:
            found = await inventory(client, repositories=[name])
        progress.advance()
        return found

    merged: dict[str, RepositoryInventory] = {}
    for found in await gather_all(one(name) for name in names):
        merged.update(found)
    return merged


@dataclass
class _DeleteState:
    successes: int = 0
    consecutive_failures: int = 0
    already_gone: int = 0

    @property
    def given_up(self) -> bool:
        return self.successes == 0 and self.consecutive_failures >= GIVE_UP_AFTER_FAILURES


async def _delete(
    client: RegistryClient,
    the_plan: Plan,
    found: Mapping[str, RepositoryInventory],
    progress: Progress,
    report: RunReport,
) -> None:
    by_repository: dict[str, list[str]] = {}
    for repository, digest in the_plan.deletions:
        by_repository.setdefault(repository, []).append(digest)
    progress.start(PHASE_DELETE, len(the_plan.deletions))
    state = _DeleteState()
    gate = asyncio.Semaphore(PARALLEL_REPOSITORIES)

    async def one(repository: str, digests: list[str]) -> None:
        async with gate:
            await _delete_repository(client, repository, digests, found[repository], state, report)
        progress.advance(len(digests))

    await asyncio.gather(*(one(r, d) for r, d in by_repository.items()))
    if state.given_up:
        report.errors.append(
            f"stopped deleting after {GIVE_UP_AFTER_FAILURES} failed deletes and none that "
            "succeeded: does the registry allow deletes (storage.delete.enabled)?"
        )
    if state.already_gone:
        report.notes.append(f"{state.already_gone} manifests were already gone")
    deleted = set(report.deleted)
    planned_tags = [e for e in the_plan.entries if e.tag is not None and e.action is Action.DELETE]
    report.tags_deleted = sum(1 for e in planned_tags if (e.repository, e.digest) in deleted)


async def _delete_repository(
    client: RegistryClient,
    repository: str,
    digests: list[str],
    facts: RepositoryInventory,
    state: _DeleteState,
    report: RunReport,
) -> None:
    doomed = set(digests)
    try:
        rescued = await _moved_onto(client, repository, facts, doomed)
    except RegistryError as error:
        report.errors.append(
            f"{repository}: kept everything, its tags could not be read again: {error}"
        )
        return
    report.kept_after_recheck += [(repository, digest) for digest in sorted(rescued)]
    pending = [digest for digest in digests if digest not in rescued]
    # An index before the children it names: a child goes only once every doomed index
    # naming it is gone, so a failed index delete keeps its children.
    parents: dict[str, set[str]] = {}
    for digest in pending:
        manifest = facts.manifests.get(digest)
        for child in manifest.children if manifest else ():
            parents.setdefault(child, set()).add(digest)
    gone: set[str] = set()
    while pending and not state.given_up:
        ready = [digest for digest in pending if parents.get(digest, set()) <= gone]
        if not ready:
            # Everything left waits on an index whose delete failed.
            for digest in pending:
                report.errors.append(
                    f"{repository}@{digest}: kept, deleting an index that names it failed"
                )
            return
        results = await asyncio.gather(*(_delete_one(client, repository, d) for d in ready))
        for digest, (deleted, failure) in zip(ready, results, strict=True):
            if deleted is None:
                state.consecutive_failures += 1
                report.errors.append(f"deleting {repository}@{digest}: {failure}")
                continue
            state.successes += 1
            state.consecutive_failures = 0
            gone.add(digest)
            if deleted:
                report.deleted.append((repository, digest))
            else:
                state.already_gone += 1
        pending = [digest for digest in pending if digest not in ready]


async def _delete_one(
    client: RegistryClient, repository: str, digest: str
) -> tuple[bool | None, str]:
    try:
        return await client.delete_manifest(repository, digest), ""
    except RegistryError as error:
        return None, str(error)


async def _moved_onto(
    client: RegistryClient, repository: str, facts: RepositoryInventory, doomed: set[str]
) -> set[str]:
    """The doomed digests that tags now reach which they did not when the plan was made:
    a tag moved onto one, or a new index names one. Those must stay."""
    try:
        tags = await client.tags(repository)
    except RegistryError as error:
        if error.status == 404:
            return set()
        raise

    async def resolve(tag: str) -> tuple[str, str, str] | None:
        try:
            descriptor = await client.head_manifest(repository, tag)
        except RegistryError as error:
            if error.status == 404:
                return None  # deleted meanwhile
            raise
        return tag, descriptor.digest, descriptor.media_type

    changed: list[tuple[str, str]] = []
    for resolved in await gather_all(resolve(tag) for tag in tags):
        if resolved is None:
            continue
        tag, digest, media_type = resolved
        if facts.tags.get(tag) != digest:
            changed.append((digest, media_type))
    if not changed:
        return set()
    reached: set[str] = set()
    frontier = [digest for digest, _ in changed]
    media_types = dict(changed)
    while frontier:
        digest = frontier.pop()
        if digest in reached:
            continue
        reached.add(digest)
        known = facts.manifests.get(digest)
        if known is not None:
            frontier += known.children
        elif media_types.get(digest) in INDEX_MEDIA_TYPES:
            manifest = await client.get_manifest(repository, digest)
            frontier += [child.digest for child in manifest.children]
    return reached & doomed


# -- bytes -------------------------------------------------------------------------------


def reclaimed_bytes(swept: Iterable[str], sizes: Mapping[str, int]) -> tuple[int, int]:
    """(bytes of the swept blobs whose size is known, how many had no known size)."""
    total = unknown = 0
    for digest in swept:
        size = sizes.get(digest)
        if size is None:
            unknown += 1
        else:
            total += size
    return total, unknown


def _estimate(
    deleted: Iterable[tuple[str, str]],
    found: Mapping[str, RepositoryInventory],
    client: _RecordingClient,
) -> int:
    """What GC can free: the deleted manifests and their blobs, less the blobs any kept
    manifest of the inventory uses. An upper bound: repositories outside the selection
    may share blobs too."""
    deleted_digests = {digest for _, digest in deleted}
    kept_blobs: set[str] = set()
    for repository in found.values():
        for digest in repository.manifests:
            if digest not in deleted_digests:
                kept_blobs.add(digest)
                kept_blobs.update(client.blobs_of.get(digest, ()))
    freed: set[str] = set()
    for digest in deleted_digests:
        freed.add(digest)
        freed.update(client.blobs_of.get(digest, ()))
    return sum(client.sizes.get(blob, 0) for blob in freed - kept_blobs)
