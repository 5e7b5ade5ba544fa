"""Storage GC of Managed registries, orchestrated against the real control plane with the
operator running: the maintenance annotation, the ReadOnly condition the Registry
reconciler sets, the Job (completed by kwok), and read-write restored whatever happens.

The collector itself cannot run here (kwok Pods run nothing); test_prune_run runs the
same command on a real registry's store.
"""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from berth.actions.prune import run_schedule
from berth.constants import ANNOTATION_MAINTENANCE, LABEL_INSTANCE
from berth.k8s.api import Kube
from berth.prune.gc import GCResult, GCTimeouts, collect_garbage
from testbed.cluster import wait_for
from testbed.registry import LocalRegistry
from testbed.testbin import REPO_ROOT

from .prune_support import (
    build_layout,
    create_object,
    get_object,
    manifest_exists,
    push,
    wait_condition,
)

pytestmark = pytest.mark.usefixtures("operator")

SAMPLE = yaml.safe_load((REPO_ROOT / "manifests/samples/registry.yaml").read_text())
FAST = GCTimeouts(read_only=60, job_deadline=60, job_grace=30, job_gone=30, poll=0.5)


def managed_registry(api_client: client.ApiClient, namespace: str, name: str = "reg") -> None:
    spec = copy.deepcopy(SAMPLE["spec"])
    spec["storage"] = {"pvc": {"size": "1Gi"}}  # ReadWriteOnce by default
    create_object(api_client, namespace, "registries", "Registry", name, spec)
    wait_condition(api_client, namespace, "registries", name, "Ready", "True", timeout=60)


def annotation(api_client: client.ApiClient, namespace: str, name: str) -> str | None:
    registry = get_object(api_client, namespace, "registries", name)
    value = (registry["metadata"].get("annotations") or {}).get(ANNOTATION_MAINTENANCE)
    return str(value) if value is not None else None


def read_only_condition(api_client: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    registry = get_object(api_client, namespace, "registries", name)
    return next((c for c in registry["status"]["conditions"] if c["type"] == "ReadOnly"), {})


def gc(kubeconfig: Path, namespace: str, on_step: Any = None, **timeouts: Any) -> GCResult:
    async def run() -> GCResult:
        kube = Kube.from_environment(str(kubeconfig))
        try:
            return await collect_garbage(
                kube,
                namespace,
                "reg",
                timeouts=GCTimeouts(**{**FAST.__dict__, **timeouts}),
                on_step=on_step,
            )
        finally:
            kube.close()

    return asyncio.run(run())


def test_gc_makes_the_registry_read_only_runs_the_job_and_restores_read_write(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    # The GC Job's Pod must pass Pod Security `restricted`, as the registry's does.
    client.CoreV1Api(api_client).patch_namespace(
        namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}}
    )
    managed_registry(api_client, namespace)
    batch = client.BatchV1Api(api_client)
    seen: dict[str, Any] = {}
    jobs_at_creation: list[dict[str, Any]] = []

    async def observe(step: str) -> None:
        # Read through the test's own client, at the moment each step is reported.
        seen[step] = {
            "annotation": annotation(api_client, namespace, "reg"),
            "read_only": read_only_condition(api_client, namespace, "reg"),
        }
        if step == "job-created":
            jobs = batch.list_namespaced_job(namespace).items
            jobs_at_creation.extend(api_client.sanitize_for_serialization(job) for job in jobs)

    result = gc(kubeconfig, namespace, observe)

    assert result.errors == [], result.errors
    assert result.ran
    assert result.restored
    assert list(seen) == ["annotated", "read-only", "job-created", "job-finished", "restored"]
    assert seen["annotated"]["annotation"] == "read-only"
    assert seen["read-only"]["read_only"]["status"] == "True"
    assert seen["read-only"]["read_only"]["reason"] == "Maintenance"
    # The Job was created only once the registry was read-only, and still was.
    assert seen["job-created"]["read_only"]["status"] == "True"
    assert seen["job-created"]["annotation"] == "read-only"
    assert seen["restored"]["annotation"] is None

    (job,) = jobs_at_creation
    assert job["metadata"]["name"] == result.job_name
    assert job["metadata"]["ownerReferences"][0]["kind"] == "Registry"
    pod_spec = job["spec"]["template"]["spec"]
    (container,) = pod_spec["containers"]
    assert container["command"] == ["registry", "garbage-collect", "/etc/berth/registry/config.yml"]
    assert "--delete-untagged" not in container["command"]
    deployment = client.AppsV1Api(api_client).read_namespaced_deployment("reg", namespace)
    assert container["image"] == deployment.spec.template.spec.containers[0].image
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["config"] == "/etc/berth/registry"
    assert mounts["data"] == "/var/lib/registry"
    volumes = {v["name"]: v for v in pod_spec["volumes"]}
    assert volumes["config"]["configMap"]["name"] == "reg-config"
    assert volumes["data"]["persistentVolumeClaim"]["claimName"] == "reg-data"
    registry_pods = client.CoreV1Api(api_client).list_namespaced_pod(
        namespace, label_selector=f"{LABEL_INSTANCE}=reg,app.kubernetes.io/component=registry"
    )
    nodes = {pod.spec.node_name for pod in registry_pods.items if pod.spec.node_name}
    term = pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (field,) = term["nodeSelectorTerms"][0]["matchFields"]
    assert field["key"] == "metadata.name"
    assert field["values"][0] in nodes

    finished = batch.read_namespaced_job(str(result.job_name), namespace)
    assert any(c.type == "Complete" and c.status == "True" for c in finished.status.conditions)
    assert annotation(api_client, namespace, "reg") is None
    wait_condition(
        api_client, namespace, "registries", "reg", "ReadOnly", "False", reason="ReadWrite"
    )


def test_a_failing_gc_job_still_restores_read_write(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    managed_registry(api_client, namespace)
    core = client.CoreV1Api(api_client)

    async def block_new_pods(step: str) -> None:
        if step != "read-only":
            return
        # A quota the running registry Pod already fills: the GC Job gets no Pod and
        # fails at its deadline, as a Job whose collector crashed would.
        core.create_namespaced_resource_quota(
            namespace, {"metadata": {"name": "no-more-pods"}, "spec": {"hard": {"pods": "1"}}}
        )
        wait_for(
            "the quota to be counted",
            lambda: bool(
                core.read_namespaced_resource_quota("no-more-pods", namespace).status.used or {}
            ),
            timeout=30,
        )

    result = gc(kubeconfig, namespace, block_new_pods, job_deadline=5)

    assert result.ran
    assert any("failed: DeadlineExceeded" in error for error in result.errors), result.errors
    assert result.restored
    assert annotation(api_client, namespace, "reg") is None
    wait_condition(
        api_client, namespace, "registries", "reg", "ReadOnly", "False", reason="ReadWrite"
    )


def test_gc_is_skipped_for_empty_dir_storage(
    api_client: client.ApiClient, namespace: str, kubeconfig: Path
) -> None:
    create_object(api_client, namespace, "registries", "Registry", "reg", SAMPLE["spec"])
    wait_condition(api_client, namespace, "registries", "reg", "Ready", "True", timeout=60)

    result = gc(kubeconfig, namespace)

    assert not result.ran
    assert result.errors == []
    assert any("emptyDir" in note for note in result.notes)
    assert annotation(api_client, namespace, "reg") is None
    assert client.BatchV1Api(api_client).list_namespaced_job(namespace).items == []


def service_account_kubeconfig(
    api_client: client.ApiClient, kubeconfig: Path, namespace: str, name: str, directory: Path
) -> Path:
    """A kubeconfig that authenticates as the ServiceAccount (a TokenRequest token)."""
    token = (
        client.CoreV1Api(api_client)
        .create_namespaced_service_account_token(
            name, namespace, {"spec": {"expirationSeconds": 600}}
        )
        .status.token
    )
    document = yaml.safe_load(kubeconfig.read_text())
    for user in document["users"]:
        user["user"] = {"token": token}
    path = directory / f"{name}.kubeconfig"
    path.write_text(yaml.safe_dump(document))
    return path


def test_a_prune_of_a_managed_registry_deletes_then_collects(
    api_client: client.ApiClient,
    namespace: str,
    kubeconfig: Path,
    registry: LocalRegistry,
    tmp_path: Path,
) -> None:
    """A Managed Registry whose storage the test cannot reach: --registry-url points the
    run at the fixture instead, and the GC Job runs (in kwok) on the Registry's volume.
    The run uses the prune ServiceAccount's own token: the RBAC the operator made for it
    must be enough for everything, storage GC included."""
    managed_registry(api_client, namespace)
    _layout, pushes = build_layout(4, 4)
    push(registry.url, pushes)
    create_object(
        api_client,
        namespace,
        "pruneschedules",
        "PruneSchedule",
        "nightly",
        {"registryRef": {"name": "reg"}, "retention": {"keepLast": 1, "keepYoungerThan": "1h"}},
    )
    wait_condition(api_client, namespace, "pruneschedules", "nightly", "Ready", "True")
    as_prune_job = service_account_kubeconfig(
        api_client, kubeconfig, namespace, "nightly-prune", tmp_path
    )

    async def run() -> Any:
        kube = Kube.from_environment(str(as_prune_job))
        try:
            return await run_schedule(
                kube, namespace, "nightly", registry_url=registry.url, gc_timeouts=FAST
            )
        finally:
            kube.close()

    outcome = asyncio.run(run())

    assert outcome.succeeded, outcome.condition
    report = outcome.report
    assert report.deleted
    for repository, digest in report.deleted:
        assert not manifest_exists(registry.url, repository, digest)
    assert report.gc is not None
    assert report.gc.ran
    assert report.gc.restored
    # kwok Pods write no log: the bytes are the estimate, and status says so.
    assert report.bytes_basis == "estimated"
    assert report.bytes_reclaimed > 0
    assert "estimated" in outcome.condition.message
    assert annotation(api_client, namespace, "reg") is None
    status = get_object(api_client, namespace, "pruneschedules", "nightly")["status"]
    assert status["lastRun"]["bytesReclaimed"] == report.bytes_reclaimed
    job = client.BatchV1Api(api_client).read_namespaced_job(str(report.gc.job_name), namespace)
    assert any(c.type == "Complete" and c.status == "True" for c in job.status.conditions)
