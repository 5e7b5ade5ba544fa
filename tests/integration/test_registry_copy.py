"""Copying images between registries and repositories (berth.registry.copy), against real
registries (Debian's docker-registry 2.8): "upstream" plays the external registry an
image is imported from, `registry` ours.

Every copy is checked by reading it back from the target with RegistryClient (which
verifies each manifest and blob against its digest). What the registry did is read from
its own access log, e.g.
`127.0.0.1 - - [...] "POST /v2/prod/app/blobs/uploads/?mount=sha256:..&from=team/app HTTP/1.1"
201 0 "" "Python/3.11 aiohttp/3.14.5"` (one line).
Faults come from testbed.faultproxy in front of a real registry; a registry that does not
mount is a real one behind a proxy that drops `mount` and `from` (MountlessProxy).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import time
import tracemalloc
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from berth.registry import DigestMismatchError, RegistryClient, RegistryError
from berth.registry.client import DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from berth.registry.copy import CopyResult, copy_image
from testbed.cluster import free_port
from testbed.faultproxy import FaultProxy
from testbed.images import Blob, Image, Index, Pusher, random_image, random_index
from testbed.registry import HtpasswdAuth, LocalRegistry
from testbed.tokenserver import TokenServer

pytestmark = pytest.mark.registry

FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
NONDISTRIBUTABLE_LAYER = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"


@dataclasses.dataclass
class TunedRegistry(LocalRegistry):
    """A LocalRegistry with extra configuration merged into its config.yml."""

    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def config(self) -> dict[str, object]:
        config = super().config()
        for section, values in self.extra.items():
            current = config.setdefault(section, {})
            assert isinstance(current, dict)
            current.update(values)
        return config


# distribution 2.8 refuses manifests with foreign layer URLs unless they are allowed.
ALLOW_URLS = {"validation": {"manifests": {"urls": {"allow": ["^https://"]}}}}


@pytest.fixture
def upstream(tmp_path: Path) -> Iterator[LocalRegistry]:
    with LocalRegistry(tmp_path / "upstream") as running:
        yield running


class MountlessProxy:
    """A registry that does not mount blobs: a pass-through proxy in front of a real one
    that drops `mount` and `from` from the query, so the registry behind starts an
    ordinary upload (202) instead. The upload's Location names the real registry, so the
    bytes then go there directly."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.mounts_refused = 0
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def __aenter__(self) -> MountlessProxy:
        self._session = aiohttp.ClientSession(auto_decompress=False)
        app = web.Application(client_max_size=1024**3)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()

    async def _forward(self, request: web.Request) -> web.Response:
        assert self._session is not None
        query = [(k, v) for k, v in request.query.items() if k not in ("mount", "from")]
        if len(query) != len(request.query):
            self.mounts_refused += 1
        skipped = {"host", "content-length", "transfer-encoding"}
        headers = {k: v for k, v in request.headers.items() if k.lower() not in skipped}
        async with self._session.request(
            request.method,
            self.upstream + request.path,
            params=query,
            headers=headers,
            data=await request.read() if request.can_read_body else None,
            allow_redirects=False,
        ) as answer:
            body = await answer.read()
            dropped = {"content-length", "transfer-encoding", "date", "server"}
            passed = {k: v for k, v in answer.headers.items() if k.lower() not in dropped}
            response = web.Response(status=answer.status, body=body, headers=passed)
            if request.method == "HEAD" and "Content-Length" in answer.headers:
                response.headers["Content-Length"] = answer.headers["Content-Length"]
            return response


# -- building and checking images ------------------------------------------------------


def canonical(document: dict[str, object]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


def with_layers(image: Image, layers: Iterable[Blob], *, extra: Iterable[object] = ()) -> Image:
    """The image with other layers; `extra` descriptors (foreign layers) are listed in the
    manifest but not pushed."""
    layers = tuple(layers)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": image.config.descriptor(),
        "layers": [*extra, *(layer.descriptor() for layer in layers)],
    }
    return dataclasses.replace(image, layers=layers, manifest=canonical(manifest))


def index_of(images: Iterable[Image], *, unplatformed: Iterable[Image] = ()) -> Index:
    """An OCI index over the images with their platforms, and over `unplatformed` ones
    without a platform (as buildx lists attestation manifests)."""
    images, unplatformed = tuple(images), tuple(unplatformed)
    entries: list[dict[str, object]] = []
    for image in images:
        os_name, arch = image.platform.split("/", 1)
        entries.append(
            {
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": len(image.manifest),
                "platform": {"os": os_name, "architecture": arch},
            }
        )
    for image in unplatformed:
        entries.append(
            {
                "mediaType": image.media_type,
                "digest": image.digest,
                "size": len(image.manifest),
                "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
            }
        )
    manifest = canonical({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries})
    return Index(images + unplatformed, manifest)


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


def docker_manifest_list(images: Iterable[Image]) -> Index:
    images = tuple(docker_flavoured(image) for image in images)
    document = {
        "schemaVersion": 2,
        "mediaType": DOCKER_MANIFEST_LIST,
        "manifests": [
            {
                "mediaType": DOCKER_MANIFEST,
                "digest": image.digest,
                "size": len(image.manifest),
                "platform": {"os": "linux", "architecture": image.platform.split("/")[1]},
            }
            for image in images
        ],
    }
    return Index(images, json.dumps(document, indent=2).encode(), media_type=DOCKER_MANIFEST_LIST)


def unique_blobs(artifact: Image | Index) -> dict[str, Blob]:
    images = artifact.images if isinstance(artifact, Index) else (artifact,)
    return {blob.digest: blob for image in images for blob in image.blobs}


async def push(
    url: str,
    items: Iterable[tuple[str, str, Image | Index]],
    *,
    username: str | None = None,
    password: str | None = None,
) -> None:
    async with Pusher(url, username=username, password=password) as pusher:
        await pusher.push_many(items)


async def assert_copied(
    client: RegistryClient, repository: str, tag: str, artifact: Image | Index
) -> None:
    """The tag names the artifact's digest, and every manifest and blob reads back whole
    (RegistryClient checks each against its digest)."""
    top = await client.get_manifest(repository, tag)
    assert (top.digest, top.media_type, top.raw) == (
        artifact.digest,
        artifact.media_type,
        artifact.manifest,
    )
    images = artifact.images if isinstance(artifact, Index) else (artifact,)
    for image in images:
        manifest = await client.get_manifest(repository, image.digest)
        assert manifest.raw == image.manifest
        for blob in image.blobs:
            assert await client.get_blob(repository, blob.digest) == blob.data


# -- reading the registry's access log -----------------------------------------------

_ACCESS_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<uri>\S+) HTTP/[\d.]+" (?P<status>\d{3}) ')


@dataclasses.dataclass(frozen=True)
class Logged:
    method: str
    path: str
    query: dict[str, str]
    status: int


def access_log(registry: LocalRegistry) -> list[Logged]:
    found = []
    for line in registry.log_path.read_text().splitlines():
        match = _ACCESS_LINE.search(line)
        if match and not line.startswith("time="):
            uri = urllib.parse.urlsplit(match["uri"])
            query = dict(urllib.parse.parse_qsl(uri.query))
            found.append(Logged(match["method"], uri.path, query, int(match["status"])))
    return found


def wait_for_log(
    registry: LocalRegistry, done: Callable[[list[Logged]], bool], timeout: float = 5.0
) -> list[Logged]:
    """The access log once `done` holds (the registry may write a line just after it
    answered)."""
    deadline = time.monotonic() + timeout
    while True:
        logged = access_log(registry)
        if done(logged) or time.monotonic() > deadline:
            return logged
        time.sleep(0.05)


# -- from one registry to another ----------------------------------------------------


async def test_copies_a_single_platform_image_between_registries(
    upstream: LocalRegistry, registry: LocalRegistry
) -> None:
    image = random_image(layers=3, layer_size=2048)
    await push(upstream.url, [("library/app", "1.0", image)])
    blobs = unique_blobs(image)

    async with RegistryClient(upstream.url) as source, RegistryClient(registry.url) as target:
        copied = await copy_image(source, "library/app", "1.0", target, "mirror/app", "1.0")
        assert copied == CopyResult(
            digest=image.digest,
            media_type=OCI_MANIFEST,
            manifests=1,
            blobs_uploaded=4,
            blobs_mounted=0,
            blobs_present=0,
            bytes_uploaded=sum(len(blob.data) for blob in blobs.values()),
        )
        assert (target.stats.blobs_uploaded, target.stats.blobs_mounted) == (4, 0)
        assert target.stats.bytes_uploaded == copied.bytes_uploaded
        await assert_copied(target, "mirror/app", "1.0", image)

        # Again, by digest and under another tag: nothing moves, the manifest is put.
        again = await copy_image(source, "library/app", image.digest, target, "mirror/app", "v1")
        assert again == dataclasses.replace(
            copied, blobs_uploaded=0, blobs_present=4, bytes_uploaded=0
        )
        assert target.stats.blobs_uploaded == 4
        assert sorted(await target.tags("mirror/app")) == ["1.0", "v1"]


@pytest.mark.parametrize("flavour", ["oci", "docker"])
async def test_copies_a_multi_platform_index_with_every_child(
    upstream: LocalRegistry, registry: LocalRegistry, flavour: str
) -> None:
    if flavour == "oci":
        shared = random_image().layers[0]  # a base layer every platform has
        platforms = [
            with_layers(random_image(platform=p), [shared, *random_image().layers])
            for p in ("linux/amd64", "linux/arm64", "linux/s390x")
        ]
        attestation = random_image(platform="unknown/unknown")
        index = index_of(platforms, unplatformed=[attestation])
    else:
        index = docker_manifest_list(
            random_image(platform=p) for p in ("linux/amd64", "linux/arm64")
        )
    await push(upstream.url, [("library/multi", "latest", index)])
    blobs = unique_blobs(index)
    children = len(index.images)

    async with RegistryClient(upstream.url) as source, RegistryClient(registry.url) as target:
        copied = await copy_image(source, "library/multi", "latest", target, "mirror/multi", "1")
        assert copied == CopyResult(
            digest=index.digest,
            media_type=index.media_type,
            manifests=1 + children,
            blobs_uploaded=len(blobs),  # the shared layer once
            blobs_mounted=0,
            blobs_present=0,
            bytes_uploaded=sum(len(blob.data) for blob in blobs.values()),
        )
        await assert_copied(target, "mirror/multi", "1", index)
        listed = await target.get_manifest("mirror/multi", "1")
        assert [child.digest for child in listed.children] == [i.digest for i in index.images]

        # Again: the children are in the target already, so they are not even fetched.
        source.stats.requests = 0
        again = await copy_image(source, "library/multi", "latest", target, "mirror/multi", "2")
        assert (again.manifests, again.manifests_present) == (1, children)
        assert (again.blobs_uploaded, again.blobs_present, again.bytes_uploaded) == (0, 0, 0)
        assert source.stats.requests == 1  # the index
        await assert_copied(target, "mirror/multi", "2", index)


async def test_a_child_missing_from_the_target_is_copied_with_its_blobs(
    upstream: LocalRegistry, registry: LocalRegistry
) -> None:
    """A platform the target already has is skipped; the others are completed."""
    index = random_index(("linux/amd64", "linux/arm64"))
    amd, arm = index.images
    await push(upstream.url, [("library/multi", "latest", index)])
    await push(registry.url, [("mirror/multi", "amd-only", amd)])
    async with RegistryClient(upstream.url) as source, RegistryClient(registry.url) as target:
        copied = await copy_image(source, "library/multi", "latest", target, "mirror/multi", "1")
        assert (copied.manifests, copied.manifests_present) == (2, 1)
        assert (copied.blobs_uploaded, copied.blobs_present) == (len(arm.blobs), 0)
        await assert_copied(target, "mirror/multi", "1", index)


async def test_a_blob_already_in_the_target_repository_is_not_copied(
    upstream: LocalRegistry, registry: LocalRegistry
) -> None:
    base = random_image()
    derived = with_layers(random_image(), [base.layers[0], *random_image().layers])
    await push(upstream.url, [("library/app", "2", derived)])
    await push(registry.url, [("mirror/app", "base", base)])
    async with RegistryClient(upstream.url) as source, RegistryClient(registry.url) as target:
        copied = await copy_image(source, "library/app", "2", target, "mirror/app", "2")
        assert (copied.blobs_uploaded, copied.blobs_present) == (2, 1)
        await assert_copied(target, "mirror/app", "2", derived)


async def test_streams_blobs_above_the_threshold(
    upstream: LocalRegistry, registry: LocalRegistry
) -> None:
    # Layers of a few MB: several chunks of the stream each.
    index = random_index(("linux/amd64", "linux/arm64"), layer_size=3 * 1024 * 1024)
    await push(upstream.url, [("library/big", "1", index)])
    blobs = unique_blobs(index)
    assert max(len(blob.data) for blob in blobs.values()) > 3 * 1024 * 1024

    async with RegistryClient(upstream.url) as source, RegistryClient(registry.url) as target:
        copied = await copy_image(
            source, "library/big", "1", target, "mirror/big", "1", stream_threshold=1
        )
        assert copied.digest == index.digest
        assert copied.blobs_uploaded == len(blobs)
        assert copied.bytes_uploaded == sum(len(blob.data) for blob in blobs.values())
        await assert_copied(target, "mirror/big", "1", index)
    uploads = [
        entry
        for entry in wait_for_log(registry, lambda log: any(e.method == "PUT" for e in log))
        if entry.method == "PUT" and "/blobs/uploads/" in entry.path
    ]
    assert sorted(entry.query["digest"] for entry in uploads) == sorted(blobs)
    assert {entry.status for entry in uploads} == {201}


async def test_a_streamed_blob_is_never_held_in_memory(
    upstream: LocalRegistry, registry: LocalRegistry
) -> None:
    image = random_image(layer_size=24 * 1024 * 1024)
    await push(upstream.url, [("library/big", "1", image)])
    size = len(image.layers[0].data)
    async with RegistryClient(upstream.url) as source, RegistryClient(registry.url) as target:
        tracemalloc.start()
        try:
            copied = await copy_image(
                source, "library/big", "1", target, "mirror/big", "1", stream_threshold=1 << 20
            )
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert copied.bytes_uploaded > size
        assert peak < 8 * 1024 * 1024, f"{peak} bytes allocated at most, for a {size} byte layer"
        await assert_copied(target, "mirror/big", "1", image)


async def test_copies_to_a_registry_that_answers_relative_locations(
    upstream: LocalRegistry, tmp_path: Path
) -> None:
    image = random_image(layers=2)
    await push(upstream.url, [("library/app", "1", image)])
    with TunedRegistry(tmp_path / "relative", extra={"http": {"relativeurls": True}}) as target_reg:
        async with (
            aiohttp.ClientSession() as session,
            session.post(f"{target_reg.url}/v2/probe/blobs/uploads/") as started,
        ):
            assert started.status == 202
            assert started.headers["Location"].startswith("/v2/probe/blobs/uploads/")
            assert "?_state=" in started.headers["Location"]
        async with RegistryClient(upstream.url) as source, RegistryClient(target_reg.url) as target:
            for threshold, tag in ((1, "streamed"), (1 << 30, "whole")):
                copied = await copy_image(
                    source, "library/app", "1", target, tag, "1", stream_threshold=threshold
                )
                assert copied.blobs_uploaded == 3
                await assert_copied(target, tag, "1", image)


async def test_foreign_layers_are_left_to_their_urls(tmp_path: Path) -> None:
    image = random_image()
    foreign = [
        {
            "mediaType": FOREIGN_LAYER,
            "digest": "sha256:" + "ab" * 32,
            "size": 1234,
            "urls": ["https://example.invalid/layer.tar.gz"],
        },
        {
            "mediaType": NONDISTRIBUTABLE_LAYER,
            "digest": "sha256:" + "cd" * 32,
            "size": 99,
            "urls": ["https://example.invalid/other.tar.gz"],
        },
    ]
    windowsy = with_layers(image, image.layers, extra=foreign)
    with (
        TunedRegistry(tmp_path / "upstream", extra=ALLOW_URLS) as upstream_reg,
        TunedRegistry(tmp_path / "ours", extra=ALLOW_URLS) as ours,
    ):
        await push(upstream_reg.url, [("windows/app", "1", windowsy)])
        async with RegistryClient(upstream_reg.url) as source, RegistryClient(ours.url) as target:
            manifest = await source.get_manifest("windows/app", "1")
            assert [bool(layer.urls) for layer in manifest.layers] == [True, True, False]
            copied = await copy_image(source, "windows/app", "1", target, "windows/app", "1")
            assert copied.digest == windowsy.digest
            assert (copied.blobs_uploaded, copied.blobs_present) == (2, 0)  # config, layer
            await assert_copied(target, "windows/app", "1", windowsy)
            assert not await target.blob_exists("windows/app", "sha256:" + "ab" * 32)


async def test_concurrent_copies_sharing_layers_into_one_repository(
    upstream: LocalRegistry, registry: LocalRegistry
) -> None:
    """Concurrent writes of one blob into one repository race in distribution's storage;
    the client serialises them."""
    base = random_image().layers[0]
    images = [with_layers(random_image(), [base, *random_image().layers]) for _ in range(6)]
    await push(upstream.url, [("library/app", f"v{n}", image) for n, image in enumerate(images)])
    async with RegistryClient(upstream.url) as source, RegistryClient(registry.url) as target:
        for threshold in (1, 1 << 30):
            repository = f"mirror/app-{threshold}"
            await asyncio.gather(
                *(
                    copy_image(
                        source,
                        "library/app",
                        f"v{n}",
                        target,
                        repository,
                        f"v{n}",
                        stream_threshold=threshold,
                    )
                    for n in range(len(images))
                )
            )
            for n, image in enumerate(images):
                await assert_copied(target, repository, f"v{n}", image)


# -- within one registry: mounts ----------------------------------------------------


async def test_promotion_within_a_registry_mounts_every_blob(registry: LocalRegistry) -> None:
    index = random_index(("linux/amd64", "linux/arm64", "linux/arm/v7"))
    await push(registry.url, [("team/app", "rc", index)])
    blobs = unique_blobs(index)
    pushed = wait_for_log(registry, lambda log: any(e.path.endswith("/manifests/rc") for e in log))
    async with RegistryClient(registry.url) as client:
        copied = await copy_image(client, "team/app", "rc", client, "prod/app", "1.0")
        assert copied == CopyResult(
            digest=index.digest,
            media_type=OCI_INDEX,
            manifests=4,
            blobs_uploaded=0,
            blobs_mounted=len(blobs),
            blobs_present=0,
            bytes_uploaded=0,
        )
        assert (client.stats.blobs_mounted, client.stats.blobs_uploaded) == (len(blobs), 0)
        await assert_copied(client, "prod/app", "1.0", index)

    # The copy's requests: after the push, up to the last manifest put (assert_copied's
    # own GETs come after it).
    logged = wait_for_log(
        registry,
        lambda log: any(e.method == "PUT" and e.path == "/v2/prod/app/manifests/1.0" for e in log),
    )
    logged = logged[
        len(pushed) : 1
        + next(i for i, e in enumerate(logged) if e.path == "/v2/prod/app/manifests/1.0")
    ]
    assert {e.status for e in logged if e.method == "PUT"} == {201}
    mounts = [e for e in logged if e.method == "POST" and "mount" in e.query]
    assert sorted(e.query["mount"] for e in mounts) == sorted(blobs)
    assert {(e.path, e.query["from"], e.status) for e in mounts} == {
        ("/v2/prod/app/blobs/uploads/", "team/app", 201)
    }
    # No upload into prod/app, and no blob bytes read from team/app: nothing moved.
    assert not [e for e in logged if e.method in ("PATCH", "PUT") and "/blobs/" in e.path]
    assert not [e for e in logged if e.method == "GET" and "/blobs/" in e.path]


async def test_mount_blob_answers_false_and_cancels_the_upload_it_started(
    registry: LocalRegistry,
) -> None:
    image = random_image()
    await push(registry.url, [("team/app", "1", image)])
    missing = "sha256:" + "0" * 64
    async with RegistryClient(registry.url) as client:
        assert await client.mount_blob("prod/app", image.config.digest, "team/app") is True
        assert await client.mount_blob("prod/app", missing, "team/app") is False
        assert client.stats.blobs_mounted == 1
        assert await client.blob_exists("prod/app", image.config.digest)
        assert not await client.blob_exists("prod/app", missing)
    logged = wait_for_log(registry, lambda log: any(e.method == "DELETE" for e in log))
    refused = next(e for e in logged if e.query.get("mount") == missing)
    assert refused.status == 202
    cancels = [e for e in logged if e.method == "DELETE"]
    assert [(e.path.startswith("/v2/prod/app/blobs/uploads/"), e.status) for e in cancels] == [
        (True, 204)
    ]


@pytest.mark.parametrize("concurrency", [1, 2, 8])
async def test_a_registry_that_does_not_mount_gets_the_bytes_streamed_without_deadlock(
    registry: LocalRegistry, concurrency: int
) -> None:
    """The fallback within one registry: source and target are one client, so each
    streamed blob holds a GET and a PUT of the same request budget at once."""
    index = random_index(("linux/amd64", "linux/arm64", "linux/arm/v7"), layer_size=200_000)
    await push(registry.url, [("team/app", "rc", index)])
    blobs = unique_blobs(index)
    async with (
        MountlessProxy(registry.url) as proxy,
        RegistryClient(proxy.url, concurrency=concurrency) as client,
    ):
        copied = await asyncio.wait_for(
            copy_image(
                client, "team/app", "rc", client, "prod/app", "1", stream_threshold=1, transfers=8
            ),
            timeout=60,
        )
        assert proxy.mounts_refused == len(blobs)
        assert (copied.blobs_mounted, copied.blobs_uploaded) == (0, len(blobs))
        await assert_copied(client, "prod/app", "1", index)


async def test_a_refused_mount_of_a_small_blob_is_uploaded_whole(registry: LocalRegistry) -> None:
    image = random_image(layers=2)
    await push(registry.url, [("team/app", "rc", image)])
    async with (
        MountlessProxy(registry.url) as proxy,
        RegistryClient(proxy.url, concurrency=1) as client,
    ):
        copied = await copy_image(client, "team/app", "rc", client, "prod/app", "1")
        assert (copied.blobs_mounted, copied.blobs_uploaded) == (0, 3)
        await assert_copied(client, "prod/app", "1", image)


# -- credentials ----------------------------------------------------------------------


async def test_basic_auth_on_both_sides(tmp_path: Path) -> None:
    index = random_index()
    with (
        LocalRegistry(tmp_path / "up", auth=HtpasswdAuth({"reader": "r"})) as up,
        LocalRegistry(tmp_path / "ours", auth=HtpasswdAuth({"berth": "b"})) as ours,
    ):
        await push(up.url, [("library/app", "1", index)], username="reader", password="r")
        async with (
            RegistryClient(up.url, username="reader", password="r") as source,
            RegistryClient(ours.url, username="berth", password="b") as target,
        ):
            imported = await copy_image(
                source, "library/app", "1", target, "import/app", "1", stream_threshold=600
            )
            assert imported.blobs_uploaded == len(unique_blobs(index))
            promoted = await copy_image(target, "import/app", "1", target, "prod/app", "1")
            assert (promoted.blobs_mounted, promoted.blobs_uploaded) == (
                len(unique_blobs(index)),
                0,
            )
            await assert_copied(target, "prod/app", "1", index)

        # A stream whose GET is the source client's first request: it meets the 401.
        layer = index.images[0].layers[0]
        async with (
            RegistryClient(up.url, username="reader", password="r") as source,
            RegistryClient(ours.url, username="berth", password="b") as target,
        ):
            copied = await target.copy_blob_stream("fresh/app", layer.digest, source, "library/app")
            assert copied == len(layer.data)
            assert await target.get_blob("fresh/app", layer.digest) == layer.data

        async with (
            RegistryClient(up.url, username="reader", password="r") as source,
            RegistryClient(ours.url, username="berth", password="wrong") as target,
        ):
            with pytest.raises(RegistryError) as refused:
                await copy_image(source, "library/app", "1", target, "import/app", "2")
            assert refused.value.status == 401


async def test_token_auth_on_both_sides_with_a_two_repository_mount_scope(
    tmp_path: Path,
) -> None:
    index = random_index()
    blobs = unique_blobs(index)
    with (
        TokenServer(users={"bob": "pw"}) as tokens,
        LocalRegistry(tmp_path / "up", auth=tokens.auth()) as up,
        LocalRegistry(tmp_path / "ours", auth=tokens.auth()) as ours,
    ):
        await push(up.url, [("library/app", "1", index)], username="bob", password="pw")
        tokens.requests.clear()
        async with (
            RegistryClient(up.url, username="bob", password="pw") as source,
            RegistryClient(ours.url, username="bob", password="pw") as target,
        ):
            for threshold, repository in ((1 << 30, "import/app"), (1, "import/streamed")):
                copied = await copy_image(
                    source, "library/app", "1", target, repository, "1", stream_threshold=threshold
                )
                assert copied.blobs_uploaded == len(blobs)
                await assert_copied(target, repository, "1", index)
            promoted = await copy_image(target, "import/app", "1", target, "prod/app", "1")
            assert promoted.blobs_mounted == len(blobs)
            await assert_copied(target, "prod/app", "1", index)

        layer = index.images[0].layers[0]
        async with (
            RegistryClient(up.url, username="bob", password="pw") as source,
            RegistryClient(ours.url, username="bob", password="pw") as target,
        ):
            # The stream's GET is the source client's first request: it meets the 401.
            streamed = await target.copy_blob_stream(
                "fresh/app", layer.digest, source, "library/app"
            )
            assert streamed == len(layer.data)
            assert await target.get_blob("fresh/app", layer.digest) == layer.data
            assert source.stats.token_fetches == 1

        asked = {tuple(request.scopes) for request in tokens.requests}
        assert ("repository:prod/app:pull,push", "repository:import/app:pull") in asked
        assert ("repository:import/app:pull,push",) in asked
        assert ("repository:library/app:pull",) in asked


# -- failures ------------------------------------------------------------------------


async def test_a_blob_that_does_not_match_its_digest_is_refused(registry: LocalRegistry) -> None:
    """The registry's own DIGEST_INVALID, raised as DigestMismatchError."""
    data = b"these bytes are not the ones named"
    wrong = "sha256:" + "1" * 64
    async with RegistryClient(registry.url) as client:
        with pytest.raises(DigestMismatchError) as refused:
            await client.push_blob("app", wrong, data)
        assert (refused.value.status, refused.value.code) == (400, "DIGEST_INVALID")
        assert f"uploading blob {wrong} to app: HTTP 400 DIGEST_INVALID" in str(refused.value)
        assert not await client.blob_exists("app", wrong)
        assert client.stats.blobs_uploaded == 0

        image = random_image()
        with pytest.raises(DigestMismatchError, match="the bytes hash to"):
            await client.put_manifest("app", image.config.digest, image.manifest, OCI_MANIFEST)


@pytest.mark.parametrize(
    ("threshold", "refused_by"),
    [(1, "DIGEST_INVALID"), (1 << 30, "hashes to")],
    ids=["streamed-refused-by-the-target", "whole-refused-by-the-client"],
)
async def test_a_blob_corrupted_on_the_way_is_refused(
    upstream: LocalRegistry, registry: LocalRegistry, threshold: int, refused_by: str
) -> None:
    image = random_image()
    await push(upstream.url, [("library/app", "1", image)])
    async with FaultProxy(upstream.url) as proxy:
        proxy.fail(1, kind="tamper", path_contains=f"/blobs/{image.config.digest}")
        async with RegistryClient(proxy.url) as source, RegistryClient(registry.url) as target:
            with pytest.raises(DigestMismatchError) as refused:
                await copy_image(
                    source,
                    "library/app",
                    "1",
                    target,
                    "mirror/app",
                    "1",
                    stream_threshold=threshold,
                )
            message = str(refused.value)
            assert message.startswith(
                f"copying blob {image.config.digest} of 127.0.0.1:{proxy.port}/library/app"
                f" to {registry.host}/mirror/app: "
            )
            assert refused_by in message
            assert not proxy.faults
            assert not await target.blob_exists("mirror/app", image.config.digest)
            with pytest.raises(RegistryError) as absent:
                await target.get_manifest("mirror/app", "1")
            assert absent.value.status == 404


async def test_a_broken_stream_is_retried_whole(
    upstream: LocalRegistry, registry: LocalRegistry
) -> None:
    image = random_image(layer_size=100_000)
    await push(upstream.url, [("library/app", "1", image)])
    async with FaultProxy(upstream.url) as proxy:
        layer = image.layers[0].digest
        proxy.fail(1, status=503, path_contains=f"/blobs/{layer}")
        proxy.fail(1, kind="drop", path_contains=f"/blobs/{layer}")
        async with (
            RegistryClient(proxy.url, backoff=0.01) as source,
            RegistryClient(registry.url, backoff=0.01) as target,
        ):
            copied = await copy_image(
                source, "library/app", "1", target, "mirror/app", "1", stream_threshold=1
            )
            assert copied.blobs_uploaded == 2
            assert not proxy.faults
            assert target.stats.retries >= 1
            assert target.stats.blobs_uploaded == 2
            await assert_copied(target, "mirror/app", "1", image)

        proxy.fail(10, status=503, path_contains=f"/blobs/{layer}")
        async with (
            RegistryClient(proxy.url, backoff=0.01, retries=2) as source,
            RegistryClient(registry.url, backoff=0.01, retries=2) as target,
        ):
            with pytest.raises(RegistryError) as gave_up:
                await copy_image(
                    source, "library/app", "1", target, "mirror/other", "1", stream_threshold=1
                )
            assert gave_up.value.status == 503
            assert f"copying blob {layer} of" in str(gave_up.value)


async def test_a_missing_source_is_a_readable_error(
    upstream: LocalRegistry, registry: LocalRegistry
) -> None:
    async with RegistryClient(upstream.url) as source, RegistryClient(registry.url) as target:
        with pytest.raises(RegistryError) as missing:
            await copy_image(source, "library/app", "nope", target, "mirror/app", "nope")
    assert missing.value.status == 404
    assert str(missing.value).startswith(
        f"reading manifest {upstream.host}/library/app:nope: manifest library/app:nope: HTTP 404"
    )


async def test_a_failed_copy_leaves_nothing_running(
    upstream: LocalRegistry, registry: LocalRegistry
) -> None:
    index = random_index(("linux/amd64", "linux/arm64", "linux/arm/v7"))
    await push(upstream.url, [("library/app", "1", index)])
    async with FaultProxy(upstream.url) as proxy:
        proxy.fail(1000, status=500, path_contains="/blobs/")
        async with (
            RegistryClient(proxy.url, backoff=0.01, retries=1) as source,
            RegistryClient(registry.url) as target,
        ):
            with pytest.raises(RegistryError, match="HTTP 500"):
                await copy_image(source, "library/app", "1", target, "mirror/app", "1")
            in_flight = len(proxy.requests)
            await asyncio.sleep(0.3)
            assert len(proxy.requests) == in_flight, "requests went on after the failure"
