"""The test bed is a real cluster and a real registry: prove each property Berth needs."""

from __future__ import annotations

import hashlib
import json
import subprocess
import uuid
from pathlib import Path

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from testbed.cluster import wait_for
from testbed.images import push_sync, random_image, random_index
from testbed.registry import LocalRegistry

RESTRICTED_CONTAINER = {
    "name": "app",
    "image": "registry.invalid/app:1",
    "securityContext": {
        "runAsNonRoot": True,
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    },
}


def test_deployment_becomes_available(api_client: client.ApiClient, namespace: str) -> None:
    apps = client.AppsV1Api(api_client)
    labels = {"app": "web"}
    apps.create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]},
                },
            },
        },
    )

    def available() -> bool:
        status = apps.read_namespaced_deployment("web", namespace).status
        return (status.available_replicas or 0) == 2 and any(
            c.type == "Available" and c.status == "True" for c in status.conditions or []
        )

    wait_for("Deployment web Available", available, timeout=60)


def test_deleting_owner_garbage_collects_child(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    core.create_namespaced_config_map(
        namespace,
        {
            "metadata": {
                "name": "child",
                "ownerReferences": [
                    {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "name": "owner",
                        "uid": owner.metadata.uid,
                    }
                ],
            }
        },
    )
    core.delete_namespaced_config_map("owner", namespace)

    def child_gone() -> bool:
        try:
            core.read_namespaced_config_map("child", namespace)
        except ApiException as error:
            return error.status == 404
        return False

    wait_for("child ConfigMap garbage-collected", child_gone, timeout=60)


def test_cronjob_creates_a_job(api_client: client.ApiClient, namespace: str) -> None:
    batch = client.BatchV1Api(api_client)
    batch.create_namespaced_cron_job(
        namespace,
        {
            "metadata": {"name": "tick"},
            "spec": {
                "schedule": "* * * * *",
                "jobTemplate": {
                    "spec": {
                        "template": {
                            "spec": {
                                "restartPolicy": "Never",
                                "containers": [{"name": "tick", "image": "registry.invalid/t:1"}],
                            }
                        }
                    }
                },
            },
        },
    )

    def job_created() -> bool:
        jobs = batch.list_namespaced_job(namespace).items
        return any(
            ref.kind == "CronJob" and ref.name == "tick"
            for job in jobs
            for ref in job.metadata.owner_references or []
        )

    # The schedule fires at the next minute boundary; the controller syncs every 10 s.
    wait_for("a Job from CronJob tick", job_created, timeout=90, interval=1)


def test_crd_cel_rule_rejects_bad_object_with_its_message(
    api_client: client.ApiClient, namespace: str
) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.testbed.berth.dev"
    extensions = client.ApiextensionsV1Api(api_client)
    crd_name = f"widgets.{group}"
    extensions.create_custom_resource_definition(
        {
            "metadata": {"name": crd_name},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "properties": {
                                            "min": {"type": "integer"},
                                            "max": {"type": "integer"},
                                        },
                                        "x-kubernetes-validations": [
                                            {
                                                "rule": "self.min <= self.max",
                                                "message": "spec.min must not exceed spec.max",
                                            }
                                        ],
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        }
    )
    try:

        def established() -> bool:
            crd = extensions.read_custom_resource_definition(crd_name)
            return any(
                c.type == "Established" and c.status == "True" for c in crd.status.conditions or []
            )

        wait_for(f"CRD {crd_name} Established", established, timeout=30)
        custom = client.CustomObjectsApi(api_client)

        def widget(name: str, low: int, high: int) -> dict[str, object]:
            return {
                "apiVersion": f"{group}/v1",
                "kind": "Widget",
                "metadata": {"name": name},
                "spec": {"min": low, "max": high},
            }

        # Discovery of a fresh CRD can lag Established by a moment.
        wait_for(
            "the good Widget to be accepted",
            lambda: bool(
                custom.create_namespaced_custom_object(
                    group, "v1", namespace, "widgets", widget("good", 1, 2)
                )
            ),
            timeout=30,
        )
        with pytest.raises(ApiException) as rejected:
            custom.create_namespaced_custom_object(
                group, "v1", namespace, "widgets", widget("bad", 3, 2)
            )
        assert rejected.value.status == 422
        assert "spec.min must not exceed spec.max" in json.loads(rejected.value.body)["message"]
    finally:
        extensions.delete_custom_resource_definition(crd_name)


def test_restricted_namespace_rejects_privileged_pod(
    api_client: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(api_client)
    core.patch_namespace(
        namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    privileged = {
        "metadata": {"name": "privileged"},
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "registry.invalid/app:1",
                    "securityContext": {"privileged": True},
                }
            ]
        },
    }
    with pytest.raises(ApiException) as rejected:
        core.create_namespaced_pod(namespace, privileged)
    assert rejected.value.status == 403
    assert "violates PodSecurity" in rejected.value.body

    compliant = {"metadata": {"name": "compliant"}, "spec": {"containers": [RESTRICTED_CONTAINER]}}
    assert core.create_namespaced_pod(namespace, compliant).metadata.name == "compliant"


def _skopeo(*args: str) -> bytes:
    return subprocess.run(["skopeo", *args], check=True, capture_output=True).stdout


@pytest.mark.parametrize("multi_platform", [False, True], ids=["single", "index"])
def test_pushed_image_pulls_back_with_the_same_digest(
    registry: LocalRegistry, tmp_path: Path, multi_platform: bool
) -> None:
    artifact = random_index() if multi_platform else random_image(layers=2)
    push_sync(registry.url, [("team-a/app", "v1", artifact)])
    reference = f"docker://{registry.host}/team-a/app:v1"

    raw = _skopeo("inspect", "--raw", "--tls-verify=false", reference)
    assert "sha256:" + hashlib.sha256(raw).hexdigest() == artifact.digest

    # A full pull: skopeo verifies every blob it copies against its digest.
    layout = tmp_path / "layout"
    _skopeo("copy", "--quiet", "--all", "--src-tls-verify=false", reference, f"oci:{layout}:v1")
    index = json.loads((layout / "index.json").read_text())
    assert [m["digest"] for m in index["manifests"]] == [artifact.digest]
