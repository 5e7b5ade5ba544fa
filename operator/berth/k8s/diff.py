"""Is the live object already what we want? A drift pass that finds nothing to change
must make no writes, so children are compared before they are applied."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from kubernetes.utils.quantity import parse_quantity

# Fields the API server owns or rewrites; desired manifests never set them.
_IGNORED_METADATA = {"resourceVersion", "uid", "generation", "creationTimestamp", "managedFields"}


def _empty(value: Any) -> bool:
    return value is None or value == {} or value == []


def is_subset(desired: Any, actual: Any) -> bool:
    """True when every field set in `desired` has the same value in `actual`.

    Maps are compared key by key (extra keys in `actual` are defaults or belong to other
    field managers); lists must have the same length and match element by element. An
    empty map or list in `desired` matches a missing field, as the API server drops them.
    """
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return _empty(desired) and actual is None
        return all(
            key in _IGNORED_METADATA
            or (is_subset(value, actual.get(key)) if key in actual else _empty(value))
            for key, value in desired.items()
        )
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return _empty(desired) and actual is None
        return len(desired) == len(actual) and all(
            is_subset(d, a) for d, a in zip(desired, actual, strict=True)
        )
    if isinstance(desired, bool) or isinstance(actual, bool):
        return desired is actual
    if isinstance(desired, int | float) and isinstance(actual, int | float):
        return desired == actual
    if desired == actual:
        return True
    # The API server canonicalises quantities ("0.5" cpu reads back as "500m").
    return isinstance(desired, str) and isinstance(actual, str) and _same_quantity(desired, actual)


def _same_quantity(left: str, right: str) -> bool:
    try:
        return bool(_quantity(left) == _quantity(right))
    except (ValueError, InvalidOperation):
        return False


def _quantity(text: str) -> Decimal:
    if not text or not (text[0].isdigit() or text[0] in ".+-"):
        raise ValueError(text)
    return Decimal(parse_quantity(text))  # type: ignore[no-untyped-call]
