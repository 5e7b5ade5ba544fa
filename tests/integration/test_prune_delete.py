"""The delete phase against a real registry, with faults injected by a proxy and a tag
moved while the run is under way: nothing a tag or a kept index still reaches goes."""

from __future__ import annotations

import datetime
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from berth.k8s.api import Kube
from berth.prune.retention import RetentionRules
from berth.prune.run import PHASE_DELETE, PruneRequest, RunReport, execute
from berth.registry.access import RegistryAccess
from testbed.faultproxy import FaultProxy
from testbed.images import Pusher, random_image, random_index
from testbed.registry import LocalRegistry

NOW = datetime.datetime.now(datetime.UTC)
OLD = NOW - datetime.timedelta(days=30)
RULES = RetentionRules(keep_last=1, keep_younger_than=datetime.timedelta(hours=1))


@pytest.fixture
async def kube(kubeconfig: Path) -> AsyncIterator[Kube]:
    """Only for the run's signature: these runs neither scan nor collect garbage."""
    made = Kube.from_environment(str(kubeconfig))
    yield made
    made.close()


def request(url: str) -> PruneRequest:
    return PruneRequest(
        access=RegistryAccess(url, hosts=(url.removeprefix("http://"),)),
        rules=RULES,
        registry_namespace="unused",
        registry_name="unused",
        protect_in_use=False,
    )


async def test_a_failed_index_delete_keeps_the_children_it_names(
    registry: LocalRegistry, kube: Kube
) -> None:
    old_index = random_index(created=OLD, seed=1, layer_size=64)
    old_image = random_image(created=OLD, seed=2, layer_size=64)
    async with Pusher(registry.url) as pusher:
        await pusher.push("team/multi", "old", old_index)
        await pusher.push("team/multi", "new", random_index(created=NOW, seed=3, layer_size=64))
        await pusher.push("team/single", "old", old_image)
        await pusher.push("team/single", "new", random_image(created=NOW, seed=4, layer_size=64))

    async with FaultProxy(registry.url) as proxy:
        # Every attempt (first try and retries) to delete the old index fails.
        proxy.fail(10, status=500, path_contains=f"/manifests/{old_index.digest}")
        report = await execute(request(proxy.url), kube=kube)

    deleted = set(report.deleted)
    assert ("team/single", old_image.digest) in deleted  # the rest went ahead
    assert ("team/multi", old_index.digest) not in deleted
    for child in old_index.images:
        assert ("team/multi", child.digest) not in deleted
        assert await _exists(registry.url, "team/multi", child.digest)
    assert any(old_index.digest in error for error in report.errors)
    assert sum("kept, deleting an index that names it failed" in e for e in report.errors) == 2
    assert not report.succeeded


class _MoveTagWhenDeleting:
    """Progress that, as deletes are about to start, tags a doomed image anew: as a
    person pushing `hotfix` in the middle of a prune would."""

    def __init__(self, url: str, repository: str, manifest: bytes, media_type: str) -> None:
        self.url, self.repository = url, repository
        self.manifest, self.media_type = manifest, media_type
        self.moved = False

    def start(self, phase: str, total: int | None) -> None:
        if phase == PHASE_DELETE:
            put = urllib.request.Request(
                f"{self.url}/v2/{self.repository}/manifests/hotfix",
                data=self.manifest,
                method="PUT",
                headers={"Content-Type": self.media_type},
            )
            with urllib.request.urlopen(put, timeout=10) as response:
                assert response.status == 201
            self.moved = True

    def advance(self, amount: int = 1) -> None:
        pass


async def test_a_tag_moved_onto_a_doomed_image_during_the_run_keeps_it(
    registry: LocalRegistry, kube: Kube
) -> None:
    doomed_index = random_index(created=OLD, seed=5, layer_size=64)
    doomed_image = random_image(created=OLD, seed=6, layer_size=64)
    async with Pusher(registry.url) as pusher:
        await pusher.push("team/app", "old-index", doomed_index)
        await pusher.push("team/app", "old-image", doomed_image)
        await pusher.push("team/app", "new", random_image(created=NOW, seed=7, layer_size=64))
    mover = _MoveTagWhenDeleting(
        registry.url, "team/app", doomed_index.manifest, doomed_index.media_type
    )

    report: RunReport = await execute(request(registry.url), kube=kube, progress=mover)

    assert mover.moved
    assert report.deleted == [("team/app", doomed_image.digest)]
    rescued = {("team/app", doomed_index.digest)}
    rescued |= {("team/app", child.digest) for child in doomed_index.images}
    assert set(report.kept_after_recheck) == rescued
    for _, digest in rescued:
        assert await _exists(registry.url, "team/app", digest)
    kept = [e for e in report.entries() if e.digest == doomed_index.digest]
    assert kept
    assert {e.action.value for e in kept} == {"Keep"}


async def _exists(url: str, repository: str, digest: str) -> bool:
    from berth.registry.client import RegistryClient, RegistryError

    async with RegistryClient(url) as client:
        try:
            await client.head_manifest(repository, digest)
        except RegistryError:
            return False
        return True
