"""Storage garbage collection for Managed registries.

distribution deletes a manifest by removing links; the blobs stay on disk until its
mark-and-sweep `garbage-collect` runs, which is only safe while nothing writes (uploads
in flight would be swept). So, for one Registry:

    set berth.dev/maintenance=read-only on the Registry
    -> wait until its ReadOnly condition is True with reason Maintenance (the Registry
       reconciler sets that once every Pod serves the read-only config)
    -> run `registry garbage-collect <config>` as a Job on the same storage, with the
       registry's image and config, pinned to the registry Pod's node for a
       ReadWriteOnce volume
    -> wait for the Job, read the blobs it swept from its log
    -> remove the annotation, in a `finally`: whatever failed, read-write comes back.

If the Job may still be running when we stop waiting, it is deleted (and its Pods
waited out, within bounds) before read-write is restored.

Not for emptyDir (the volume lives inside the registry Pod) nor Unmanaged registries.
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

from berth.api.registry import RegistryConditionType, RegistrySpec
from berth.constants import (
    ANNOTATION_MAINTENANCE,
    MAINTENANCE_READ_ONLY,
)
from berth.k8s.api import JSON, ApiException, Kube
from berth.k8s.kinds import JOB, POD, REGISTRY
from berth.resources.pruneschedule import gc_job, gc_storage, single_node_volume
from berth.resources.render import selector_labels

READ_ONLY = RegistryConditionType.READ_ONLY

logger = logging.getLogger(__name__)

ROUTE_API: Final = "route.openshift.io/v1"
MAINTENANCE_REASON: Final = "Maintenance"
# `blob eligible for deletion: sha256:...`, one line per blob the sweep removes
# (distribution 2.8 and 3.x print it to stdout).
_SWEPT_LINE: Final = re.compile(r"blob eligible for deletion: ([a-z0-9]+:[a-f0-9]+)")
_SUMMARY_LINE: Final = re.compile(r"(\d+) blobs marked, (\d+) blobs and (\d+) manifests eligible")

Step = Callable[[str], Awaitable[None]]


class GarbageCollectionError(RuntimeError):
    pass


@dataclass(frozen=True)
class GCTimeouts:
    """Seconds. The Job's own deadline is shorter than our wait for it, so that the
    Job controller has stopped the collector before we give up and restore read-write."""

    read_only: float = 600.0
    job_deadline: int = 6 * 3600
    job_grace: float = 120.0
    job_gone: float = 120.0
    poll: float = 2.0


@dataclass
class GCResult:
    ran: bool = False
    job_name: str | None = None
    # Digests the collector reported swept; None when its log could not be read.
    swept: set[str] | None = None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    restored: bool = True  # read-write is back (or was never taken away)

    @property
    def succeeded(self) -> bool:
        return self.ran and not self.errors


def parse_swept_blobs(log: str) -> set[str]:
    """The digests a `garbage-collect` run reports as swept."""
    return set(_SWEPT_LINE.findall(log))


def gc_summary(log: str) -> str | None:
    """distribution's own one-line summary, e.g. `9 blobs marked, 4 blobs and 0
    manifests eligible for deletion`."""
    match = _SUMMARY_LINE.search(log)
    return match.group(0) + " for deletion" if match else None


def skip_reason(spec: RegistrySpec) -> str | None:
    """Why storage GC cannot run on this Registry, or None."""
    if gc_storage(spec) is not None:
        return None
    if spec.storage is not None and spec.storage.empty_dir is not None:
        return (
            "storage GC skipped: emptyDir storage lives inside the registry Pod, where no "
            "other Pod can reach it; the deleted images' blobs stay until the Pod restarts"
        )
    return "storage GC skipped: Berth does not run this registry (not Managed)"


def _condition(registry: JSON, condition_type: str) -> JSON:
    for condition in (registry.get("status") or {}).get("conditions") or []:
        if condition.get("type") == condition_type:
            return dict(condition)
    return {}


def _annotation(registry: JSON) -> str | None:
    value = ((registry.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_MAINTENANCE)
    return str(value) if value is not None else None


async def _wait(
    what: str, check: Callable[[], Awaitable[bool]], within: float, poll: float
) -> None:
    """Poll `check` until it is true; GarbageCollectionError after `within` seconds."""
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() >= deadline:
            raise GarbageCollectionError(f"timed out after {within:.0f}s waiting for {what}")
        await asyncio.sleep(poll)


async def collect_garbage(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    timeouts: GCTimeouts | None = None,
    on_step: Step | None = None,
    executable: str = "registry",
) -> GCResult:
    """Run storage GC on the Managed Registry namespace/name (see the module's doc).

    Errors are returned in the result, never raised, except cancellation; in every case
    the maintenance annotation this call set is removed before it returns.
    """
    timeouts = timeouts or GCTimeouts()
    result = GCResult()

    async def step(label: str) -> None:
        logger.info("storage GC of %s/%s: %s", namespace, name, label)
        if on_step is not None:
            await on_step(label)

    registry = await kube.get(REGISTRY, namespace, name)
    if registry is None:
        result.errors.append(f"storage GC: Registry {namespace}/{name} no longer exists")
        return result
    spec = RegistrySpec.model_validate(registry.get("spec") or {})
    reason = skip_reason(spec)
    if reason is not None:
        result.notes.append(reason)
        return result
    if _annotation(registry) is not None:
        # Someone else (another schedule's GC, a person) holds the maintenance window; its
        # end is theirs to decide, and running alongside it gains nothing.
        result.notes.append(
            f"storage GC skipped: the Registry already carries {ANNOTATION_MAINTENANCE}="
            f"{_annotation(registry)}"
        )
        return result
    if spec.read_only:
        result.notes.append("storage GC skipped: the Registry is read-only by its spec")
        return result

    annotated = False
    job_name: str | None = None
    job_done = False
    try:
        # A ReadOnly=True left from a maintenance that just ended would let us start the
        # collector before the Pods are read-only again: wait for it to clear first.
        await _wait(
            "the Registry's ReadOnly condition from an earlier maintenance to clear",
            lambda: _read_only_cleared(kube, namespace, name),
            timeouts.read_only,
            timeouts.poll,
        )
        await _annotate(kube, registry)
        annotated = True
        result.restored = False
        await step("annotated")
        await _wait(
            f"Registry {namespace}/{name} to become read-only (condition {READ_ONLY}"
            f"=True, reason {MAINTENANCE_REASON})",
            lambda: _read_only_for_maintenance(kube, namespace, name),
            timeouts.read_only,
            timeouts.poll,
        )
        await step("read-only")
        node = await _registry_node(kube, namespace, name) if single_node_volume(spec) else None
        if single_node_volume(spec) and node is None:
            raise GarbageCollectionError(
                "no running registry Pod shows which node its ReadWriteOnce volume is on"
            )
        job_name = f"{name}-gc-{secrets.token_hex(3)}"
        job = gc_job(
            registry,
            spec,
            job_name=job_name,
            node_name=node,
            openshift=await kube.has_api(ROUTE_API),
            active_deadline=timeouts.job_deadline,
            executable=executable,
        )
        await kube.create(job)
        result.job_name = job_name
        result.ran = True
        await step("job-created")
        job_done = await _wait_for_job(kube, namespace, job_name, timeouts)
        await step("job-finished")
        log = await _job_log(kube, namespace, job_name)
        if log is None:
            result.notes.append(
                f"the log of GC Job {job_name} could not be read; bytes reclaimed are estimated"
            )
        else:
            result.swept = parse_swept_blobs(log)
            summary = gc_summary(log)
            if summary:
                result.notes.append(f"garbage-collect: {summary}")
    except GarbageCollectionError as error:
        result.errors.append(f"storage GC: {error}")
    except ApiException as error:
        result.errors.append(f"storage GC: the API server answered {error.status} {error.reason}")
    except Exception as error:  # connection trouble and the like; cancellation passes
        result.errors.append(f"storage GC: {type(error).__name__}: {error}")
    finally:
        if job_name is not None and not job_done:
            await _stop_job(kube, namespace, job_name, timeouts, result)
        if annotated:
            result.restored = await _restore(kube, namespace, name, result)
            await step("restored")
    return result


async def _read_only_cleared(kube: Kube, namespace: str, name: str) -> bool:
    registry = await kube.get(REGISTRY, namespace, name)
    if registry is None:
        raise GarbageCollectionError(f"Registry {namespace}/{name} was deleted")
    return _condition(registry, READ_ONLY).get("status") != "True"


async def _read_only_for_maintenance(kube: Kube, namespace: str, name: str) -> bool:
    registry = await kube.get(REGISTRY, namespace, name)
    if registry is None:
        raise GarbageCollectionError(f"Registry {namespace}/{name} was deleted")
    if _annotation(registry) != MAINTENANCE_READ_ONLY:
        raise GarbageCollectionError(
            f"the {ANNOTATION_MAINTENANCE} annotation was removed by someone else while "
            "waiting for read-only"
        )
    condition = _condition(registry, READ_ONLY)
    return condition.get("status") == "True" and condition.get("reason") == MAINTENANCE_REASON


async def _annotate(kube: Kube, registry: JSON) -> None:
    metadata = registry["metadata"]
    # The resourceVersion makes this conditional: had another GC annotated the Registry
    # since we read it, the patch fails (409) rather than taking over its window.
    patch = {
        "metadata": {
            "resourceVersion": metadata["resourceVersion"],
            "annotations": {ANNOTATION_MAINTENANCE: MAINTENANCE_READ_ONLY},
        }
    }
    try:
        await kube.merge_patch(REGISTRY, metadata["namespace"], metadata["name"], patch)
    except ApiException as error:
        if error.status == 409:
            raise GarbageCollectionError(
                "the Registry changed while the maintenance window was being opened; "
                "not collecting this time"
            ) from error
        raise


async def _restore(kube: Kube, namespace: str, name: str, result: GCResult) -> bool:
    """Remove the maintenance annotation, retrying: a registry left read-only refuses
    every push, so this is worth a few attempts."""
    patch: JSON = {"metadata": {"annotations": {ANNOTATION_MAINTENANCE: None}}}
    last: Exception | None = None
    for attempt in range(5):
        try:
            await kube.merge_patch(REGISTRY, namespace, name, patch)
            return True
        except ApiException as error:
            if error.status == 404:
                return True  # the Registry is gone, and its read-only state with it
            last = error
        except Exception as error:  # connection trouble: keep trying
            last = error
        await asyncio.sleep(min(2.0**attempt, 10.0))
    message = (
        f"storage GC: could not remove {ANNOTATION_MAINTENANCE} from Registry "
        f"{namespace}/{name} ({last}); the registry stays read-only until it is removed: "
        f"kubectl annotate registry -n {namespace} {name} {ANNOTATION_MAINTENANCE}-"
    )
    logger.error("%s", message)
    result.errors.append(message)
    return False


async def _registry_node(kube: Kube, namespace: str, name: str) -> str | None:
    selector = ",".join(f"{k}={v}" for k, v in selector_labels(name, "registry").items())
    async for pod in kube.list(POD, namespace, label_selector=selector):
        status, spec = pod.get("status") or {}, pod.get("spec") or {}
        if (
            status.get("phase") == "Running"
            and spec.get("nodeName")
            and not (pod.get("metadata") or {}).get("deletionTimestamp")
        ):
            return str(spec["nodeName"])
    return None


async def _wait_for_job(kube: Kube, namespace: str, job_name: str, timeouts: GCTimeouts) -> bool:
    """Wait until the Job finished; True when it completed, raises when it failed."""
    outcome: dict[str, str] = {}

    async def finished() -> bool:
        job = await kube.get(JOB, namespace, job_name)
        if job is None:
            raise GarbageCollectionError(f"GC Job {job_name} disappeared")
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("status") != "True":
                continue
            if condition.get("type") in ("Complete", "Failed"):
                outcome.update(condition)
                return True
        return False

    await _wait(
        f"GC Job {job_name}",
        finished,
        timeouts.job_deadline + timeouts.job_grace,
        timeouts.poll,
    )
    if outcome.get("type") == "Failed":
        raise GarbageCollectionError(
            f"GC Job {job_name} failed: {outcome.get('reason')}: {outcome.get('message', '')}"
        )
    return True


async def _job_log(kube: Kube, namespace: str, job_name: str) -> str | None:
    """The collector's output, or None when no Pod log can be read (e.g. where Pods do
    not really run, or without the right to read logs)."""
    try:
        async for pod in kube.list(POD, namespace, label_selector=f"job-name={job_name}"):
            return await kube.pod_log(namespace, pod["metadata"]["name"], request_timeout=60)
    except Exception as error:
        logger.info("no log from GC Job %s: %s", job_name, error)
    return None


async def _stop_job(
    kube: Kube, namespace: str, job_name: str, timeouts: GCTimeouts, result: GCResult
) -> None:
    """Delete a Job that may still be collecting and wait for its Pods to be gone, so
    that read-write is never restored under a running sweep (within `job_gone`)."""
    try:
        await kube.delete(JOB, namespace, job_name, propagation="Foreground")

        async def gone() -> bool:
            async for _ in kube.list(POD, namespace, label_selector=f"job-name={job_name}"):
                return False
            return True

        await _wait(f"the Pods of GC Job {job_name} to stop", gone, timeouts.job_gone, 1.0)
    except Exception as error:
        result.errors.append(f"storage GC: stopping Job {job_name}: {error}")
