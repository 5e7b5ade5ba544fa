"""`berth prune` against the real control plane and a real registry.

The registry fixture (Debian's docker-registry on loopback) holds 20 repositories of
single- and multi-platform images; an Unmanaged Registry points at it. Pods, a
Deployment, a CronJob and a TagPolicy in the cluster use some of the images. The plan
is compared with an expectation computed plainly in prune_support, and what must stay
is pulled afterwards, completely.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from kubernetes import client, config

from berth.actions.prune import run_schedule
from berth.cli import main
from berth.k8s.api import Kube
from berth.prune.gc import parse_swept_blobs
from berth.prune.run import reclaimed_bytes
from berth.resources.pruneschedule import garbage_collect_command
from testbed.cluster import KWOK_NAMESPACE_ANNOTATIONS, free_port
from testbed.images import Image, Index, Pusher, random_image
from testbed.registry import REGISTRY_BINARY, LocalRegistry

from .prune_support import (
    NOW,
    Layout,
    build_layout,
    create_object,
    expected_deletions,
    get_object,
    manifest_exists,
    pull_completely,
    push,
    skopeo_pull,
    tags_in_registry,
)

pytestmark = pytest.mark.usefixtures("berth_crds")

RETENTION = {"keepLast": 2, "keepYoungerThan": "1h", "keepTags": ["v*"]}


class World:
    """A populated registry behind an Unmanaged Registry, and what the cluster uses."""

    def __init__(self, registry: LocalRegistry, layout: Layout, artifacts: list[Any]) -> None:
        self.registry = registry
        self.layout = layout
        self.artifacts = artifacts
        self.in_use: set[tuple[str, str]] = set()

    def expected(self) -> set[tuple[str, str]]:
        return expected_deletions(
            self.layout,
            self.in_use,
            keep_last=2,
            keep_younger_than=datetime.timedelta(hours=1),
            keep_tag_prefix="v",
            now=datetime.datetime.now(datetime.UTC),
        )


def _container(image: str) -> dict[str, Any]:
    return {"name": "main", "image": image}


def _template(image: str, restart: str = "Always") -> dict[str, Any]:
    return {
        "metadata": {"labels": {"app": "x"}},
        "spec": {"restartPolicy": restart, "containers": [_container(image)]},
    }


def use_images(api_client: client.ApiClient, namespace: str, world: World) -> None:
    """Workloads and a TagPolicy that reference some of the pushed images."""
    host, layout = world.registry.host, world.layout
    index_of_app08 = layout.digest("team/app-08", "build-1")
    child_of_app08 = layout.children("team/app-08", index_of_app08)[0]
    uses = {
        "pod-tag": ("team/app-01", "build-0", f"{host}/team/app-01:build-0"),
        "pod-index": (
            "team/app-04",
            layout.digest("team/app-04", "build-0"),
            f"{host}/team/app-04@{layout.digest('team/app-04', 'build-0')}",
        ),
        # One platform of an index, by digest: the child stays, its index may go.
        "pod-child": ("team/app-08", child_of_app08, f"{host}/team/app-08@{child_of_app08}"),
        # The alias shares build-0's digest: that digest stays, with both tags.
        "pod-alias": ("team/app-05", "alias", f"{host}/team/app-05:alias"),
    }
    core = client.CoreV1Api(api_client)
    for name, (repository, reference, image) in uses.items():
        core.create_namespaced_pod(
            namespace, {"metadata": {"name": name}, "spec": _template(image)["spec"]}
        )
        world.in_use.add((repository, reference))
    digest = layout.digest("team/app-02", "build-1")
    client.AppsV1Api(api_client).create_namespaced_deployment(
        namespace,
        {
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 0,
                "selector": {"matchLabels": {"app": "x"}},
                "template": _template(f"{host}/team/app-02@{digest}"),
            },
        },
    )
    world.in_use.add(("team/app-02", digest))
    client.BatchV1Api(api_client).create_namespaced_cron_job(
        namespace,
        {
            "metadata": {"name": "report"},
            "spec": {
                "schedule": "0 0 1 1 *",
                "suspend": True,
                "jobTemplate": {
                    "spec": {"template": _template(f"{host}/team/app-03:build-2", "Never")}
                },
            },
        },
    )
    world.in_use.add(("team/app-03", "build-2"))
    # Another registry's image of the same name is not ours: it protects nothing.
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "elsewhere"},
            "spec": _template("127.0.0.2:1/team/app-07:build-0")["spec"],
        },
    )
    # A TagPolicy's current image stays, though nothing runs it. The status is written
    # here as the operator would (it may or may not run during this module).
    create_object(
        api_client,
        namespace,
        "tagpolicies",
        "TagPolicy",
        "app-06",
        {
            "registryRef": {"name": "local"},
            "repository": "team/app-06",
            "tags": [{"name": "build-0"}],
        },
    )
    current = layout.digest("team/app-06", "build-0")
    client.CustomObjectsApi(api_client).patch_namespaced_custom_object_status(
        "berth.dev",
        "v1alpha1",
        namespace,
        "tagpolicies",
        "app-06",
        {
            "status": {
                "tags": [
                    {
                        "tag": "build-0",
                        "items": [{"digest": current, "created": "2024-01-01T00:00:00Z"}],
                    }
                ]
            }
        },
    )
    world.in_use.add(("team/app-06", current))


def create_schedule(
    api_client: client.ApiClient,
    namespace: str,
    registry: LocalRegistry,
    *,
    extra: dict[str, Any] | None = None,
) -> None:
    create_object(
        api_client,
        namespace,
        "registries",
        "Registry",
        "local",
        {"managementState": "Unmanaged", "external": {"url": registry.url}},
    )
    create_object(
        api_client,
        namespace,
        "pruneschedules",
        "PruneSchedule",
        "nightly",
        {"registryRef": {"name": "local"}, "retention": RETENTION, **(extra or {})},
    )


@pytest.fixture
def world(registry: LocalRegistry) -> World:
    layout, pushes = build_layout(20, 5)
    push(registry.url, pushes)
    return World(registry, layout, [artifact for _, _, artifact in pushes])


def run_cli(kubeconfig: Path, *args: str) -> Any:
    result = CliRunner().invoke(main, ["prune", *args, "--kubeconfig", str(kubeconfig)])
    return result


def test_prune_deletes_exactly_the_plan_and_keeps_what_is_used(
    api_client: client.ApiClient,
    namespace: str,
    world: World,
    kubeconfig: Path,
    tmp_path: Path,
) -> None:
    use_images(api_client, namespace, world)
    create_schedule(api_client, namespace, world.registry)
    expected = world.expected()
    assert len(expected) > 30, "the layout must leave plenty to delete"

    result = run_cli(kubeconfig, "--schedule", f"{namespace}/nightly", "--output", "json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)  # nothing but JSON on stdout
    deleted = {(repository, digest) for repository, digest in report["deleted"]}
    assert deleted == expected
    url = world.registry.url
    for image in world.layout.images:
        gone = (image.repository, image.digest) in expected
        assert manifest_exists(url, image.repository, image.digest) is not gone, image
        if not gone:
            assert asyncio.run(pull_completely(url, image.repository, image.digest)) > 0
    for number, (repository, reference) in enumerate(sorted(world.in_use)):
        skopeo_pull(world.registry.host, repository, reference, tmp_path / f"pull-{number}")

    status = get_object(api_client, namespace, "pruneschedules", "nightly")["status"]
    last_run = status["lastRun"]
    deleted_tags = sum(1 for i in world.layout.images if (i.repository, i.digest) in expected)
    assert last_run["manifestsDeleted"] == len(expected)
    assert last_run["tagsDeleted"] == deleted_tags
    assert last_run["tagsScanned"] == len(world.layout.images)
    assert last_run["repositories"] == 20
    assert last_run["dryRun"] is False
    assert last_run["errors"] == []
    # Tags a user names, by tag or by digest (build-0 of app-05 only shares the alias's
    # digest, and the child of app-08 is untagged: neither counts).
    used_tags = sum(
        1
        for i in world.layout.images
        if {(i.repository, i.tag), (i.repository, i.digest)} & world.in_use
    )
    assert last_run["keptInUse"] == used_tags
    assert last_run["keptInUse"] + last_run["keptByRule"] + deleted_tags == len(world.layout.images)
    planned = {(e["repository"], e["digest"]) for e in status["plan"] if e["action"] == "Delete"}
    assert planned == expected
    assert status["lastSuccessfulTime"]
    assert status["lastScheduleTime"]
    finished = next(c for c in status["conditions"] if c["type"] == "LastRunSucceeded")
    assert finished["status"] == "True"
    assert finished["reason"] == "Succeeded"
    assert "not Managed" in finished["message"]  # no storage GC for Unmanaged registries
    in_use_entry = next(
        e for e in status["plan"] if (e["repository"], e.get("tag")) == ("team/app-01", "build-0")
    )
    assert in_use_entry["action"] == "Keep"
    assert f"Pod {namespace}/pod-tag" in in_use_entry["reason"]


def test_dry_run_deletes_nothing_and_writes_the_plan(
    api_client: client.ApiClient, namespace: str, world: World, kubeconfig: Path
) -> None:
    use_images(api_client, namespace, world)
    create_schedule(api_client, namespace, world.registry)
    before = tags_in_registry(world.registry.url, world.layout.repositories())

    result = run_cli(kubeconfig, "--schedule", f"{namespace}/nightly", "--dry-run")

    assert result.exit_code == 0, result.output
    assert "Prune plan" in result.stdout
    assert "DryRun" in result.stdout
    assert tags_in_registry(world.registry.url, world.layout.repositories()) == before
    for image in world.layout.images:
        assert manifest_exists(world.registry.url, image.repository, image.digest)
    status = get_object(api_client, namespace, "pruneschedules", "nightly")["status"]
    planned = {(e["repository"], e["digest"]) for e in status["plan"] if e["action"] == "Delete"}
    assert planned == world.expected()
    assert status["lastRun"]["dryRun"] is True
    assert status["lastRun"]["manifestsDeleted"] == len(planned)
    finished = next(c for c in status["conditions"] if c["type"] == "LastRunSucceeded")
    assert finished["reason"] == "DryRun"


def _unreachable_api_client(kubeconfig: Path, tmp_path: Path) -> client.ApiClient:
    """An API client whose server is a closed loopback port."""
    document = yaml.safe_load(kubeconfig.read_text())
    for cluster in document["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{free_port()}"
    broken = tmp_path / "unreachable.kubeconfig"
    broken.write_text(yaml.safe_dump(document))
    return config.new_client_from_config(str(broken))


def test_unreachable_api_server_during_the_scan_deletes_nothing(
    api_client: client.ApiClient,
    namespace: str,
    world: World,
    kubeconfig: Path,
    tmp_path: Path,
) -> None:
    use_images(api_client, namespace, world)
    create_schedule(api_client, namespace, world.registry)
    before = tags_in_registry(world.registry.url, world.layout.repositories())
    unreachable = _unreachable_api_client(kubeconfig, tmp_path)

    async def run() -> Any:
        kube = Kube.from_environment(str(kubeconfig))
        try:
            return await run_schedule(kube, namespace, "nightly", scan_client=unreachable)
        finally:
            kube.close()

    try:
        outcome = asyncio.run(run())
    finally:
        unreachable.close()

    assert not outcome.succeeded
    assert outcome.condition.reason == "InUseScanFailed"
    assert outcome.report is not None
    assert outcome.report.deleted == []
    assert tags_in_registry(world.registry.url, world.layout.repositories()) == before
    for image in world.layout.images:
        assert manifest_exists(world.registry.url, image.repository, image.digest)
    status = get_object(api_client, namespace, "pruneschedules", "nightly")["status"]
    finished = next(c for c in status["conditions"] if c["type"] == "LastRunSucceeded")
    assert finished["status"] == "False"
    assert finished["reason"] == "InUseScanFailed"
    assert "nothing was deleted" in finished["message"]
    assert "listing Pods failed" in finished["message"]
    assert status["lastRun"]["manifestsDeleted"] == 0
    assert "lastSuccessfulTime" not in status
    events = client.CoreV1Api(api_client).list_namespaced_event(
        namespace, field_selector="involvedObject.name=nightly"
    )
    assert any(e.reason == "InUseScanFailed" and e.type == "Warning" for e in events.items)


def _blob_sizes(artifacts: list[Image | Index]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for artifact in artifacts:
        images = artifact.images if isinstance(artifact, Index) else (artifact,)
        if isinstance(artifact, Index):
            sizes[artifact.digest] = len(artifact.manifest)
        for image in images:
            sizes[image.digest] = len(image.manifest)
            for blob in image.blobs:
                sizes[blob.digest] = len(blob.data)
    return sizes


def test_garbage_collection_after_a_prune_frees_storage_and_kept_images_pull(
    api_client: client.ApiClient,
    namespace: str,
    world: World,
    kubeconfig: Path,
    tmp_path: Path,
) -> None:
    """The GC Job's command, on the fixture's own config, while the fixture is read-only."""
    use_images(api_client, namespace, world)
    create_schedule(api_client, namespace, world.registry)
    result = run_cli(kubeconfig, "--schedule", f"{namespace}/nightly", "--output", "json")
    assert result.exit_code == 0, result.output
    expected = world.expected()
    registry = world.registry
    stored_before = registry.store_bytes()

    registry.restart(read_only=True)
    refused = asyncio.run(_try_push(registry.url))
    assert refused, "a push must fail while the registry is read-only"
    output = subprocess.run(
        garbage_collect_command(REGISTRY_BINARY, str(registry.config_path)),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    registry.restart(read_only=False)

    stored_after = registry.store_bytes()
    assert stored_after < stored_before
    swept = parse_swept_blobs(output)
    reclaimed, unknown = reclaimed_bytes(swept, _blob_sizes(world.artifacts))
    assert unknown == 0
    assert reclaimed == stored_before - stored_after  # every swept file, to the byte
    deleted_digests = {digest for _, digest in expected}
    assert deleted_digests <= swept  # each deleted manifest's own blob went too
    for image in world.layout.images:
        if (image.repository, image.digest) not in expected:
            assert asyncio.run(pull_completely(registry.url, image.repository, image.digest)) > 0
    for number, (repository, reference) in enumerate(sorted(world.in_use)):
        skopeo_pull(registry.host, repository, reference, tmp_path / f"after-gc-{number}")


async def _try_push(url: str) -> bool:
    """True when the registry refuses a push."""
    async with Pusher(url) as pusher:
        try:
            await pusher.push("team/late", "x", random_image(layer_size=64, created=NOW))
        except Exception:
            return True
    return False


def test_a_schedule_in_another_namespace_is_refused_and_deletes_nothing(
    api_client: client.ApiClient, namespace: str, registry: LocalRegistry, kubeconfig: Path
) -> None:
    tenant = f"{namespace}-tenant"
    core = client.CoreV1Api(api_client)
    core.create_namespace(
        {
            "metadata": {
                "name": tenant,
                "labels": {"berth.dev/test": "true"},
                "annotations": KWOK_NAMESPACE_ANNOTATIONS,
            }
        }
    )
    try:
        old = NOW - datetime.timedelta(days=30)
        pushes: list[tuple[str, str, Image | Index]] = []
        for repository in (f"{tenant}/app", "other/app"):
            for number in range(3):
                image = random_image(created=old, layer_size=64)
                pushes.append((repository, f"old-{number}", image))
        push(registry.url, pushes)
        create_object(
            api_client,
            namespace,
            "registries",
            "Registry",
            "local",
            {"managementState": "Unmanaged", "external": {"url": registry.url}},
        )
        create_object(
            api_client,
            tenant,
            "pruneschedules",
            "PruneSchedule",
            "mine",
            {
                "registryRef": {"name": "local", "namespace": namespace},
                "retention": {"keepLast": 0, "keepYoungerThan": "1h"},
            },
        )

        result = run_cli(kubeconfig, "--schedule", f"{tenant}/mine", "--output", "json")

        assert result.exit_code != 0
        assert "must be in its Registry's namespace" in result.output
        for repository, _, artifact in pushes:  # nothing was touched
            assert manifest_exists(registry.url, repository, artifact.digest)
    finally:
        core.delete_namespace(tenant)
