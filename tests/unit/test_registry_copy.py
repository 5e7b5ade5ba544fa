"""The pieces of image copying that need no registry: which layers are foreign, how an
upload URL gets its digest, and that the request slots of streamed copies cannot
deadlock. Copies themselves are tested against real registries in
tests/integration/test_registry_copy.py."""

from __future__ import annotations

import asyncio
import json

import pytest
from yarl import URL

from berth.registry.client import (
    Descriptor,
    RegistryClient,
    _transfer_slots,
    _with_digest,
    parse_manifest,
)
from berth.registry.copy import copy_image, is_foreign
from berth.registry.reference import InvalidReference

SHA = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("media_type", "urls", "foreign"),
    [
        ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", ("https://x/l",), True),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", ("https://x/l",), True),
        ("application/vnd.oci.image.layer.nondistributable.v1.tar", ("https://x/l",), True),
        # Without URLs a foreign layer can only be in the registry: copy it.
        ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", (), False),
        ("application/vnd.oci.image.layer.v1.tar+gzip", ("https://x/l",), False),
        ("application/vnd.oci.image.layer.v1.tar+gzip", (), False),
    ],
)
def test_foreign_layers(media_type: str, urls: tuple[str, ...], foreign: bool) -> None:
    assert is_foreign(Descriptor(media_type, SHA, 1, urls=urls)) is foreign


def test_a_manifest_keeps_the_urls_of_its_layers() -> None:
    raw = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": SHA},
            "layers": [
                {"mediaType": "x.foreign", "digest": SHA, "size": 3, "urls": ["https://a/b"]},
                {"mediaType": "x", "digest": SHA, "size": 4, "urls": "not a list"},
            ],
        }
    ).encode()
    manifest = parse_manifest(SHA, raw)
    assert [layer.urls for layer in manifest.layers] == [("https://a/b",), ()]


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("http://r:5000/v2/a/blobs/uploads/u", "http://r:5000/v2/a/blobs/uploads/u?digest=" + SHA),
        # The registry's own state is passed back byte for byte.
        (
            "http://r:5000/v2/a/blobs/uploads/u?_state=ab%3D%2Bc",
            "http://r:5000/v2/a/blobs/uploads/u?_state=ab%3D%2Bc&digest=" + SHA,
        ),
    ],
)
def test_the_digest_is_added_to_the_upload_location(location: str, expected: str) -> None:
    assert str(_with_digest(URL(location, encoded=True), SHA)) == expected


def test_a_relative_location_resolves_against_the_request() -> None:
    started = URL("https://r.example/v2/a/blobs/uploads/")
    location = started.join(URL("/v2/a/blobs/uploads/u?_state=x%3D", encoded=True))
    assert str(_with_digest(location, SHA)) == (
        "https://r.example/v2/a/blobs/uploads/u?_state=x%3D&digest=" + SHA
    )


@pytest.mark.parametrize("concurrency", [1, 2, 3, 8])
async def test_stream_copies_within_one_client_never_deadlock(concurrency: int) -> None:
    """Many copies at once, each holding its slots across two awaits, mixed with single
    requests: all finish, and never more than `concurrency` slots are held."""
    client = RegistryClient("http://unused.invalid", concurrency=concurrency)
    held = peak = 0

    async def copy() -> None:
        nonlocal held, peak
        async with _transfer_slots(client, client):
            held += min(2, concurrency)
            peak = max(peak, held)
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            held -= min(2, concurrency)

    async def request() -> None:
        nonlocal held, peak
        async with client._limit:
            held += 1
            peak = max(peak, held)
            await asyncio.sleep(0)
            held -= 1

    jobs = [copy() if n % 3 else request() for n in range(60)]
    await asyncio.wait_for(asyncio.gather(*jobs), timeout=5)
    assert peak <= concurrency
    assert client._limit._value == concurrency  # every slot given back


async def test_stream_copies_in_both_directions_never_deadlock() -> None:
    one = RegistryClient("http://one.invalid", concurrency=2)
    other = RegistryClient("http://other.invalid", concurrency=2)

    async def copy(source: RegistryClient, target: RegistryClient) -> None:
        async with _transfer_slots(source, target):
            await asyncio.sleep(0)

    jobs = [copy(one, other) if n % 2 else copy(other, one) for n in range(40)]
    await asyncio.wait_for(asyncio.gather(*jobs), timeout=5)
    assert (one._limit._value, other._limit._value) == (2, 2)


async def test_a_cancelled_copy_gives_its_slots_back() -> None:
    client = RegistryClient("http://unused.invalid", concurrency=2)
    await client._limit.acquire()  # one slot busy: the copy waits for its second

    async def copy() -> None:
        async with _transfer_slots(client, client):
            pass

    waiting = asyncio.ensure_future(copy())
    await asyncio.sleep(0.01)
    assert not waiting.done()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    client._limit.release()
    assert client._limit._value == 2
    await asyncio.wait_for(copy(), timeout=1)


@pytest.mark.parametrize(
    ("source_repository", "reference", "target_repository", "tag"),
    [
        ("Upper/case", "v1", "ok", "v1"),
        ("ok", "not a tag", "ok", "v1"),
        ("ok", "v1", "ok/", "v1"),
        ("ok", "v1", "ok", "sha256:short"),
    ],
)
async def test_names_are_checked_before_any_request(
    source_repository: str, reference: str, target_repository: str, tag: str
) -> None:
    async with RegistryClient("http://unused.invalid") as client:
        with pytest.raises(InvalidReference):
            await copy_image(client, source_repository, reference, client, target_repository, tag)
        assert client.stats.requests == 0
