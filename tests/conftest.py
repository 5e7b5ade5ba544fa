"""Session fixtures: the real test-bed control plane, a real registry, namespaces.

A test that needs the cluster and cannot get it fails; it never skips.
`BERTH_TEST_KUBECONFIG=<path>` points the tests at an existing cluster (kind, or one
started with `make cluster-up`) instead of starting one.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client, config

from berth.k8s.crds import apply_crds
from testbed.cluster import LocalCluster
from testbed.registry import LocalRegistry
from testbed.testbin import REPO_ROOT


@pytest.fixture(scope="session")
def kubeconfig(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    external = os.environ.get("BERTH_TEST_KUBECONFIG")
    if external:
        yield Path(external)
        return
    cluster = LocalCluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
    except Exception as error:
        pytest.fail(f"the test-bed cluster did not start: {error}", pytrace=False)
    try:
        yield cluster.kubeconfig
    finally:
        cluster.stop()


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
    """A fresh namespace per test, deleted afterwards."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(api_client)
    core.create_namespace({"metadata": {"name": name, "labels": {"berth.dev/test": "true"}}})
    yield name
    core.delete_namespace(name)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    with LocalRegistry(tmp_path / "registry") as running:
        yield running
