"""Pruning: the retention engine (pure) and the scanner of images in use."""

from berth.prune.retention import (
    Action,
    Basis,
    InUse,
    InventoryManifest,
    InventoryRepository,
    ManifestFacts,
    Plan,
    PlanEntry,
    RepositoryFacts,
    RepositorySelection,
    RetentionRules,
    plan,
)

__all__ = [
    "Action",
    "Basis",
    "InUse",
    "InventoryManifest",
    "InventoryRepository",
    "ManifestFacts",
    "Plan",
    "PlanEntry",
    "RepositoryFacts",
    "RepositorySelection",
    "RetentionRules",
    "plan",
]
