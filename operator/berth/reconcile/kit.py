"""The pass kit: what every reconciler does around its own work.

    hold the object's lock -> read it -> nothing when it is gone or being deleted
    -> the kind's work, where a spec that cannot work becomes an invalid Outcome
    -> metrics -> the one status writer (`publish`)

A kind's reconciler keeps only its work: `Passes.run(kube, namespace, name, work)`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import ValidationError

from berth.api.common import ConditionType
from berth.k8s.api import JSON, Kube
from berth.k8s.events import post_event
from berth.k8s.kinds import Kind
from berth.observability import RECONCILE_SECONDS, RECONCILES
from berth.reconcile.conditions import Cond, find, merge_conditions
from berth.reconcile.invalid import InvalidSpec, validation_message
from berth.reconcile.locks import ObjectLocks
from berth.reconcile.status import patch_status

INVALID_SPEC: Final = "InvalidSpec"
READY: Final = ConditionType.READY


@dataclass(frozen=True)
class Note:
    """An Event a pass posts after its status write."""

    reason: str
    message: str
    warning: bool = True


@dataclass
class Outcome:
    """What one pass found and did."""

    conditions: list[Cond] = field(default_factory=list)
    fields: dict[str, Any] = field(default_factory=dict)  # status fields this pass owns
    writes: int = 0  # child writes this pass made
    # The spec cannot work as written: retrying the same generation cannot help.
    invalid: bool = False
    next_check: float | None = None  # seconds until a pass is next due, if it is timed
    events: list[Note] = field(default_factory=list)  # posted after the status write

    @property
    def ready(self) -> Cond:
        return next(c for c in self.conditions if c.type == READY)


def invalid_outcome(message: str, *, rollout: bool = False) -> Outcome:
    """Ready False with reason InvalidSpec; with `rollout`, Progressing and Degraded
    (the conditions of a kind that rolls out a workload) say so too."""
    conditions = [Cond(READY, False, INVALID_SPEC, message)]
    if rollout:
        conditions += [
            Cond(
                ConditionType.PROGRESSING,
                False,
                INVALID_SPEC,
                "Nothing is rolled out until the spec is fixed",
            ),
            Cond(ConditionType.DEGRADED, True, INVALID_SPEC, message),
        ]
    return Outcome(conditions, invalid=True)


async def checked(
    work: Awaitable[Outcome], on_invalid: Callable[[str], Outcome] = invalid_outcome
) -> Outcome:
    """`work`'s Outcome, or `on_invalid(message)` when the spec does not validate or
    cannot work (InvalidSpec)."""
    try:
        return await work
    except ValidationError as error:
        return on_invalid(validation_message(error))
    except InvalidSpec as error:
        return on_invalid(str(error))


@dataclass(frozen=True)
class EventRule:
    """Which changes of Ready's reason become an Event."""

    announce_ready: bool = False  # a Normal `Ready` Event when it turns True
    quiet: frozenset[str] = frozenset()  # False reasons that are no one's problem


async def publish(
    kube: Kube,
    kind: Kind,
    obj: JSON,
    outcome: Outcome,
    events: EventRule = EventRule(),
    *,
    observes_spec: bool = True,
) -> None:
    """The one status writer. Merges the fields this pass owns (and, when it has
    conditions, observedGeneration, unless the writer is not a pass over the spec, as a
    prune run is not) into the current status: a read-modify-write under
    the object's resourceVersion, so two passes that own different fields of one status
    (the Registry's and the access pass) never undo each other, and no write at all
    when nothing changed. Then an Event when Ready changed its reason, as `events` says."""

    def update(old: JSON, current: JSON) -> JSON:
        new = {**old, **outcome.fields}
        if outcome.conditions:
            generation = current["metadata"].get("generation")
            if observes_spec:
                new["observedGeneration"] = generation
            new["conditions"] = merge_conditions(
                old.get("conditions"), outcome.conditions, generation
            )
        return new

    changed = await patch_status(kube, kind, obj, update)
    if changed is not None and outcome.conditions:
        await _announce(kube, obj, changed, events)
    for note in outcome.events:
        await post_event(kube, obj, reason=note.reason, message=note.message, warning=note.warning)


async def _announce(kube: Kube, obj: JSON, changed: tuple[JSON, JSON], rule: EventRule) -> None:
    before, after = find(changed[0].get("conditions"), READY), find(changed[1]["conditions"], READY)
    if after is None or (before is not None and before.get("reason") == after.get("reason")):
        return
    if after["status"] == "False" and after["reason"] not in rule.quiet:
        await post_event(kube, obj, reason=after["reason"], message=after["message"], warning=True)
    elif after["status"] == "True" and rule.announce_ready:
        await post_event(kube, obj, reason="Ready", message=after["message"])


class Passes:
    """Passes of one kind: never two at once for one object, each counted and timed."""

    def __init__(self, kind: Kind, *, metrics: bool = True) -> None:
        self.kind = kind
        self.metrics = metrics
        self._locks = ObjectLocks()

    def forget(self, namespace: str, name: str) -> None:
        self._locks.forget(namespace, name)

    def exclusive(self, namespace: str, name: str) -> AbstractAsyncContextManager[None]:
        """Hold off passes for one object (e.g. while it is being deleted)."""
        return self._locks.hold(namespace, name)

    async def run(
        self, kube: Kube, namespace: str, name: str, work: Callable[[JSON], Awaitable[Outcome]]
    ) -> Outcome | None:
        """One pass; None when the object is gone or being deleted."""
        started = time.monotonic()
        async with self._locks.hold(namespace, name):
            obj = await kube.get(self.kind, namespace, name)
            if obj is None or obj["metadata"].get("deletionTimestamp"):
                return None
            if not self.metrics:
                return await work(obj)
            try:
                outcome = await work(obj)
            except Exception:
                RECONCILES.labels(self.kind.kind, "error").inc()
                raise
            finally:
                RECONCILE_SECONDS.labels(self.kind.kind).observe(time.monotonic() - started)
            RECONCILES.labels(self.kind.kind, "ok" if outcome.ready.status else "not-ready").inc()
            return outcome
