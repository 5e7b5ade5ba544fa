"""The in-use scanner against the real control plane.

Every test invents registry host names of its own, so objects that other tests leave in
other namespaces never match, and the expected in-use sets can be exact.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Iterator

import pytest
from kubernetes import client

from berth.k8s.api import Kube
from berth.prune.inuse import DEFAULT_PAGE_SIZE, InUseImages, InUseScanError, find_in_use
from testbed.cluster import free_port, wait_for

pytestmark = pytest.mark.cluster

SHA_A = "sha256:" + "a" * 64
SHA_B = "sha256:" + "b" * 64
SHA_C = "sha256:" + "c" * 64


def scan_in_use(
    api_client: client.ApiClient, hosts: Iterable[str], *, page_size: int = DEFAULT_PAGE_SIZE
) -> InUseImages:
    """find_in_use, blocking, through an API connection the test holds (and keeps)."""
    kube = Kube(api_client, owns_client=False)
    try:
        return asyncio.run(find_in_use(kube, hosts, page_size=page_size))
    finally:
        kube.close()


@pytest.fixture
def hosts() -> list[str]:
    """Three names for one made-up registry: service DNS, cluster IP, external host."""
    token = uuid.uuid4().hex[:8]
    octets = ".".join(str(int(token[i : i + 2], 16)) for i in (0, 2, 4))
    return [f"reg-{token}.berth.svc:5000", f"10.{octets}:5000", f"reg-{token}.example.com"]


def container(name: str, image: str) -> dict[str, object]:
    return {"name": name, "image": image}


def pod_template(*images: str, restart: str = "Always") -> dict[str, object]:
    return {
        "metadata": {"labels": {"app": "x"}},
        "spec": {
            "restartPolicy": restart,
            "containers": [container(f"c{n}", image) for n, image in enumerate(images)],
        },
    }


def unschedulable_pod(name: str, *images: str) -> dict[str, object]:
    """A Pod no node takes, so the status written by the test is the only status."""
    template = pod_template(*images)
    spec = template["spec"]
    assert isinstance(spec, dict)
    spec["nodeSelector"] = {"berth.dev/no-such-node": "true"}
    return {"metadata": {"name": name}, "spec": spec}


def test_finds_images_of_pods_and_every_workload_kind(
    api_client: client.ApiClient, namespace: str, hosts: list[str]
) -> None:
    service, cluster_ip, external = hosts
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    batch = client.BatchV1Api(api_client)

    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "initContainers": [container("init", f"{service}/team/init:v2")],
                "containers": [
                    container("web", f"{service}/team/web:v1"),
                    container("sidecar", f"{cluster_ip}/team/proxy@{SHA_A}"),
                    container("elsewhere", "quay.io/other/thing:1"),
                    container("hub", "nginx"),
                    # Invalid, but not ours: reported, not fatal.
                    container("broken", "other.example.org/Bad_Name:x"),
                ],
            },
        },
    )
    core.patch_namespaced_pod_ephemeralcontainers(
        "web",
        namespace,
        {
            "spec": {
                "ephemeralContainers": [
                    {
                        "name": "debug",
                        "image": f"{external}/tools/debug",
                        "targetContainerName": "web",
                    }
                ]
            }
        },
    )
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "api"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "x"}},
                "template": pod_template(f"{service}/team/api:1.2@{SHA_B}"),
            },
        },
    )
    apps.create_namespaced_stateful_set(
        namespace,
        {
            "metadata": {"name": "db"},
            "spec": {
                "replicas": 0,
                "serviceName": "db",
                "selector": {"matchLabels": {"app": "x"}},
                "template": pod_template(f"{external}:443/team/db:15"),
            },
        },
    )
    apps.create_namespaced_daemon_set(
        namespace,
        {
            "metadata": {"name": "agent"},
            "spec": {
                "selector": {"matchLabels": {"app": "x"}},
                "template": pod_template(f"{service}/infra/agent:3"),
            },
        },
    )
    batch.create_namespaced_job(
        namespace,
        {
            "metadata": {"name": "migrate"},
            "spec": {
                "suspend": True,
                "template": pod_template(f"{service}/team/migrate:7", restart="Never"),
            },
        },
    )
    batch.create_namespaced_cron_job(
        namespace,
        {
            "metadata": {"name": "nightly"},
            "spec": {
                "schedule": "0 3 * * *",
                "suspend": True,
                "jobTemplate": {
                    "spec": {
                        "template": pod_template(f"{service}/team/nightly:2025", restart="Never")
                    }
                },
            },
        },
    )

    found = scan_in_use(api_client, hosts)

    assert found.references == {
        ("team/init", "v2"): f"Pod {namespace}/web",
        ("team/web", "v1"): f"Pod {namespace}/web",
        ("team/proxy", SHA_A): f"Pod {namespace}/web",
        ("tools/debug", "latest"): f"Pod {namespace}/web",
        ("team/api", "1.2"): f"Deployment {namespace}/api",
        ("team/api", SHA_B): f"Deployment {namespace}/api",
        ("team/db", "15"): f"StatefulSet {namespace}/db",
        ("infra/agent", "3"): found.references[("infra/agent", "3")],
        ("team/migrate", "7"): found.references[("team/migrate", "7")],
        ("team/nightly", "2025"): f"CronJob {namespace}/nightly",
    }
    # A DaemonSet's Pods and a Job's Pods may be listed before their owners.
    assert found.references[("infra/agent", "3")].split()[0] in ("Pod", "DaemonSet")
    assert found.references[("team/migrate", "7")] == f"Job {namespace}/migrate"
    assert any(
        f"Pod {namespace}/web" in warning and "Bad_Name" in warning for warning in found.warnings
    )


def test_status_image_ids_count_by_digest(
    api_client: client.ApiClient, namespace: str, hosts: list[str]
) -> None:
    service = hosts[0]
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, unschedulable_pod("app", f"{service}/team/app:v1"))
    core.patch_namespaced_pod_status(
        "app",
        namespace,
        {
            "status": {
                "containerStatuses": [
                    {
                        "name": "c0",
                        "image": f"{service}/team/app:v1",
                        # What the tag resolved to when the container started.
                        "imageID": f"docker-pullable://{service}/team/app@{SHA_C}",
                        "ready": False,
                        "restartCount": 0,
                        "state": {"waiting": {"reason": "ContainerCreating"}},
                    }
                ]
            }
        },
    )
    found = scan_in_use(api_client, hosts)
    assert found.references == {
        ("team/app", "v1"): f"Pod {namespace}/app",
        ("team/app", SHA_C): f"Pod {namespace}/app",
    }


def test_pages_give_the_same_answer_as_one_list(
    api_client: client.ApiClient, namespace: str, hosts: list[str]
) -> None:
    core = client.CoreV1Api(api_client)
    for n in range(5):
        core.create_namespaced_pod(namespace, unschedulable_pod(f"p{n}", f"{hosts[0]}/app:{n}"))
    paged = scan_in_use(api_client, hosts, page_size=2)
    whole = scan_in_use(api_client, hosts)
    assert paged.references == whole.references
    assert set(paged.references) == {("app", str(n)) for n in range(5)}


def test_an_unparsable_reference_to_our_registry_fails_closed(
    api_client: client.ApiClient, namespace: str, hosts: list[str]
) -> None:
    core = client.CoreV1Api(api_client)
    core.create_namespaced_pod(namespace, unschedulable_pod("bad", f"{hosts[0]}/Team/App:v1"))
    with pytest.raises(InUseScanError, match=rf"Pod {namespace}/bad uses .*must be lowercase"):
        scan_in_use(api_client, hosts)


def test_an_unreachable_api_server_fails_closed(hosts: list[str]) -> None:
    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{free_port()}"
    configuration.retries = 0
    with (
        client.ApiClient(configuration) as unreachable,
        pytest.raises(InUseScanError, match="listing Pods failed"),
    ):
        scan_in_use(unreachable, hosts)


@pytest.fixture
def reader(api_client: client.ApiClient, namespace: str) -> Iterator[client.ApiClient]:
    """A client with a ServiceAccount's token, allowed to list Pods and nothing else."""
    core = client.CoreV1Api(api_client)
    rbac = client.RbacAuthorizationV1Api(api_client)
    core.create_namespaced_service_account(namespace, {"metadata": {"name": "pruner"}})
    token = core.create_namespaced_service_account_token(
        "pruner", namespace, {"spec": {"expirationSeconds": 600}}
    ).status.token
    role = f"berth-test-{namespace}"
    rbac.create_cluster_role(
        {
            "metadata": {"name": role},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [{"kind": "ServiceAccount", "name": "pruner", "namespace": namespace}],
        }
    )
    configuration = client.Configuration()
    configuration.host = api_client.configuration.host
    configuration.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    configuration.api_key = {"authorization": f"Bearer {token}"}
    try:
        with client.ApiClient(configuration) as limited:
            yield limited
    finally:
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)


def test_a_forbidden_list_fails_closed(
    api_client: client.ApiClient, reader: client.ApiClient, hosts: list[str]
) -> None:
    # The reader may list Pods (once RBAC has seen the binding)...
    pods = client.CoreV1Api(reader)
    wait_for(
        "the Pod list to be allowed", lambda: bool(pods.list_pod_for_all_namespaces(limit=1)), 30
    )
    # ...but not Deployments, and a partial answer is no answer.
    with pytest.raises(InUseScanError, match=r"listing Deployments failed: HTTP 403"):
        scan_in_use(reader, hosts)
