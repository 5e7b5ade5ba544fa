"""The PruneSchedule's pure builders, checked without a cluster: the CronJob, the RBAC
split by reach, and the storage-GC Job for each kind of storage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from berth.api.pruneschedule import PruneScheduleSpec
from berth.api.registry import RegistrySpec
from berth.constants import DEFAULT_OPERATOR_IMAGE, LABEL_INSTANCE, operator_image
from berth.resources.pruneschedule import (
    LABEL_SCHEDULE_NAMESPACE,
    PruneInputs,
    desired_children,
    gc_job,
    registry_secret_names,
    unowned_children,
)

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
SCHEDULE = {
    "apiVersion": "berth.dev/v1alpha1",
    "kind": "PruneSchedule",
    "metadata": {"name": "nightly", "namespace": "team", "uid": "1111"},
}
REGISTRY = {
    "apiVersion": "berth.dev/v1alpha1",
    "kind": "Registry",
    "metadata": {"name": "reg", "namespace": "team", "uid": "2222"},
}


def sample(kind: str) -> dict[str, Any]:
    """The spec in manifests/samples/<kind>.yaml (registry.yaml: emptyDir storage)."""
    document = yaml.safe_load((SAMPLES / f"{kind.lower()}.yaml").read_text())
    assert document["kind"] == kind
    return dict(document["spec"])


def inputs(
    schedule: dict[str, Any] | None = None,
    registry: dict[str, Any] | None = None,
    *,
    registry_namespace: str = "team",
    openshift: bool = False,
) -> PruneInputs:
    return PruneInputs(
        owner=SCHEDULE,
        spec=PruneScheduleSpec.model_validate(schedule or sample("PruneSchedule")),
        registry_name="reg",
        registry_namespace=registry_namespace,
        registry_spec=RegistrySpec.model_validate(registry or sample("Registry")),
        image="example.test/berth:1",
        openshift=openshift,
    )


def by_kind(manifests: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] == kind]


def test_cron_job_forbids_overlap_and_follows_the_spec() -> None:
    spec = {**sample("PruneSchedule"), "suspend": True, "successfulJobsHistoryLimit": 1}
    (cron,) = by_kind(desired_children(inputs(spec)), "CronJob")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == "30 2 * * *"
    assert cron["spec"]["timeZone"] == "Etc/UTC"
    assert cron["spec"]["suspend"] is True
    assert cron["spec"]["successfulJobsHistoryLimit"] == 1
    assert cron["spec"]["failedJobsHistoryLimit"] == 3
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["image"] == "example.test/berth:1"
    assert container["command"] == ["berth", "prune", "--schedule", "team/nightly"]
    assert pod["serviceAccountName"] == "nightly-prune"
    assert pod["restartPolicy"] == "Never"


def test_an_unset_time_zone_is_rendered_as_null_so_that_apply_removes_it() -> None:
    spec = {**sample("PruneSchedule")}
    del spec["timeZone"]
    (cron,) = by_kind(desired_children(inputs(spec)), "CronJob")
    assert "timeZone" in cron["spec"]
    assert cron["spec"]["timeZone"] is None


@pytest.mark.parametrize("openshift", [False, True])
def test_prune_pod_meets_pod_security_restricted(openshift: bool) -> None:
    (cron,) = by_kind(desired_children(inputs(openshift=openshift)), "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    # OpenShift assigns a UID from the namespace's range; elsewhere the image's user.
    assert ("runAsUser" in pod["securityContext"]) is not openshift
    (container,) = pod["containers"]
    context = container["securityContext"]
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["readOnlyRootFilesystem"] is True


def test_operator_image_comes_from_the_environment() -> None:
    assert operator_image({}) == DEFAULT_OPERATOR_IMAGE
    assert operator_image({"BERTH_OPERATOR_IMAGE": "r.test/b:2"}) == "r.test/b:2"


def test_namespaced_children_are_owned_and_cluster_scoped_ones_labelled() -> None:
    for child in desired_children(inputs()):
        (owner,) = child["metadata"]["ownerReferences"]
        assert owner["uid"] == "1111"
        assert child["metadata"]["namespace"] == "team"
    for child in unowned_children(inputs()):
        assert "ownerReferences" not in child["metadata"]
        labels = child["metadata"]["labels"]
        assert labels[LABEL_INSTANCE] == "nightly"
        assert labels[LABEL_SCHEDULE_NAMESPACE] == "team"


def _verbs(rules: list[dict[str, Any]], resource: str) -> set[str]:
    return {v for r in rules if resource in r["resources"] for v in r["verbs"]}


def test_cluster_role_only_reads_pods_workloads_and_tag_policies() -> None:
    cluster_role, binding = unowned_children(inputs())
    assert cluster_role["kind"] == "ClusterRole"
    rules = cluster_role["rules"]
    for resource in (
        "pods",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "jobs",
        "cronjobs",
        "tagpolicies",
    ):
        assert _verbs(rules, resource) == {"get", "list"}, resource
    assert {r for rule in rules for r in rule["resources"]} == {
        "pods",
        "deployments",
        "replicasets",
        "statefulsets",
        "daemonsets",
        "jobs",
        "cronjobs",
        "tagpolicies",
    }
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "nightly-prune", "namespace": "team"}
    ]


def test_same_namespace_role_reads_named_secrets_and_may_garbage_collect() -> None:
    registry = {**sample("Registry"), "storage": {"pvc": {"size": "1Gi"}}}
    (role,) = by_kind(desired_children(inputs(registry=registry)), "Role")
    rules = role["rules"]
    secrets = [r for r in rules if r["resources"] == ["secrets"]]
    assert secrets == [
        {
            "apiGroups": [""],
            "resources": ["secrets"],
            "resourceNames": ["reg-admin"],
            "verbs": ["get"],
        }
    ]
    assert _verbs(rules, "registries") == {"get", "patch"}
    assert _verbs(rules, "jobs") == {"create", "get", "delete"}
    assert _verbs(rules, "pods/log") == {"get"}
    status = next(r for r in rules if r["resources"] == ["pruneschedules/status"])
    assert status["resourceNames"] == ["nightly"]
    # Nothing cluster-scoped beyond the ClusterRole and its binding.
    assert [c["kind"] for c in unowned_children(inputs(registry=registry))] == [
        "ClusterRole",
        "ClusterRoleBinding",
    ]


def test_no_secret_rule_at_all_when_there_is_no_secret_to_read() -> None:
    """An empty resourceNames grants every Secret; the rule must be left out."""
    registry = {**sample("Registry"), "auth": {"mode": "None"}}
    for role in by_kind(desired_children(inputs(registry=registry)), "Role"):
        assert not [r for r in role["rules"] if "secrets" in r["resources"]]
    assert registry_secret_names(RegistrySpec.model_validate(registry), "reg") == []


def test_another_namespace_gets_its_own_role_without_gc_rights() -> None:
    registry = {**sample("Registry"), "storage": {"pvc": {"size": "1Gi"}}}
    made = inputs(registry=registry, registry_namespace="infra")
    (own,) = by_kind(desired_children(made), "Role")
    assert _verbs(own["rules"], "registries") == set()  # nothing of the Registry here
    roles = by_kind(unowned_children(made), "Role")
    (there,) = roles
    assert there["metadata"]["namespace"] == "infra"
    assert there["metadata"]["name"] == "berth:prune:team:nightly"
    assert _verbs(there["rules"], "registries") == {"get"}
    assert _verbs(there["rules"], "jobs") == set()
    (binding,) = by_kind(unowned_children(made), "RoleBinding")
    assert binding["metadata"]["namespace"] == "infra"
    assert binding["subjects"][0]["namespace"] == "team"


def _gc_job(registry: dict[str, Any], node: str | None = "node-1") -> dict[str, Any]:
    return gc_job(
        REGISTRY,
        RegistrySpec.model_validate(registry),
        job_name="reg-gc-abc",
        node_name=node,
        openshift=False,
        active_deadline=3600,
    )


def test_gc_job_mounts_the_registry_config_and_volume_on_its_node() -> None:
    registry = {**sample("Registry"), "storage": {"pvc": {"size": "1Gi"}}}
    job = _gc_job(registry)
    assert job["metadata"]["ownerReferences"][0]["uid"] == "2222"
    assert job["spec"]["backoffLimit"] == 0
    assert job["spec"]["activeDeadlineSeconds"] == 3600
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["command"] == ["registry", "garbage-collect", "/etc/berth/registry/config.yml"]
    assert container["image"] == RegistrySpec.model_validate(registry).image
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "reg-config"
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "reg-data"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts == {"config": "/etc/berth/registry", "data": "/var/lib/registry", "tmp": "/tmp"}
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert terms["nodeSelectorTerms"][0]["matchFields"] == [
        {"key": "metadata.name", "operator": "In", "values": ["node-1"]}
    ]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # no REGISTRY_* from a Service named registry


def test_gc_job_on_an_existing_claim_and_on_s3() -> None:
    claim = {
        **sample("Registry"),
        "storage": {"pvc": {"existingClaim": "data", "accessModes": ["ReadWriteMany"]}},
    }
    pod = _gc_job(claim, node=None)["spec"]["template"]["spec"]
    assert "affinity" not in pod
    assert {v["name"]: v for v in pod["volumes"]}["data"]["persistentVolumeClaim"] == {
        "claimName": "data"
    }
    s3 = {
        **sample("Registry"),
        "replicas": 2,
        "storage": {"s3": {"bucket": "images", "region": "eu", "secretRef": {"name": "s3"}}},
    }
    pod = _gc_job(s3, node=None)["spec"]["template"]["spec"]
    assert "data" not in {v["name"] for v in pod["volumes"]}
    env = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in pod["containers"][0]["env"]}
    assert env["REGISTRY_STORAGE_S3_ACCESSKEY"] == {"name": "s3", "key": "accessKey"}


def test_gc_job_refuses_storage_it_cannot_reach() -> None:
    with pytest.raises(AssertionError):
        _gc_job(sample("Registry"))  # emptyDir
