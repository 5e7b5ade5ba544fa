"""Small random OCI images built in Python, and a pusher for them.

No image can be pulled from the internet here, so tests make their own: real gzip'd tar
layers, an OCI config with a `created` time and platform, an OCI manifest, and for
multi-platform images an OCI index over several such manifests.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import gzip
import hashlib
import io
import json
import random
import re
import tarfile
from collections.abc import Iterable
from dataclasses import dataclass, field

import aiohttp

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST_ACCEPT = ", ".join(
    [
        OCI_INDEX,
        "application/vnd.docker.distribution.manifest.list.v2+json",
        OCI_MANIFEST,
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _canonical(document: dict[str, object]) -> bytes:
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode()


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return sha256_digest(self.data)

    def descriptor(self) -> dict[str, object]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass(frozen=True)
class Image:
    """A single-platform image: config, layers and the manifest over them."""

    config: Blob
    layers: tuple[Blob, ...]
    platform: str
    created: datetime.datetime
    manifest: bytes = field(repr=False)
    media_type: str = OCI_MANIFEST

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)

    @property
    def blobs(self) -> tuple[Blob, ...]:
        return (self.config, *self.layers)

    @property
    def size(self) -> int:
        return len(self.manifest) + sum(len(b.data) for b in self.blobs)


@dataclass(frozen=True)
class Index:
    """A multi-platform image: an OCI index over one Image per platform."""

    images: tuple[Image, ...]
    manifest: bytes = field(repr=False)
    media_type: str = OCI_INDEX

    @property
    def digest(self) -> str:
        return sha256_digest(self.manifest)


def _layer(rng: random.Random, size: int) -> Blob:
    payload = rng.randbytes(size)
    tar_bytes = io.BytesIO()
    with tarfile.open(fileobj=tar_bytes, mode="w") as tar:
        info = tarfile.TarInfo(f"data-{rng.getrandbits(32):08x}.bin")
        info.size = len(payload)
        info.mtime = 0
        tar.addfile(info, io.BytesIO(payload))
    return Blob(OCI_LAYER, gzip.compress(tar_bytes.getvalue(), mtime=0))


def random_image(
    *,
    platform: str = "linux/amd64",
    layers: int = 1,
    layer_size: int = 512,
    created: datetime.datetime | None = None,
    seed: int | None = None,
) -> Image:
    rng = random.Random(seed)
    created = created or datetime.datetime.now(datetime.UTC)
    os_name, arch = platform.split("/", 1)
    layer_blobs = tuple(_layer(rng, layer_size) for _ in range(layers))
    config = Blob(
        OCI_CONFIG,
        _canonical(
            {
                "architecture": arch,
                "os": os_name,
                "created": created.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                "config": {"Labels": {"berth.test/nonce": f"{rng.getrandbits(64):016x}"}},
                "rootfs": {
                    "type": "layers",
                    # diff_ids name the uncompressed tars
                    "diff_ids": [sha256_digest(gzip.decompress(b.data)) for b in layer_blobs],
                },
            }
        ),
    )
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": [b.descriptor() for b in layer_blobs],
        }
    )
    return Image(config, layer_blobs, platform, created, manifest)


def random_index(
    platforms: Iterable[str] = ("linux/amd64", "linux/arm64"),
    *,
    created: datetime.datetime | None = None,
    seed: int | None = None,
    layer_size: int = 512,
) -> Index:
    rng = random.Random(seed)
    images = tuple(
        random_image(platform=p, created=created, seed=rng.getrandbits(64), layer_size=layer_size)
        for p in platforms
    )
    manifest = _canonical(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": image.media_type,
                    "digest": image.digest,
                    "size": len(image.manifest),
                    "platform": dict(
                        zip(("os", "architecture"), image.platform.split("/", 1), strict=True)
                    ),
                }
                for image in images
            ],
        }
    )
    return Index(images, manifest)


class PushError(RuntimeError):
    pass


class Pusher:
    """Pushes Images and Indexes over the distribution API (basic or bearer auth)."""

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        concurrency: int = 8,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._basic = (
            "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
            if username is not None
            else None
        )
        self._tokens: dict[str, str] = {}
        self._limit = asyncio.Semaphore(concurrency)
        # One upload per (repository, digest): distribution's filesystem driver races
        # when two uploads of the same blob into the same repository commit at once
        # ("provided digest did not match uploaded content").
        # Manifests are stored as blobs too, so puts of one manifest are serialised alike.
        self._uploads: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._manifest_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Pusher:
        self._session = aiohttp.ClientSession()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session:
            await self._session.close()

    async def push(self, repository: str, reference: str, artifact: Image | Index) -> str:
        """Push `artifact` as repository:reference; returns its manifest digest."""
        images = artifact.images if isinstance(artifact, Index) else (artifact,)
        for image in images:
            await asyncio.gather(*(self._ensure_blob(repository, b) for b in image.blobs))
            if isinstance(artifact, Index):
                await self._put_manifest(repository, image.digest, image)
        await self._put_manifest(repository, reference, artifact)
        return artifact.digest

    async def push_many(self, items: Iterable[tuple[str, str, Image | Index]]) -> None:
        async def one(repository: str, reference: str, artifact: Image | Index) -> None:
            async with self._limit:
                await self.push(repository, reference, artifact)

        await asyncio.gather(*(one(*item) for item in items))

    async def _ensure_blob(self, repository: str, blob: Blob) -> None:
        key = (repository, blob.digest)
        task = self._uploads.get(key)
        if task is None:
            task = self._uploads[key] = asyncio.ensure_future(self._upload(repository, blob))
        await asyncio.shield(task)

    async def _upload(self, repository: str, blob: Blob) -> None:
        status, _, _ = await self._request("HEAD", repository, f"blobs/{blob.digest}")
        if status == 200:
            return
        status, headers, body = await self._request("POST", repository, "blobs/uploads/")
        if status != 202:
            raise PushError(f"starting upload to {repository}: {status} {body!r}")
        location = headers["Location"]
        separator = "&" if "?" in location else "?"
        status, _, body = await self._request(
            "PUT",
            repository,
            f"{location}{separator}digest={blob.digest}",
            data=blob.data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if status != 201:
            raise PushError(f"uploading {blob.digest} to {repository}: {status} {body!r}")

    async def _put_manifest(self, repository: str, reference: str, item: Image | Index) -> None:
        lock = self._manifest_locks.setdefault((repository, item.digest), asyncio.Lock())
        async with lock:
            await self._put_manifest_once(repository, reference, item)

    async def _put_manifest_once(
        self, repository: str, reference: str, item: Image | Index
    ) -> None:
        status, _, body = await self._request(
            "PUT",
            repository,
            f"manifests/{reference}",
            data=item.manifest,
            headers={"Content-Type": item.media_type},
        )
        if status != 201:
            raise PushError(f"putting manifest {repository}:{reference}: {status} {body!r}")

    async def _request(
        self,
        method: str,
        repository: str,
        path: str,
        *,
        data: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        assert self._session is not None, "use Pusher as an async context manager"
        if path.startswith(("http://", "https://")):
            url = path
        elif path.startswith("/"):
            url = self.base_url + path
        else:
            url = f"{self.base_url}/v2/{repository}/{path}"
        for attempt in range(2):
            request_headers = dict(headers or {})
            token = self._tokens.get(repository)
            if token:
                request_headers["Authorization"] = f"Bearer {token}"
            elif self._basic:
                request_headers["Authorization"] = self._basic
            async with self._session.request(
                method, url, data=data, headers=request_headers
            ) as response:
                body = await response.read()
                if response.status == 401 and attempt == 0:
                    challenge = response.headers.get("WWW-Authenticate", "")
                    if challenge.startswith("Bearer "):
                        self._tokens[repository] = await self._fetch_token(challenge)
                        continue
                return response.status, dict(response.headers), body
        raise PushError(f"{method} {url}: still unauthorized after fetching a token")

    async def _fetch_token(self, challenge: str) -> str:
        assert self._session is not None
        params = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
        realm = params.pop("realm")
        headers = {"Authorization": self._basic} if self._basic else {}
        async with self._session.get(realm, params=params, headers=headers) as response:
            if response.status != 200:
                raise PushError(f"token request to {realm}: {response.status}")
            document = await response.json()
        return str(document.get("token") or document["access_token"])


def push_sync(
    base_url: str,
    items: Iterable[tuple[str, str, Image | Index]],
    *,
    username: str | None = None,
    password: str | None = None,
) -> None:
    """Push (repository, reference, artifact) triples from synchronous code."""

    async def run() -> None:
        async with Pusher(base_url, username=username, password=password) as pusher:
            await pusher.push_many(items)

    asyncio.run(run())
