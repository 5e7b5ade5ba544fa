"""Level-based reconcilers: read the object and its children, drive them toward the spec,
and report what is true in status. Nothing here depends on how it was triggered."""
