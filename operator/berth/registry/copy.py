"""Copying an image between repositories: import (another registry into ours) and
promotion (one repository to another within a registry).

copy_image copies a manifest with everything it references and tags it in the target:
for an index (OCI index or Docker manifest list), every child manifest (each platform,
and children without a platform such as attestations) with its blobs, put by digest,
then the index; for an image manifest, its config and layers, then the manifest. The
manifest bytes are put unchanged, so the digest in the target is the source's.

Per blob, cheapest first:
- already in the target repository (HEAD): nothing moves;
- same registry (`source is target`): mounted from the source repository, no bytes move;
  when the registry refuses the mount, copied as below;
- copied: read whole and uploaded in one request up to `stream_threshold` bytes, else
  streamed chunk by chunk from the GET into the PUT (never held in memory).
Foreign (non-distributable) layers that name download `urls` are not in a registry and
are left alone, as the registry expects. A child manifest the target already has is
neither fetched nor copied again: the target accepted it, so it has its blobs (and a
source such as Docker Hub counts every manifest GET against a pull limit).

Each blob is copied once however many manifests share it. At most `transfers` blob
transfers run at once (memory is bounded by transfers x stream_threshold); each client's
own concurrency bounds its requests. The first failure cancels the rest and raises a
RegistryError (of the same subclass) naming what failed, e.g. "copying blob sha256:...
of docker.io/library/x to ...: ...".
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from berth.registry.client import (
    Descriptor,
    Manifest,
    RegistryClient,
    RegistryError,
    _check_reference,
    _check_repository,
)

DEFAULT_STREAM_THRESHOLD: Final = 32 * 1024 * 1024
DEFAULT_TRANSFERS: Final = 4
# An index of indexes is allowed; deeper nesting than this is refused as malformed.
MAX_INDEX_DEPTH: Final = 4
_FOREIGN_MARKERS: Final = ("foreign", "nondistributable")


@dataclass(frozen=True)
class CopyResult:
    digest: str  # manifest digest now at target_repository:tag
    media_type: str
    manifests: int  # manifests written (children of an index + the top one)
    blobs_uploaded: int
    blobs_mounted: int
    blobs_present: int  # already in the target repository
    bytes_uploaded: int
    # Children of an index already in the target repository: not fetched, not written.
    manifests_present: int = 0


def is_foreign(blob: Descriptor) -> bool:
    """A non-distributable layer to be downloaded from its `urls`, not from a registry."""
    media_type = blob.media_type.lower()
    return bool(blob.urls) and any(marker in media_type for marker in _FOREIGN_MARKERS)


async def copy_image(
    source: RegistryClient,
    source_repository: str,
    reference: str,
    target: RegistryClient,
    target_repository: str,
    tag: str,
    *,
    stream_threshold: int = DEFAULT_STREAM_THRESHOLD,
    transfers: int = DEFAULT_TRANSFERS,
) -> CopyResult:
    """Copy source_repository:reference (a tag or a digest) to target_repository:tag.

    Pass the same client as `source` and `target` for a copy within one registry: blobs
    are then mounted instead of copied. Names are checked before any request
    (InvalidReference); registry failures raise RegistryError.
    """
    for repository in (source_repository, target_repository):
        _check_repository(repository)
    _check_reference(reference)
    _check_reference(tag)
    copier = _Copier(
        source, source_repository, target, target_repository, stream_threshold, transfers
    )
    top = await copier.fetch(reference)
    try:
        await copier.contents(top, depth=0)
    finally:
        await copier.settle()
    await copier.put(top, tag)
    return copier.result(top)


def _name(client: RegistryClient, repository: str) -> str:
    """host[:port]/repository, as an image reference names it."""
    url = client.base_url
    host = url.raw_host or ""
    if ":" in host:  # IPv6
        host = f"[{host}]"
    port = f":{url.explicit_port}" if url.explicit_port is not None else ""
    return f"{host}{port}/{repository}"


def _wrapped(error: RegistryError, context: str) -> RegistryError:
    """The same kind of error with what was being done in front of its message."""
    return type(error)(f"{context}: {error}", status=error.status, code=error.code)


class _Copier:
    """One copy_image: what it copied, and each digest's copy started once."""

    def __init__(
        self,
        source: RegistryClient,
        source_repository: str,
        target: RegistryClient,
        target_repository: str,
        stream_threshold: int,
        transfers: int,
    ) -> None:
        if transfers < 1:
            raise ValueError("copy_image needs transfers >= 1")
        self.source = source
        self.source_repository = source_repository
        self.target = target
        self.target_repository = target_repository
        self.stream_threshold = stream_threshold
        self.same_registry = source is target
        self.source_name = _name(source, source_repository)
        self.target_name = _name(target, target_repository)
        self._transfers = asyncio.Semaphore(transfers)
        self._blobs: dict[str, asyncio.Task[None]] = {}
        self._children: dict[str, asyncio.Task[None]] = {}
        self.manifests = 0
        self.manifests_present = 0
        self.blobs_uploaded = 0
        self.blobs_mounted = 0
        self.blobs_present = 0
        self.bytes_uploaded = 0

    def result(self, top: Manifest) -> CopyResult:
        return CopyResult(
            digest=top.digest,
            media_type=top.media_type,
            manifests=self.manifests,
            blobs_uploaded=self.blobs_uploaded,
            blobs_mounted=self.blobs_mounted,
            blobs_present=self.blobs_present,
            bytes_uploaded=self.bytes_uploaded,
            manifests_present=self.manifests_present,
        )

    async def settle(self) -> None:
        """Wait out (or, after a failure, cancel) every copy started."""
        started = [*self._blobs.values(), *self._children.values()]
        for task in started:
            if not task.done():
                task.cancel()
        await asyncio.gather(*started, return_exceptions=True)

    async def fetch(self, reference: str) -> Manifest:
        try:
            return await self.source.get_manifest(self.source_repository, reference)
        except RegistryError as error:
            separator = "@" if ":" in reference else ":"
            raise _wrapped(
                error, f"reading manifest {self.source_name}{separator}{reference}"
            ) from error

    async def put(self, manifest: Manifest, reference: str) -> None:
        separator = "@" if ":" in reference else ":"
        try:
            await self.target.put_manifest(
                self.target_repository, reference, manifest.raw, manifest.media_type
            )
        except RegistryError as error:
            raise _wrapped(
                error,
                f"writing manifest {manifest.digest} of {self.source_name}"
                f" as {self.target_name}{separator}{reference}",
            ) from error
        self.manifests += 1

    async def contents(self, manifest: Manifest, depth: int) -> None:
        """Copy what `manifest` references: its children (each with its own contents,
        then itself, by digest), or its config and layers."""
        if manifest.is_index:
            if depth >= MAX_INDEX_DEPTH:
                raise RegistryError(
                    f"copying {manifest.digest} of {self.source_name}: indexes nested"
                    f" deeper than {MAX_INDEX_DEPTH}"
                )
            tasks = [
                self._once(
                    self._children, child.digest, functools.partial(self._child, child, depth + 1)
                )
                for child in manifest.children
            ]
        else:
            blobs = (manifest.config, *manifest.layers) if manifest.config else manifest.layers
            tasks = [
                self._once(self._blobs, blob.digest, functools.partial(self._blob, blob))
                for blob in blobs
                if not is_foreign(blob)
            ]
        # The first failure is raised at once; settle() then cancels what still runs.
        # (Cancelling here could cancel a task another manifest shares, and that one
        # would then report a cancellation instead of the failure.)
        await asyncio.gather(*tasks)

    @staticmethod
    def _once(
        started: dict[str, asyncio.Task[None]],
        digest: str,
        start: Callable[[], Coroutine[Any, Any, None]],
    ) -> asyncio.Task[None]:
        """The copy of `digest`, started now unless it already was."""
        task = started.get(digest)
        if task is None:
            task = started[digest] = asyncio.ensure_future(start())
        return task

    async def _child(self, child: Descriptor, depth: int) -> None:
        try:
            present = await self._manifest_exists(child.digest)
        except RegistryError as error:
            raise _wrapped(
                error, f"checking manifest {child.digest} in {self.target_name}"
            ) from error
        if present:
            self.manifests_present += 1
            return
        manifest = await self.fetch(child.digest)
        await self.contents(manifest, depth)
        await self.put(manifest, child.digest)

    async def _manifest_exists(self, digest: str) -> bool:
        try:
            await self.target.head_manifest(self.target_repository, digest)
        except RegistryError as error:
            if error.status == 404:
                return False
            raise
        return True

    async def _blob(self, blob: Descriptor) -> None:
        try:
            await self._copy_blob(blob)
        except RegistryError as error:
            raise _wrapped(
                error,
                f"copying blob {blob.digest} of {self.source_name} to {self.target_name}",
            ) from error

    async def _copy_blob(self, blob: Descriptor) -> None:
        if await self.target.blob_exists(self.target_repository, blob.digest):
            self.blobs_present += 1
            return
        if self.same_registry and await self.target.mount_blob(
            self.target_repository, blob.digest, self.source_repository
        ):
            self.blobs_mounted += 1
            return
        async with self._transfers:
            # A size of 0 is an unknown size (the field is missing), so not "small".
            if 0 < blob.size <= self.stream_threshold:
                data = await self.source.get_blob(self.source_repository, blob.digest)
                await self.target.push_blob(self.target_repository, blob.digest, data)
                copied = len(data)
            else:
                copied = await self.target.copy_blob_stream(
                    self.target_repository, blob.digest, self.source, self.source_repository
                )
        self.blobs_uploaded += 1
        self.bytes_uploaded += copied
