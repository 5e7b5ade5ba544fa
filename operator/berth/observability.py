"""Metrics and log hygiene shared by every layer.

Metrics are Prometheus counters and histograms served by `berth operator`. The
`SecretRedactor` is the last line of defence for "never log a credential": every
credential Berth generates or reads is registered with it, and a logging filter replaces
it with `[redacted]` in any record before a handler sees it.
"""

from __future__ import annotations

import logging
import threading
from typing import Final

from prometheus_client import Counter, Histogram

RECONCILES: Final = Counter(
    "berth_reconciles_total", "Reconcile passes by kind and result", ["kind", "result"]
)
RECONCILE_SECONDS: Final = Histogram(
    "berth_reconcile_duration_seconds", "Duration of reconcile passes", ["kind"]
)
API_WRITES: Final = Counter(
    "berth_api_writes_total", "Write calls Berth made to the API server", ["verb", "kind"]
)
NOTIFICATIONS: Final = Counter(
    "berth_registry_notifications_total",
    "Notification envelopes registries sent to Berth, by result",
    ["result"],
)
NOTIFICATION_WAKEUPS: Final = Counter(
    "berth_notification_wakeups_total", "TagPolicy passes started by a registry notification"
)
TAG_REVERTS: Final = Counter(
    "berth_immutable_tag_reverts_total", "Immutable tags Berth put back after a push"
)

_REDACTED: Final = "[redacted]"
_MIN_SECRET_LENGTH: Final = 8  # shorter values would redact ordinary words


class SecretRedactor(logging.Filter):
    """Replaces registered secret values in log records."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def register(self, *values: str | bytes | None) -> None:
        with self._lock:
            for value in values:
                if isinstance(value, bytes):
                    value = value.decode(errors="ignore")
                if value and len(value) >= _MIN_SECRET_LENGTH:
                    self._secrets.add(value)

    def redact(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, _REDACTED)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._secrets:
            message = record.getMessage()
            redacted = self.redact(message)
            if redacted != message:
                record.msg, record.args = redacted, None
        return True


REDACTOR: Final = SecretRedactor()
