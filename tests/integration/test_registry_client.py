"""The OCI distribution client against a real registry (Debian's docker-registry 2.8).

Faults (5xx, 429, dropped connections, slow answers, tampered bodies) come from a proxy
in front of the real registry; everything else is the registry's own behaviour.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import json
import time
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import aiohttp
import pytest

from berth.prune.retention import Action, RetentionRules, plan
from berth.registry import (
    DigestCache,
    DigestMismatchError,
    RegistryClient,
    RegistryError,
    inventory,
)
from berth.registry.client import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from testbed.faultproxy import FaultProxy
from testbed.images import Blob, Image, Index, Pusher, random_image, random_index
from testbed.pki import CertificateAuthority
from testbed.registry import HtpasswdAuth, LocalRegistry
from testbed.tokenserver import TokenServer

pytestmark = pytest.mark.registry

T0 = datetime.datetime(2025, 3, 1, tzinfo=datetime.UTC)


def hours(n: float) -> datetime.datetime:
    return T0 + datetime.timedelta(hours=n)


@pytest.fixture
def small_catalog_registry(tmp_path: Path) -> Iterator[LocalRegistry]:
    with LocalRegistry(tmp_path / "registry", catalog_max_entries=4) as running:
        yield running


@pytest.fixture
async def proxy(registry: LocalRegistry) -> AsyncIterator[FaultProxy]:
    async with FaultProxy(registry.url) as running:
        yield running


async def push(
    url: str,
    items: Iterable[tuple[str, str, Image | Index]],
    *,
    username: str | None = None,
    password: str | None = None,
) -> None:
    async with Pusher(url, username=username, password=password) as pusher:
        await pusher.push_many(items)


def fast_retries(url: str, **options: object) -> RegistryClient:
    return RegistryClient(url, backoff=0.01, max_backoff=0.05, **options)  # type: ignore[arg-type]


async def test_catalog_follows_link_pages_and_respects_maxentries(
    small_catalog_registry: LocalRegistry,
) -> None:
    names = [f"team-{n:02d}/app" for n in range(11)]
    await push(small_catalog_registry.url, [(n, "v1", random_image()) for n in names])

    # The registry refuses pages above catalog.maxentries...
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{small_catalog_registry.url}/v2/_catalog?n=5") as refused,
    ):
        assert refused.status == 400

    async with RegistryClient(small_catalog_registry.url) as client:
        assert await client.catalog(page_size=4) == names
        assert client.stats.requests == 3  # 4 + 4 + 3, following Link twice
    # ...and a client asking for more shrinks its pages until they are accepted.
    async with RegistryClient(small_catalog_registry.url) as client:
        assert await client.catalog(page_size=100) == names


async def test_inventory_reports_the_pushed_digests_children_times_and_sizes(
    registry: LocalRegistry,
) -> None:
    old, new = random_image(created=hours(1)), random_image(created=hours(5), layers=2)
    multi = random_index(("linux/amd64", "linux/arm64", "linux/arm/v7"), created=hours(3))
    await push(
        registry.url,
        [
            ("team/app", "v1", old),
            ("team/app", "v2", new),
            ("team/app", "stable", new),
            ("team/multi", "latest", multi),
            ("other", "x", random_image()),
        ],
    )
    async with RegistryClient(registry.url) as client:
        found = await inventory(client, lambda name: name.startswith("team/"))

    assert sorted(found) == ["team/app", "team/multi"]
    app = found["team/app"]
    assert app.tags == {"stable": new.digest, "v1": old.digest, "v2": new.digest}
    assert set(app.manifests) == {old.digest, new.digest}
    for pushed in (old, new):
        info = app.manifests[pushed.digest]
        assert (info.media_type, info.created, info.size) == (
            OCI_MANIFEST,
            pushed.created,
            pushed.size,
        )

    images = found["team/multi"]
    index_info = images.manifests[multi.digest]
    assert images.tags == {"latest": multi.digest}
    assert index_info.media_type == OCI_INDEX
    assert index_info.children == tuple(child.digest for child in multi.images)
    assert index_info.created == hours(3)
    assert index_info.size == len(multi.manifest) + sum(child.size for child in multi.images)
    for child in multi.images:
        assert images.manifests[child.digest].created == child.created


def docker_flavoured(image: Image) -> Image:
    """The same image with Docker's media types (what `docker push` writes)."""
    config = Blob("application/vnd.docker.container.image.v1+json", image.config.data)
    layers = tuple(
        Blob("application/vnd.docker.image.rootfs.diff.tar.gzip", layer.data)
        for layer in image.layers
    )
    manifest = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor() for layer in layers],
    }
    return dataclasses.replace(
        image,
        config=config,
        layers=layers,
        manifest=json.dumps(manifest, indent=3).encode(),
        media_type=DOCKER_MANIFEST,
    )


async def test_docker_media_types_read_like_oci(registry: LocalRegistry) -> None:
    amd = docker_flavoured(random_image(created=hours(2)))
    arm = docker_flavoured(random_image(platform="linux/arm64", created=hours(3)))
    manifest_list = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": image.digest,
                "size": len(image.manifest),
                "platform": {"os": "linux", "architecture": image.platform.split("/")[1]},
            }
            for image in (amd, arm)
        ],
    }
    both = Index((amd, arm), json.dumps(manifest_list).encode(), media_type=DOCKER_MANIFEST_LIST)
    await push(registry.url, [("app", "amd", amd), ("app", "both", both)])

    # Without the Accept list, distribution 2.8 refuses a Docker v2 manifest fetched by tag.
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{registry.url}/v2/app/manifests/amd") as bare,
    ):
        assert bare.status == 400

    async with RegistryClient(registry.url) as client:
        found = (await inventory(client))["app"]
    assert found.tags == {"amd": amd.digest, "both": both.digest}
    listed = found.manifests[both.digest]
    assert (listed.media_type, listed.children, listed.created) == (
        DOCKER_MANIFEST_LIST,
        (amd.digest, arm.digest),
        hours(3),
    )
    assert found.manifests[amd.digest].created == hours(2)
    assert found.manifests[amd.digest].size == amd.size


async def test_an_index_fetched_by_tag_is_the_index_not_a_platform(
    registry: LocalRegistry,
) -> None:
    multi = random_index()
    await push(registry.url, [("multi", "latest", multi)])
    async with RegistryClient(registry.url) as client:
        manifest = await client.get_manifest("multi", "latest")
        head = await client.head_manifest("multi", "latest")
    assert manifest.digest == head.digest == multi.digest
    assert manifest.is_index
    assert head.media_type == OCI_INDEX
    assert [(c.digest, c.platform) for c in manifest.children] == [
        (image.digest, image.platform) for image in multi.images
    ]


async def test_a_repeated_inventory_costs_one_request_per_tag(registry: LocalRegistry) -> None:
    items: list[tuple[str, str, Image | Index]] = [
        (f"repo{r}", f"t{t}", random_image(layer_size=64)) for r in range(6) for t in range(5)
    ]
    items.append(("repo0", "multi", random_index()))
    await push(registry.url, items)
    cache = DigestCache()

    async with RegistryClient(registry.url, cache=cache) as client:
        cold = await inventory(client)
        cold_requests = client.stats.requests
    # A new client (a later run of the same process) sharing the cache.
    async with RegistryClient(registry.url, cache=cache) as client:
        warm = await inventory(client)
        warm_requests = client.stats.requests

    tags = len(items)
    # Cold: per image a manifest and a config; the index adds itself and two children.
    assert cold_requests == 1 + 6 + 30 * 2 + (1 + 2 * 2)
    assert warm_requests == 1 + 6 + tags
    assert warm == cold


async def test_the_cache_is_bounded(registry: LocalRegistry) -> None:
    await push(registry.url, [("repo", f"t{n}", random_image(layer_size=16)) for n in range(10)])
    cache = DigestCache()
    cache.manifests.capacity = cache.created.capacity = 4
    async with RegistryClient(registry.url, cache=cache) as client:
        found = await inventory(client)
    assert len(found["repo"].tags) == 10
    assert len(cache.manifests) == len(cache.created) == 4


async def test_delete_by_digest_removes_every_tag_of_it(registry: LocalRegistry) -> None:
    shared, other, multi = random_image(), random_image(), random_index()
    await push(
        registry.url,
        [
            ("app", "a", shared),
            ("app", "b", shared),
            ("app", "c", other),
            ("app", "multi", multi),
        ],
    )
    async with RegistryClient(registry.url) as client:
        assert await client.delete_manifest("app", shared.digest) is True
        assert sorted(await client.tags("app")) == ["c", "multi"]
        with pytest.raises(RegistryError) as gone:
            await client.get_manifest("app", "a")
        assert gone.value.status == 404
        assert gone.value.code == "MANIFEST_UNKNOWN"
        assert await client.delete_manifest("app", shared.digest) is False

        # Deleting an index leaves its children.
        assert await client.delete_manifest("app", multi.digest) is True
        child = await client.get_manifest("app", multi.images[0].digest)
        assert child.digest == multi.images[0].digest

        # A repository whose tags are all gone answers "tags": null.
        await client.delete_manifest("app", other.digest)
        assert await client.tags("app") == []
        assert "app" in await client.catalog()  # deleted repositories stay listed
        assert (await inventory(client))["app"].tags == {}


async def test_retries_5xx_429_drops_and_timeouts(
    registry: LocalRegistry, proxy: FaultProxy
) -> None:
    pushed = random_image()
    await push(registry.url, [("app", "v1", pushed)])
    proxy.fail(2, status=503, path_contains="/tags/list")
    proxy.fail(1, status=429, retry_after="0", path_contains="/tags/list")
    proxy.fail(1, status=500, path_contains="/manifests/")
    proxy.fail(1, kind="drop", path_contains="/blobs/")
    proxy.fail(1, kind="delay", delay=1.0, path_contains="/_catalog")
    async with fast_retries(proxy.url, timeout=0.5) as client:
        found = await inventory(client)
    assert found["app"].tags == {"v1": pushed.digest}
    assert not proxy.faults, "every queued fault was met"
    # catalog, tags, manifest, config blob: each answered after its faults.
    assert len(proxy.requests) == 4 + 6
    # aiohttp itself re-sends once on a dropped keep-alive connection; the rest is ours.
    assert client.stats.retries >= 5


async def test_retry_after_is_honoured(registry: LocalRegistry, proxy: FaultProxy) -> None:
    await push(registry.url, [("app", "v1", random_image())])
    proxy.fail(1, status=429, retry_after="1", path_contains="/tags/list")
    async with fast_retries(proxy.url) as client:
        started = time.monotonic()
        assert await client.tags("app") == ["v1"]
        assert time.monotonic() - started >= 1.0


async def test_gives_up_after_the_retry_budget_with_a_readable_error(
    registry: LocalRegistry, proxy: FaultProxy
) -> None:
    proxy.fail(10, status=503, path_contains="/tags/list")
    async with fast_retries(proxy.url, retries=2) as client:
        with pytest.raises(RegistryError) as failed:
            await client.tags("app")
    assert failed.value.status == 503
    assert "tags of app: HTTP 503 UNAVAILABLE: injected fault" in str(failed.value)
    assert len(proxy.requests) == 3


async def test_a_failed_inventory_raises_and_leaves_nothing_running(
    registry: LocalRegistry, proxy: FaultProxy
) -> None:
    await push(
        registry.url, [(f"r{n}", f"t{t}", random_index()) for n in range(3) for t in range(4)]
    )
    proxy.fail(1000, status=500, path_contains="/manifests/sha256:")
    async with fast_retries(proxy.url, retries=1) as client:
        with pytest.raises(RegistryError, match="HTTP 500"):
            await inventory(client)
        in_flight = len(proxy.requests)
        await asyncio.sleep(0.2)
        assert len(proxy.requests) == in_flight, "requests went on after the failure"


async def test_a_tampered_manifest_is_refused(registry: LocalRegistry, proxy: FaultProxy) -> None:
    pushed = random_image()
    await push(registry.url, [("app", "v1", pushed)])
    proxy.fail(1, kind="tamper", path_contains="/manifests/")
    async with fast_retries(proxy.url) as client:
        with pytest.raises(DigestMismatchError, match="hashes to"):
            await client.get_manifest("app", pushed.digest)
        proxy.fail(1, kind="tamper", path_contains="/blobs/")
        with pytest.raises(DigestMismatchError):
            await client.get_blob("app", pushed.config.digest)


async def test_concurrency_is_bounded(registry: LocalRegistry, proxy: FaultProxy) -> None:
    await push(
        registry.url, [(f"r{n}", f"t{t}", random_image()) for n in range(4) for t in range(6)]
    )
    async with RegistryClient(proxy.url, concurrency=3) as client:
        await inventory(client)
    assert 1 < proxy.max_in_flight <= 3


async def test_htpasswd_basic_auth(tmp_path: Path) -> None:
    auth = HtpasswdAuth({"alice": "s3cret"})
    with LocalRegistry(tmp_path / "registry", auth=auth) as registry:
        pushed = random_image()
        await push(registry.url, [("app", "v1", pushed)], username="alice", password="s3cret")
        async with RegistryClient(registry.url, username="alice", password="s3cret") as client:
            found = await inventory(client)
            assert found["app"].tags == {"v1": pushed.digest}
            assert await client.delete_manifest("app", pushed.digest)
        for credentials in ({}, {"username": "alice", "password": "wrong"}):
            async with RegistryClient(registry.url, **credentials) as client:  # type: ignore[arg-type]
                with pytest.raises(RegistryError) as refused:
                    await client.catalog()
                assert refused.value.status == 401


async def test_token_auth_fetches_one_token_per_scope(tmp_path: Path) -> None:
    with (
        TokenServer(users={"bob": "pw"}) as tokens,
        LocalRegistry(tmp_path / "registry", auth=tokens.auth()) as registry,
    ):
        pushed = random_image()
        async with Pusher(registry.url, username="bob", password="pw") as pusher:
            await pusher.push_many([("a/app", "v1", pushed), ("b/app", "v1", random_image())])
        tokens.requests.clear()

        async with RegistryClient(registry.url, username="bob", password="pw") as client:
            first = await inventory(client)
            assert first["a/app"].tags == {"v1": pushed.digest}
            again = await inventory(client)
            assert again == first
            assert await client.delete_manifest("a/app", pushed.digest)
            assert client.stats.token_fetches == 4  # catalog, a/app, b/app, delete

        asked = [(r.user, r.service, r.scopes) for r in tokens.requests]
        assert asked[0] == ("bob", tokens.service, ["registry:catalog:*"])
        assert sorted(scopes[0] for _, _, scopes in asked[1:]) == [
            "repository:a/app:delete",
            "repository:a/app:pull",
            "repository:b/app:pull",
        ]

        async with RegistryClient(registry.url, username="bob", password="nope") as client:
            with pytest.raises(RegistryError, match=r"token from .*: HTTP 401"):
                await client.catalog()


async def test_a_token_without_the_needed_action_is_an_error(tmp_path: Path) -> None:
    def pull_only(user: str | None, kind: str, name: str, actions: list[str]) -> list[str]:
        return [a for a in actions if a in ("pull", "push")]

    with (
        TokenServer(users={"bob": "pw"}, grants=pull_only) as tokens,
        LocalRegistry(tmp_path / "registry", auth=tokens.auth()) as registry,
    ):
        pushed = random_image()
        await push(registry.url, [("app", "v1", pushed)], username="bob", password="pw")
        async with RegistryClient(registry.url, username="bob", password="pw") as client:
            assert (await client.get_manifest("app", "v1")).digest == pushed.digest
            with pytest.raises(RegistryError) as refused:
                await client.delete_manifest("app", pushed.digest)
        assert refused.value.status == 401


async def test_tls_with_a_custom_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority()
    with LocalRegistry(tmp_path / "registry") as registry:
        pushed = random_image()
        await push(registry.url, [("app", "v1", pushed)])
        registry.restart(tls=ca.issue("registry", ip_addresses=("127.0.0.1",), server=True))
        assert registry.url.startswith("https://")

        async with RegistryClient(registry.url, ca_pem=ca.cert_pem) as client:
            assert (await inventory(client))["app"].tags == {"v1": pushed.digest}
        async with RegistryClient(registry.url) as client:
            with pytest.raises(RegistryError, match="TLS"):
                await client.ping()
            assert client.stats.retries == 0  # a certificate problem is not retried


async def test_plan_then_delete_leaves_exactly_the_kept_images(registry: LocalRegistry) -> None:
    """The building blocks together: inventory, plan, delete, inventory again."""
    builds = {f"build-{n}": random_image(created=hours(n)) for n in range(1, 6)}
    old_multi, new_multi = random_index(created=hours(1)), random_index(created=hours(6))
    mid_multi = random_index(created=hours(4))
    await push(
        registry.url,
        [
            *(("app", tag, image) for tag, image in builds.items()),
            ("app", "v1.0", builds["build-1"]),
            ("multi", "old", old_multi),
            ("multi", "mid", mid_multi),
            ("multi", "new", new_multi),
        ],
    )
    rules = RetentionRules(keep_last=2, keep_younger_than=datetime.timedelta(0), keep_tags=("v*",))
    in_use = {("app", builds["build-3"].digest): "Pod shop/web"}
    async with RegistryClient(registry.url) as client:
        before = await inventory(client)
        decided = plan(before, in_use, rules, now=hours(100))
        for repository, digest in decided.deletions:
            assert await client.delete_manifest(repository, digest)
        after = await inventory(client)

    kept_tags = {
        (e.repository, e.tag) for e in decided.entries if e.tag and e.action is Action.KEEP
    }
    assert kept_tags == {
        ("app", "build-1"),  # same digest as v1.0, which keepTags keeps
        ("app", "v1.0"),
        ("app", "build-3"),  # in use
        ("app", "build-4"),  # keepLast
        ("app", "build-5"),
        ("multi", "mid"),  # keepLast
        ("multi", "new"),
    }
    assert {(name, tag) for name, repo in after.items() for tag in repo.tags} == kept_tags
    # The old index's children went with it (deleteUntagged); the new one's are intact.
    async with RegistryClient(registry.url) as client:
        for child in old_multi.images:
            with pytest.raises(RegistryError) as gone:
                await client.get_manifest("multi", child.digest)
            assert gone.value.status == 404
        for child in new_multi.images:
            assert (await client.get_manifest("multi", child.digest)).digest == child.digest
