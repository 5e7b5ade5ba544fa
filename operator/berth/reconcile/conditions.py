"""metav1.Condition bookkeeping: lastTransitionTime moves only when status flips."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Cond:
    type: str
    status: bool | None  # None is Unknown
    reason: str
    message: str = ""

    @property
    def status_text(self) -> str:
        return {True: "True", False: "False", None: "Unknown"}[self.status]


def merge_conditions(
    current: list[dict[str, Any]] | None, updates: list[Cond], generation: int | None
) -> list[dict[str, Any]]:
    """The condition list with `updates` applied; others are kept as they are."""
    by_type = {c["type"]: dict(c) for c in current or [] if "type" in c}
    for update in updates:
        previous = by_type.get(update.type)
        transition = (
            previous["lastTransitionTime"]
            if previous
            and previous.get("status") == update.status_text
            and previous.get("lastTransitionTime")
            else now_rfc3339()
        )
        condition: dict[str, Any] = {
            "type": update.type,
            "status": update.status_text,
            "reason": update.reason,
            "message": update.message[:1024],
            "lastTransitionTime": transition,
        }
        if generation is not None:
            condition["observedGeneration"] = generation
        by_type[update.type] = condition
    return sorted(by_type.values(), key=lambda c: str(c["type"]))


def find(conditions: list[dict[str, Any]] | None, condition_type: str) -> dict[str, Any] | None:
    return next((c for c in conditions or [] if c.get("type") == condition_type), None)
