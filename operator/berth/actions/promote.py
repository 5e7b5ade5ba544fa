"""`berth promote SRC DST`: copy an image from one tag to another inside one Berth
registry, mounting blobs across repositories so that no layer data moves."""

from __future__ import annotations

from dataclasses import dataclass

from berth.api.registry import ManagementState, RegistrySpec
from berth.k8s.api import JSON, Kube
from berth.k8s.kinds import REGISTRY
from berth.reconcile.endpoints import RegistryProblem, registry_access
from berth.registry.access import RegistryAccess, registry_client
from berth.registry.copy import CopyResult, copy_image
from berth.registry.reference import Reference, parse_reference


@dataclass(frozen=True)
class Promotion:
    registry: str  # namespace/name
    source: Reference
    target: Reference
    result: CopyResult


def parse_pair(source: str, target: str) -> tuple[Reference, Reference]:
    """Both references, checked: the target names a tag (not a digest), both name the
    same registry host."""
    src, dst = parse_reference(source), parse_reference(target)
    if dst.digest is not None or dst.tag is None:
        raise RegistryProblem(
            "InvalidTarget", f"{target}: the target must name a tag, not a digest"
        )
    if src.host != dst.host:
        raise RegistryProblem(
            "DifferentRegistries",
            f"{source} and {target} name different registries ({src.host}, {dst.host}): "
            "promotion copies within one registry",
        )
    return src, dst


async def find_registry(
    kube: Kube, host: str, wanted: tuple[str, str] | None
) -> tuple[JSON, RegistrySpec, RegistryAccess]:
    """The Registry serving `host` (or the one named by `wanted`) and how to reach it."""
    if wanted is not None:
        registry = await kube.get(REGISTRY, *wanted)
        if registry is None:
            raise RegistryProblem("RegistryNotFound", f"Registry {'/'.join(wanted)} does not exist")
        candidates = [registry]
    else:
        candidates = [r async for r in kube.list(REGISTRY)]
    unusable: list[str] = []
    for registry in candidates:
        spec = RegistrySpec.model_validate(registry.get("spec") or {})
        if spec.management_state is ManagementState.REMOVED:
            continue
        try:
            access = await registry_access(kube, registry, spec)
        except RegistryProblem as problem:
            if wanted is not None:
                raise
            # Another team's Registry that is not usable yet must not stop the search.
            metadata = registry["metadata"]
            unusable.append(f"{metadata['namespace']}/{metadata['name']}: {problem}")
            continue
        if wanted is not None or host in access.hosts:
            return registry, spec, access
    raise RegistryProblem(
        "RegistryNotFound",
        f"no Registry answers to {host}; name it with --registry NAMESPACE/NAME"
        + (f" (could not read {'; '.join(unusable)})" if unusable else ""),
    )


async def promote(
    kube: Kube,
    source: str,
    target: str,
    *,
    registry: tuple[str, str] | None = None,
    registry_url: str | None = None,
) -> Promotion:
    src, dst = parse_pair(source, target)
    found, spec, access = await find_registry(kube, src.host, registry)
    if registry_url is not None:
        access = await registry_access(kube, found, spec, registry_url)
    assert dst.tag is not None
    async with registry_client(access) as client:
        result = await copy_image(
            client, src.repository, src.reference, client, dst.repository, dst.tag
        )
    metadata = found["metadata"]
    return Promotion(f"{metadata['namespace']}/{metadata['name']}", src, dst, result)
