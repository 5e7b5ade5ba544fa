"""Shared by the prune integration tests: Berth objects through the real API, a
registry filled with real images, full pulls, and an expected plan computed the plain
way (without berth.prune)."""

from __future__ import annotations

import asyncio
import datetime
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client

from berth.constants import GROUP, VERSION
from berth.registry.client import RegistryClient
from testbed.cluster import wait_for
from testbed.images import Image, Index, Pusher, random_image, random_index

NOW = datetime.datetime.now(datetime.UTC)


def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def create_object(
    api_client: client.ApiClient,
    namespace: str,
    plural: str,
    kind: str,
    name: str,
    spec: dict[str, Any],
) -> None:
    custom(api_client).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        plural,
        {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        },
    )


def get_object(
    api_client: client.ApiClient, namespace: str, plural: str, name: str
) -> dict[str, Any]:
    return dict(
        custom(api_client).get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)
    )


def condition(obj: dict[str, Any], condition_type: str) -> dict[str, Any]:
    for item in (obj.get("status") or {}).get("conditions") or []:
        if item["type"] == condition_type:
            return dict(item)
    return {}


def wait_condition(
    api_client: client.ApiClient,
    namespace: str,
    plural: str,
    name: str,
    condition_type: str,
    status: str,
    *,
    reason: str | None = None,
    timeout: float = 30,
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> bool:
        nonlocal seen
        seen = condition(get_object(api_client, namespace, plural, name), condition_type)
        return seen.get("status") == status and (reason is None or seen.get("reason") == reason)

    try:
        wait_for(f"{condition_type}={status} on {plural} {namespace}/{name}", check, timeout)
    except Exception as error:
        raise AssertionError(f"{error}; last seen: {seen}") from None
    return seen


@dataclass(frozen=True)
class Pushed:
    """One tag as pushed: what the expectation is computed from."""

    repository: str
    tag: str
    digest: str
    created: datetime.datetime
    children: tuple[str, ...] = ()


@dataclass
class Layout:
    """What a test pushed, by repository."""

    images: list[Pushed] = field(default_factory=list)

    def repositories(self) -> list[str]:
        return sorted({image.repository for image in self.images})

    def digest(self, repository: str, tag: str) -> str:
        return next(i.digest for i in self.images if (i.repository, i.tag) == (repository, tag))

    def children(self, repository: str, digest: str) -> tuple[str, ...]:
        return next(
            (i.children for i in self.images if (i.repository, i.digest) == (repository, digest)),
            (),
        )


def build_layout(
    repositories: int, tags: int, *, prefix: str = "team", seed: int = 7
) -> tuple[Layout, list[tuple[str, str, Image | Index]]]:
    """`repositories` repositories of `tags` tags each, ages spread from days to minutes;
    every fourth repository holds multi-platform images (OCI indexes); every third has a
    `v1.0` tag (old) and every fifth an `alias` tag sharing the oldest image's digest."""
    layout = Layout()
    pushes: list[tuple[str, str, Image | Index]] = []
    for r in range(repositories):
        repository = f"{prefix}/app-{r:02d}"
        multi = r % 4 == 0
        for t in range(tags):
            # t=0 oldest (tags+1 days), the last tag 10 minutes old.
            age = (
                datetime.timedelta(minutes=10)
                if t == tags - 1
                else datetime.timedelta(days=tags + 1 - t)
            )
            created = NOW - age
            name = "v1.0" if (t == 1 and r % 3 == 0) else f"build-{t}"
            artifact: Image | Index
            if multi:
                artifact = random_index(
                    created=created, seed=seed * 1000 + r * 50 + t, layer_size=64
                )
                children = tuple(image.digest for image in artifact.images)
            else:
                artifact = random_image(
                    created=created, seed=seed * 1000 + r * 50 + t, layer_size=64
                )
                children = ()
            pushes.append((repository, name, artifact))
            layout.images.append(Pushed(repository, name, artifact.digest, created, children))
            if t == 0 and r % 5 == 0:
                pushes.append((repository, "alias", artifact))
                layout.images.append(
                    Pushed(repository, "alias", artifact.digest, created, children)
                )
    return layout, pushes


def push(url: str, pushes: Iterable[tuple[str, str, Image | Index]]) -> None:
    """Push in parallel; a second tag of an artifact goes after the first is complete
    (two concurrent uploads of the same blobs into one repository race)."""
    first: list[tuple[str, str, Image | Index]] = []
    again: list[tuple[str, str, Image | Index]] = []
    seen: set[tuple[str, str]] = set()
    for repository, tag, artifact in pushes:
        key = (repository, artifact.digest)
        (again if key in seen else first).append((repository, tag, artifact))
        seen.add(key)

    async def run() -> None:
        async with Pusher(url, concurrency=16) as pusher:
            await pusher.push_many(first)
            await pusher.push_many(again)

    asyncio.run(run())


def expected_deletions(
    layout: Layout,
    in_use: set[tuple[str, str]],
    *,
    keep_last: int,
    keep_younger_than: datetime.timedelta,
    keep_tag_prefix: str,
    now: datetime.datetime,
) -> set[tuple[str, str]]:
    """(repository, digest) a prune must delete, computed plainly: per repository, a
    digest is kept when any of its tags is in use, starts with the prefix, is younger
    than the limit, or is among the newest `keep_last` digests; or when the digest
    itself is in use. Deleted indexes take their children along, unless a child is in
    use by digest."""
    doomed: set[tuple[str, str]] = set()
    for repository in layout.repositories():
        images = [i for i in layout.images if i.repository == repository]
        created = {i.digest: i.created for i in images}
        newest = sorted(created, key=lambda d: created[d], reverse=True)[:keep_last]
        kept = set(newest)
        for image in images:
            if (
                (repository, image.tag) in in_use
                or (repository, image.digest) in in_use
                or image.tag.startswith(keep_tag_prefix)
                or now - image.created < keep_younger_than
            ):
                kept.add(image.digest)
        for digest in set(created) - kept:
            doomed.add((repository, digest))
            doomed.update(
                (repository, child)
                for child in layout.children(repository, digest)
                if (repository, child) not in in_use
            )
    return doomed


async def pull_completely(url: str, repository: str, reference: str) -> int:
    """Fetch a manifest and every blob it reaches (children of an index too), each
    checked against its digest; returns the bytes read."""
    async with RegistryClient(url) as registry:
        total = 0
        pending = [reference]
        while pending:
            manifest = await registry.get_manifest(repository, pending.pop())
            total += len(manifest.raw)
            pending += [child.digest for child in manifest.children]
            blobs = ((manifest.config,) if manifest.config else ()) + manifest.layers
            for blob in blobs:
                total += len(await registry.get_blob(repository, blob.digest))
        return total


def skopeo_pull(host: str, repository: str, reference: str, destination: Path) -> None:
    """A real third-party pull of every platform into an OCI layout."""
    separator = "@" if ":" in reference else ":"
    subprocess.run(
        [
            "skopeo",
            "copy",
            "--all",
            "--src-tls-verify=false",
            f"docker://{host}/{repository}{separator}{reference}",
            f"oci:{destination}:pulled",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )


def tags_in_registry(url: str, repositories: Iterable[str]) -> dict[str, dict[str, str]]:
    """repository -> tag -> digest, as the registry answers now."""

    async def run() -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        async with RegistryClient(url) as registry:
            for repository in repositories:
                found[repository] = {}
                for tag in await registry.tags(repository):
                    found[repository][tag] = (await registry.head_manifest(repository, tag)).digest
        return found

    return asyncio.run(run())


def manifest_exists(url: str, repository: str, digest: str) -> bool:
    async def run() -> bool:
        async with RegistryClient(url) as registry:
            try:
                await registry.head_manifest(repository, digest)
            except Exception:
                return False
            return True

    return asyncio.run(run())
