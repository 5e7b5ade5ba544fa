"""Reading Secrets: the decoded text of a key."""

from __future__ import annotations

import base64

from berth.k8s.api import JSON


def secret_value(secret: JSON | None, key: str) -> str | None:
    """The base64-decoded text of `data[key]`; None when the Secret, its data or the key
    is absent, or the value is empty."""
    value = ((secret or {}).get("data") or {}).get(key)
    return base64.b64decode(value).decode() if value else None
