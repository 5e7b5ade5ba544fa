"""Ordering for the integration tests."""

from __future__ import annotations

import pytest

# Modules that must run before the others, in this order:
# - test_launcher.py starts clusters of its own with the real node, which can only run
#   while the session's cluster (started on first use of the `kubeconfig` fixture) does
#   not hold the machine's one real node yet;
# - test_install.py and test_node_chart.py run their own operator (a process, a Pod
#   from the chart) and must not share the cluster with the session's in-process one
#   (the `operator` fixture starts it on first use).
RUN_FIRST = ("test_launcher.py", "test_install.py", "test_node_chart.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    def rank(item: pytest.Item) -> int:
        name = item.path.name
        return RUN_FIRST.index(name) if name in RUN_FIRST else len(RUN_FIRST)

    items.sort(key=rank)  # stable: the order is kept otherwise
