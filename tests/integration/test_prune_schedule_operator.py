"""The PruneSchedule reconciler against the real control plane, with the operator running
in-process: the CronJob and its RBAC, spec changes, InvalidSpec, schedules in another
namespace than their Registry, and the finalizer that removes cluster-scoped children."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from berth.constants import DEFAULT_OPERATOR_IMAGE, GROUP, VERSION
from testbed.cluster import KWOK_NAMESPACE_ANNOTATIONS, free_port, wait_for

from .prune_support import create_object, custom, get_object, wait_condition

pytestmark = pytest.mark.usefixtures("operator")


def unmanaged_registry(api_client: client.ApiClient, namespace: str, name: str = "outside") -> None:
    url = f"http://127.0.0.1:{free_port()}"  # only its existence matters here
    create_object(
        api_client,
        namespace,
        "registries",
        "Registry",
        name,
        {
            "managementState": "Unmanaged",
            "external": {"url": url, "credentialsSecretRef": {"name": "outside-creds"}},
        },
    )


def patch_schedule(
    api_client: client.ApiClient, namespace: str, name: str, patch: dict[str, Any]
) -> None:
    custom(api_client).patch_namespaced_custom_object(
        GROUP, VERSION, namespace, "pruneschedules", name, patch
    )


def gone(read: Any) -> bool:
    try:
        read()
    except ApiException as error:
        if error.status == 404:
            return True
        raise
    return False


def test_schedule_gets_a_cron_job_that_follows_the_spec(
    api_client: client.ApiClient, namespace: str
) -> None:
    unmanaged_registry(api_client, namespace)
    create_object(
        api_client,
        namespace,
        "pruneschedules",
        "PruneSchedule",
        "nightly",
        {
            "registryRef": {"name": "outside"},
            "schedule": "30 2 * * *",
            "timeZone": "Europe/Berlin",
            "successfulJobsHistoryLimit": 2,
            "failedJobsHistoryLimit": 4,
        },
    )
    ready = wait_condition(api_client, namespace, "pruneschedules", "nightly", "Ready", "True")
    assert ready["reason"] == "Scheduled"
    batch = client.BatchV1Api(api_client)
    cron = batch.read_namespaced_cron_job("nightly-prune", namespace)
    assert cron.spec.concurrency_policy == "Forbid"
    assert cron.spec.schedule == "30 2 * * *"
    assert cron.spec.time_zone == "Europe/Berlin"
    assert cron.spec.suspend is False
    assert cron.spec.successful_jobs_history_limit == 2
    assert cron.spec.failed_jobs_history_limit == 4
    assert cron.metadata.owner_references[0].kind == "PruneSchedule"
    pod = cron.spec.job_template.spec.template.spec
    assert pod.service_account_name == "nightly-prune"
    (container,) = pod.containers
    assert container.image == DEFAULT_OPERATOR_IMAGE
    assert container.command == ["berth", "prune", "--schedule", f"{namespace}/nightly"]
    assert pod.security_context.run_as_non_root is True
    assert container.security_context.allow_privilege_escalation is False
    assert container.security_context.capabilities.drop == ["ALL"]

    rbac = client.RbacAuthorizationV1Api(api_client)
    cluster_role = rbac.read_cluster_role(f"berth:prune:{namespace}:nightly")
    verbs = {verb for rule in cluster_role.rules for verb in rule.verbs}
    assert verbs == {"get", "list"}  # cluster-wide, it only reads
    role = rbac.read_namespaced_role("nightly-prune", namespace)
    secret_rules = [rule for rule in role.rules if "secrets" in rule.resources]
    assert [rule.resource_names for rule in secret_rules] == [["outside-creds"]]
    binding = rbac.read_cluster_role_binding(f"berth:prune:{namespace}:nightly")
    assert binding.subjects[0].name == "nightly-prune"
    assert binding.subjects[0].namespace == namespace

    patch_schedule(
        api_client,
        namespace,
        "nightly",
        {"spec": {"suspend": True, "schedule": "0 4 * * 1", "timeZone": None}},
    )

    def followed() -> bool:
        spec = batch.read_namespaced_cron_job("nightly-prune", namespace).spec
        return bool(spec.suspend is True and spec.schedule == "0 4 * * 1" and not spec.time_zone)

    wait_for("the CronJob to follow the spec", followed, timeout=20)
    wait_condition(
        api_client, namespace, "pruneschedules", "nightly", "Ready", "True", reason="Suspended"
    )

    patch_schedule(api_client, namespace, "nightly", {"spec": {"suspend": False}})
    wait_for(
        "the CronJob to resume",
        lambda: batch.read_namespaced_cron_job("nightly-prune", namespace).spec.suspend is False,
        timeout=20,
    )


def test_prune_pod_passes_pod_security_restricted(
    api_client: client.ApiClient, namespace: str
) -> None:
    client.CoreV1Api(api_client).patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    unmanaged_registry(api_client, namespace)
    create_object(
        api_client,
        namespace,
        "pruneschedules",
        "PruneSchedule",
        "secure",
        {"registryRef": {"name": "outside"}},
    )
    wait_condition(api_client, namespace, "pruneschedules", "secure", "Ready", "True")
    batch = client.BatchV1Api(api_client)
    template = batch.read_namespaced_cron_job("secure-prune", namespace).spec.job_template
    # What the CronJob controller would do at the scheduled time.
    batch.create_namespaced_job(namespace, {"metadata": {"name": "by-hand"}, "spec": template.spec})
    wait_for(
        "the prune Pod to be admitted",
        lambda: bool(
            client.CoreV1Api(api_client)
            .list_namespaced_pod(namespace, label_selector="job-name=by-hand")
            .items
        ),
        timeout=30,
    )


def test_deleting_the_schedule_removes_cluster_scoped_children(
    api_client: client.ApiClient, namespace: str
) -> None:
    unmanaged_registry(api_client, namespace)
    create_object(
        api_client,
        namespace,
        "pruneschedules",
        "PruneSchedule",
        "doomed",
        {"registryRef": {"name": "outside"}},
    )
    wait_condition(api_client, namespace, "pruneschedules", "doomed", "Ready", "True")
    rbac = client.RbacAuthorizationV1Api(api_client)
    name = f"berth:prune:{namespace}:doomed"
    rbac.read_cluster_role(name)
    rbac.read_cluster_role_binding(name)
    # Namespaced children go with their owner (Kubernetes' garbage collector).
    uid = get_object(api_client, namespace, "pruneschedules", "doomed")["metadata"]["uid"]
    owned = [
        client.BatchV1Api(api_client).read_namespaced_cron_job("doomed-prune", namespace),
        client.CoreV1Api(api_client).read_namespaced_service_account("doomed-prune", namespace),
        rbac.read_namespaced_role("doomed-prune", namespace),
        rbac.read_namespaced_role_binding("doomed-prune", namespace),
    ]
    for child in owned:
        assert [(r.kind, r.uid) for r in child.metadata.owner_references] == [
            ("PruneSchedule", uid)
        ]

    custom(api_client).delete_namespaced_custom_object(
        GROUP, VERSION, namespace, "pruneschedules", "doomed"
    )

    wait_for("the ClusterRole to go", lambda: gone(lambda: rbac.read_cluster_role(name)), 20)
    wait_for(
        "the ClusterRoleBinding to go",
        lambda: gone(lambda: rbac.read_cluster_role_binding(name)),
        20,
    )
    wait_for(
        "the PruneSchedule to go (finalizer released)",
        lambda: gone(lambda: get_object(api_client, namespace, "pruneschedules", "doomed")),
        20,
    )


def test_a_missing_registry_is_an_invalid_spec_until_it_appears(
    api_client: client.ApiClient, namespace: str
) -> None:
    create_object(
        api_client,
        namespace,
        "pruneschedules",
        "PruneSchedule",
        "early",
        {"registryRef": {"name": "outside"}},
    )
    ready = wait_condition(
        api_client, namespace, "pruneschedules", "early", "Ready", "False", reason="InvalidSpec"
    )
    assert f"Registry {namespace}/outside does not exist" in ready["message"]
    events = client.CoreV1Api(api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=early"
    )
    assert any(e.reason == "InvalidSpec" and e.type == "Warning" for e in events.items)
    assert gone(
        lambda: client.BatchV1Api(api_client).read_namespaced_cron_job("early-prune", namespace)
    )

    unmanaged_registry(api_client, namespace)
    patch_schedule(api_client, namespace, "early", {"metadata": {"labels": {"nudge": "1"}}})
    wait_condition(api_client, namespace, "pruneschedules", "early", "Ready", "True")


@pytest.fixture
def registry_namespace(api_client: client.ApiClient) -> Iterator[str]:
    name = f"t-reg-{uuid.uuid4().hex[:8]}"
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


def test_a_schedule_in_another_namespace_is_refused_and_gets_no_role_there(
    api_client: client.ApiClient, namespace: str, registry_namespace: str
) -> None:
    """From another namespace a run would carry the whole registry's credential into a
    namespace whose tenants can use the schedule's ServiceAccount: refused for now."""
    unmanaged_registry(api_client, registry_namespace)
    create_object(
        api_client,
        namespace,
        "pruneschedules",
        "PruneSchedule",
        "mine",
        {"registryRef": {"name": "outside", "namespace": registry_namespace}},
    )
    invalid = wait_condition(
        api_client, namespace, "pruneschedules", "mine", "Ready", "False", reason="InvalidSpec"
    )
    assert "must be in its Registry's namespace" in invalid["message"]
    rbac = client.RbacAuthorizationV1Api(api_client)
    role_name = f"berth:prune:{namespace}:mine"
    assert gone(lambda: rbac.read_namespaced_role(role_name, registry_namespace))
    assert gone(lambda: rbac.read_namespaced_role_binding(role_name, registry_namespace))
