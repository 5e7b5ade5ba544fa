"""kopf handlers for PruneSchedules: a reconcile on every change and a slow drift timer;
a finalizer removes the ClusterRole and the other children owner references cannot."""

from __future__ import annotations

from typing import Any

import kopf

from berth.constants import GROUP, PRUNE_SCHEDULE_PLURAL, VERSION
from berth.handlers.settings import DRIFT_INTERVAL, Memo, refuse_invalid
from berth.reconcile import pruneschedule as reconcile

PRUNE_SCHEDULES = (GROUP, VERSION, PRUNE_SCHEDULE_PLURAL)


@kopf.on.resume(*PRUNE_SCHEDULES)
@kopf.on.create(*PRUNE_SCHEDULES)
@kopf.on.update(*PRUNE_SCHEDULES)
async def prune_schedule_changed(namespace: str | None, name: str, memo: Memo, **_: Any) -> None:
    assert namespace is not None  # PruneSchedules are namespaced
    refuse_invalid(await reconcile.reconcile_prune_schedule(memo.kube, namespace, name))


@kopf.timer(*PRUNE_SCHEDULES, interval=DRIFT_INTERVAL, initial_delay=DRIFT_INTERVAL)
async def prune_schedule_drift(namespace: str | None, name: str, memo: Memo, **_: Any) -> None:
    assert namespace is not None
    await reconcile.reconcile_prune_schedule(memo.kube, namespace, name)


# Not optional: kopf keeps a finalizer on every PruneSchedule so that this runs before the
# object goes; the ClusterRole and its binding have no owner to be collected with.
@kopf.on.delete(*PRUNE_SCHEDULES)
async def prune_schedule_deleted(namespace: str | None, name: str, memo: Memo, **_: Any) -> None:
    assert namespace is not None
    await reconcile.cleanup(memo.kube, namespace, name)
    reconcile.forget(namespace, name)
