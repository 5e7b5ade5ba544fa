"""Ordering for the integration tests."""

from __future__ import annotations

import pytest

# Modules that run their own operator and must not share the cluster with the session's
# in-process one (the `operator` fixture starts it on first use and keeps it running).
RUN_FIRST = ("test_install.py",)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=lambda item: item.path.name not in RUN_FIRST)  # stable: order kept otherwise
