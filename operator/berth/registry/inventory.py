"""The inventory of a registry: per repository, its tags and what their digests are.

For each selected repository: list the tags, GET each tag's manifest (one request; the
digest is the hash of the body), and describe every digest reached: media type, the
children of an index (described too), the creation time from the image config, and the
size. Descriptions are cached by digest in the client's DigestCache, so a repeated
inventory makes one request per tag plus one tag list per repository.

Limitation: the distribution API (2.8 and 3.x) has no way to list manifests that no tag
points to. Untagged manifests therefore appear only as children of a listed index; those
left behind by moved tags are invisible here and only the registry's own
`garbage-collect --delete-untagged` could find them (unsafe where indexes exist, see
TESTBED.md).

A tag that disappears between the tag list and its GET is left out (it is gone). Any
other error raises: an inventory with holes could make a plan delete a digest that an
unseen tag still points at.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from berth.concurrency import gather_all
from berth.registry.client import Manifest, ManifestInfo, RegistryClient, RegistryError


@dataclass(frozen=True)
class RepositoryInventory:
    """Tags and manifests of one repository, as the retention engine reads them."""

    name: str
    tags: dict[str, str] = field(default_factory=dict)  # tag -> digest
    # Every digest reached from a tag: the tagged manifests and the children of indexes.
    manifests: dict[str, ManifestInfo] = field(default_factory=dict)


async def inventory(
    client: RegistryClient,
    select: Callable[[str], bool] | None = None,
    *,
    repositories: Iterable[str] | None = None,
    parallel_repositories: int = 16,
) -> dict[str, RepositoryInventory]:
    """Inventory the repositories of the catalog (or those given) that `select` accepts.

    `parallel_repositories` bounds how many repositories are walked at once; the client's
    own concurrency bounds the requests in flight.
    """
    names = list(repositories) if repositories is not None else await client.catalog()
    names = [name for name in names if select is None or select(name)]
    gate = asyncio.Semaphore(parallel_repositories)

    async def one(name: str) -> RepositoryInventory:
        async with gate:
            return await _repository(client, name)

    results = await gather_all(one(name) for name in names)
    return {result.name: result for result in results}


async def _repository(client: RegistryClient, name: str) -> RepositoryInventory:
    try:
        tags = await client.tags(name)
    except RegistryError as error:
        # distribution lists deleted repositories in its catalog forever; they have no tags.
        if error.status == 404:
            return RepositoryInventory(name)
        raise
    describer = _Describer(client, name)

    async def resolve(tag: str) -> tuple[str, str] | None:
        try:
            manifest = await client.get_manifest(name, tag)
        except RegistryError as error:
            if error.status == 404:
                return None  # deleted since the tag list was read
            raise
        await describer.describe(manifest.digest, manifest)
        return tag, manifest.digest

    try:
        resolved = await gather_all(resolve(tag) for tag in tags)
    finally:
        await describer.settle()
    return RepositoryInventory(
        name,
        tags=dict(sorted(pair for pair in resolved if pair is not None)),
        manifests=dict(sorted(describer.found.items())),
    )


class _Describer:
    """Describes the digests of one repository, each once however many tags share it."""

    def __init__(self, client: RegistryClient, repository: str) -> None:
        self.client = client
        self.repository = repository
        self.found: dict[str, ManifestInfo] = {}
        self._pending: dict[str, asyncio.Task[ManifestInfo | None]] = {}

    async def settle(self) -> None:
        """Wait out (or, after a failure, cancel) every description started."""
        for task in self._pending.values():
            if not task.done():
                task.cancel()
        await asyncio.gather(*self._pending.values(), return_exceptions=True)

    async def describe(self, digest: str, manifest: Manifest | None = None) -> ManifestInfo | None:
        task = self._pending.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._describe(digest, manifest))
            self._pending[digest] = task
        return await task

    async def _describe(self, digest: str, manifest: Manifest | None) -> ManifestInfo | None:
        cache = self.client.cache.manifests
        info = cache.get(digest)
        if info is None:
            if manifest is None:
                try:
                    manifest = await self.client.get_manifest(self.repository, digest)
                except RegistryError as error:
                    if error.status == 404:
                        return None  # a child an index names but the repository lacks
                    raise
            info = await self._summarise(manifest)
            cache.put(digest, info)
        elif info.children:
            # The index is known, but its children must be listed in this inventory too.
            await gather_all(self.describe(child) for child in info.children)
        self.found[digest] = info
        return info

    async def _summarise(self, manifest: Manifest) -> ManifestInfo:
        if manifest.is_index:
            children = await gather_all(self.describe(child.digest) for child in manifest.children)
            known = [child for child in children if child is not None]
            created_times = [child.created for child in known if child.created is not None]
            return ManifestInfo(
                digest=manifest.digest,
                media_type=manifest.media_type,
                size=len(manifest.raw) + sum(child.size for child in known),
                created=max(created_times, default=None),
                children=tuple(child.digest for child in manifest.children),
            )
        created = None
        if manifest.config is not None:
            created = await self.client.image_created(self.repository, manifest.config)
        return ManifestInfo(
            digest=manifest.digest,
            media_type=manifest.media_type,
            size=manifest.size,
            created=created,
        )
