"""Session fixtures: the real test-bed control plane, a real registry, namespaces.

A test that needs the cluster and cannot get it fails; it never skips.
`BERTH_TEST_KUBECONFIG=<path>` points the tests at an existing cluster (kind, or one
started with `make cluster-up`) instead of starting one.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from berth.handlers.main import operate
from berth.handlers.settings import Memo
from berth.k8s.crds import apply_crds
from berth.observability import REDACTOR
from berth.resources.nodeagent import SETTINGS_ENV as AGENT_SETTINGS_ENV
from testbed.cluster import KWOK_NAMESPACE_ANNOTATIONS, LocalCluster
from testbed.node import RealNode, running_owner
from testbed.registry import LocalRegistry
from testbed.testbin import REPO_ROOT, ensure_built

OPERATOR_TAG_POLL_INTERVAL = 300.0


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster | None]:
    """The session's test-bed cluster (None when BERTH_TEST_KUBECONFIG names another)."""
    if os.environ.get("BERTH_TEST_KUBECONFIG"):
        yield None
        return
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
    except Exception as error:
        pytest.fail(f"the test-bed cluster did not start: {error}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def kubeconfig(local_cluster: LocalCluster | None) -> Path:
    if local_cluster is None:
        return Path(os.environ["BERTH_TEST_KUBECONFIG"])
    return local_cluster.kubeconfig


@pytest.fixture(scope="session")
def real_node(local_cluster: LocalCluster | None) -> RealNode:
    """The session cluster's real node, where Pods run and the kubelet pulls."""
    node = _session_node(local_cluster)
    if node is None:
        pytest.fail(
            "these tests need the test bed's real node (BERTH_TEST_KUBECONFIG and "
            "BERTH_REAL_NODE=0 leave it out)",
            pytrace=False,
        )
    return node


@pytest.fixture
def node_namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace whose Pods run on the real node, deleted afterwards."""
    name = f"n-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name, "labels": {"berth.dev/test": "true"}}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def api_client(kubeconfig: Path) -> Iterator[client.ApiClient]:
    api = config.new_client_from_config(str(kubeconfig))
    yield api
    api.close()


@pytest.fixture(scope="session")
def berth_crds(kubeconfig: Path) -> list[str]:
    """The committed crds/ applied (server-side, idempotent), Established and served."""
    return apply_crds(REPO_ROOT / "crds", kubeconfig=str(kubeconfig))


@pytest.fixture
def namespace(api_client: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards; its Pods go to the kwok node."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace(
        {
            "metadata": {
                "name": name,
                "labels": {"berth.dev/test": "true"},
                "annotations": KWOK_NAMESPACE_ANNOTATIONS,
            }
        }
    )
    yield name
    core.delete_namespace(name)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    with LocalRegistry(tmp_path / "registry") as running:
        yield running


class RunningOperator:
    """The real operator, in-process on its own event loop, with its log records kept."""

    def __init__(self) -> None:
        self.records: list[logging.LogRecord] = []
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # What the handlers share: the notifications port, the TagPolicy poll interval.
        self.memo = Memo()

    @property
    def notifications_url(self) -> str:
        """Where a test registry sends its notifications (add /<namespace>/<name>)."""
        return f"http://127.0.0.1:{self.memo.notifications.port}/notifications"

    def log_text(self) -> str:
        return "\n".join(f"{r.name} {r.getMessage()}" for r in self.records)


class _Keep(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self.records = records
        self.addFilter(REDACTOR)  # as configure_logging() does for the real handlers

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)
        self.records.append(record)


def _session_node(local_cluster: LocalCluster | None) -> RealNode | None:
    """The real node of the session's cluster, if it has one."""
    if local_cluster is not None:
        return local_cluster.node
    owner = running_owner()
    kubeconfig = Path(os.environ["BERTH_TEST_KUBECONFIG"]).resolve()
    if owner is not None and Path(owner) == kubeconfig.parent:
        return RealNode(Path(owner) / "node", ensure_built())
    return None


@pytest.fixture(scope="session")
def session_node(local_cluster: LocalCluster | None) -> RealNode | None:
    """The session's real node when it has one; tests that work either way take this."""
    return _session_node(local_cluster)


@pytest.fixture(scope="session")
def operator(
    kubeconfig: Path, berth_crds: list[str], local_cluster: LocalCluster | None
) -> Iterator[RunningOperator]:
    os.environ["KUBECONFIG"] = str(kubeconfig)
    node = _session_node(local_cluster)
    if node is not None:
        # Install settings, as the chart's nodeAgent values would say them.
        os.environ[AGENT_SETTINGS_ENV] = json.dumps(node.agent_settings())
    running = RunningOperator()
    keep = _Keep(running.records)
    root = logging.getLogger()
    root.addHandler(keep)
    logging.getLogger("kopf.objects").addFilter(REDACTOR)

    def run() -> None:
        try:
            asyncio.run(
                operate(
                    namespaces=[],
                    standalone=True,
                    peering=None,
                    liveness=None,
                    stop_flag=running.stop,
                    ready_flag=running.ready,
                    notifications_address="127.0.0.1:0",
                    # Long: tests of polling shorten it; others must not depend on it.
                    tag_poll_interval=OPERATOR_TAG_POLL_INTERVAL,
                    memo=running.memo,
                )
            )
        except BaseException as error:
            running.error = error
            running.ready.set()

    running.thread = threading.Thread(target=run, name="berth-operator", daemon=True)
    running.thread.start()
    if not running.ready.wait(60) or running.error is not None:
        pytest.fail(f"the operator did not start: {running.error}", pytrace=False)
    yield running
    running.stop.set()
    running.thread.join(30)
    root.removeHandler(keep)
