"""What admission cannot see: a spec that passed the API server's checks but cannot
work, and the readable messages that report it."""

from __future__ import annotations

import json
from typing import Any

from pydantic import ValidationError

from berth.k8s.api import ApiException


class InvalidSpec(Exception):
    """The spec passed admission but cannot work; the message says why, for people."""


def validation_message(error: ValidationError) -> str:
    """The first pydantic error, as `spec.<field path>: <message>`."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"spec.{where}: {first.get('msg')}" if where else str(first.get("msg"))


def api_message(child: dict[str, Any], error: ApiException) -> str:
    """Why the API server refused to store a child (e.g. a PVC that cannot shrink)."""
    try:
        message = json.loads(error.body or "{}").get("message") or error.reason
    except ValueError:
        message = error.reason
    return f"the API server refused {child['kind']} {child['metadata']['name']}: {message}"
