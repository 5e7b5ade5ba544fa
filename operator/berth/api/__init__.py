"""Berth's custom resources (berth.dev/v1alpha1) as pydantic models.

The models are the source of truth: crds/ is generated from them (`make crds`), and the
operator reads objects with e.g. `RegistrySpec.model_validate(body["spec"])` or
`Registry.model_validate(body)`. Python attributes are snake_case; the wire form is
camelCase (`model.to_api()`).
"""

from berth.api.common import Condition, ConditionStatus, ConditionType, RegistryReference
from berth.api.pruneschedule import PruneSchedule, PruneScheduleSpec, PruneScheduleStatus
from berth.api.registry import Registry, RegistrySpec, RegistryStatus
from berth.api.tagpolicy import TagPolicy, TagPolicySpec, TagPolicyStatus

__all__ = [
    "Condition",
    "ConditionStatus",
    "ConditionType",
    "PruneSchedule",
    "PruneScheduleSpec",
    "PruneScheduleStatus",
    "Registry",
    "RegistryReference",
    "RegistrySpec",
    "RegistryStatus",
    "TagPolicy",
    "TagPolicySpec",
    "TagPolicyStatus",
]
