"""Which images of our registry the cluster uses: the input that keeps pruning safe.

Scans, across all namespaces, Pods (containers, init and ephemeral containers, and the
`imageID` digests their statuses report) and the Pod templates of Deployments,
ReplicaSets, StatefulSets, DaemonSets, Jobs and CronJobs. Only images on one of the
registry's host names count; the result maps (repository, tag or digest) to the first
object found using it.

It fails closed: a list call that errors, or an image naming one of our hosts that
cannot be parsed, raises InUseScanError, and the caller must then delete nothing. Bad
references to other registries are only reported as warnings.

Lists go page by page through Kube.list (`limit`/`continue`) and read the raw JSON
rather than the client's model objects: the models cost several times the time and
memory for the few fields we need.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Final

from berth.k8s.api import ApiException, Kube
from berth.k8s.kinds import (
    CRON_JOB,
    DAEMON_SET,
    DEPLOYMENT,
    JOB,
    POD,
    REPLICA_SET,
    STATEFUL_SET,
    Kind,
)
from berth.registry.reference import DEFAULT_TAG, InvalidReference, parse_reference

DEFAULT_PAGE_SIZE: Final = 500
# (connect, read) seconds for each list call.
REQUEST_TIMEOUT: Final = (10.0, 120.0)
# Runtimes may prefix imageID with a scheme: `docker-pullable://`, `docker://`.
_SCHEME_SEPARATOR: Final = "://"
_CONTAINER_LISTS: Final = ("initContainers", "containers", "ephemeralContainers")
_STATUS_LISTS: Final = (
    "initContainerStatuses",
    "containerStatuses",
    "ephemeralContainerStatuses",
)

JSON = dict[str, Any]


class InUseScanError(RuntimeError):
    """The scan could not see everything; nothing may be deleted on its result."""


@dataclass
class InUseImages:
    """(repository, tag or digest) -> the first user, e.g. "Pod team-a/web-5d8f"."""

    references: dict[tuple[str, str], str] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    objects_scanned: int = 0


def host_aliases(hosts: Iterable[str]) -> frozenset[str]:
    """The host names to match, lower-cased, each also with and without its default
    port (:443 for HTTPS, :80 for HTTP): an image may spell the same registry either way,
    and matching too many names only protects more images."""
    aliases: set[str] = set()
    for host in hosts:
        name = host.strip().lower().removeprefix("https://").removeprefix("http://").rstrip("/")
        if not name:
            continue
        aliases.add(name)
        bare, colon, port = name.rpartition(":")
        has_port = bool(colon) and not port.endswith("]")  # "[::1]" has no port
        if has_port and port in ("443", "80"):
            aliases.add(bare)
        elif not has_port:
            aliases.update({f"{name}:443", f"{name}:80"})
    return frozenset(aliases)


@dataclass(frozen=True)
class _Source:
    kind: Kind
    pod_spec_path: tuple[str, ...]


_TEMPLATE: Final = ("spec", "template", "spec")
_SOURCES: Final = (
    _Source(POD, ("spec",)),
    _Source(DEPLOYMENT, _TEMPLATE),
    _Source(REPLICA_SET, _TEMPLATE),
    _Source(STATEFUL_SET, _TEMPLATE),
    _Source(DAEMON_SET, _TEMPLATE),
    _Source(JOB, _TEMPLATE),
    _Source(CRON_JOB, ("spec", "jobTemplate", "spec", "template", "spec")),
)


async def find_in_use(
    kube: Kube,
    hosts: Iterable[str],
    *,
    page_size: int = DEFAULT_PAGE_SIZE,
) -> InUseImages:
    """The images on `hosts` that Pods and workload templates in any namespace use.

    `hosts` are every name the registry answers to: service DNS forms with port, the
    cluster IP with port, the external host name. Raises InUseScanError on any list
    error or on an unparsable reference to one of those hosts.
    """
    ours = host_aliases(hosts)
    if not ours:
        raise InUseScanError("no registry host names given: nothing could be matched")
    result = InUseImages()
    for source in _SOURCES:
        async for item in list_all(kube, source.kind, page_size):
            result.objects_scanned += 1
            metadata = item.get("metadata") or {}
            user = f"{source.kind.kind} {metadata.get('namespace')}/{metadata.get('name')}"
            spec = _dig(item, source.pod_spec_path)
            for image in _spec_images(spec):
                _record(result, ours, image, user, from_status=False)
            if source.kind is POD:
                for image in _status_images(item.get("status") or {}):
                    _record(result, ours, image, user, from_status=True)
    return result


async def list_all(
    kube: Kube,
    kind: Kind,
    page_size: int,
    *,
    plural: str | None = None,
    detail: Callable[[Exception], str] | None = None,
) -> AsyncIterator[JSON]:
    """Every object of a kind in every namespace; any failure is an InUseScanError,
    "listing <plural> failed: <detail>"."""
    try:
        async for item in kube.list(kind, page_size=page_size, request_timeout=REQUEST_TIMEOUT):
            yield item
    except Exception as error:
        # Whatever went wrong (403 for missing RBAC, 410 for an expired continue
        # token, a refused connection), the list is incomplete: stop everything.
        what = plural or f"{kind.kind}s"
        raise InUseScanError(f"listing {what} failed: {(detail or _describe)(error)}") from error


def _describe(error: Exception) -> str:
    if isinstance(error, ApiException):
        return f"HTTP {error.status} {error.reason}"
    return f"{type(error).__name__}: {error}"


def _dig(document: JSON, path: tuple[str, ...]) -> JSON:
    for key in path:
        document = document.get(key) or {}
    return document


def _spec_images(spec: JSON) -> Iterator[str]:
    for list_name in _CONTAINER_LISTS:
        for container in spec.get(list_name) or ():
            yield str(container.get("image") or "")


def _status_images(status: JSON) -> Iterator[str]:
    """What the kubelet reports: `image` (often the spec's) and `imageID`, which carries
    the digest a tag resolved to when the container started."""
    for list_name in _STATUS_LISTS:
        for container in status.get(list_name) or ():
            for key in ("image", "imageID"):
                value = str(container.get(key) or "")
                # `docker-pullable://host/repo@sha256:..` from dockershim-era runtimes.
                _, separator, rest = value.partition(_SCHEME_SEPARATOR)
                value = rest if separator else value
                # A bare `sha256:...` is a local image ID, not a reference to a registry.
                if value and not value.startswith("sha256:"):
                    yield value


def _points_at(image: str, ours: frozenset[str]) -> bool:
    """Whether a string that failed to parse still names one of our hosts."""
    first = image.strip().split("/", 1)[0].lower()
    return "/" in image and first in ours


def _record(
    result: InUseImages, ours: frozenset[str], image: str, user: str, *, from_status: bool
) -> None:
    try:
        reference = parse_reference(image)
    except InvalidReference as error:
        if _points_at(image, ours):
            raise InUseScanError(
                f"{user} uses {image!r}, which names this registry but cannot be parsed: "
                f"{error}; fix or remove it, pruning cannot tell what it protects"
            ) from error
        where = "status" if from_status else "spec"
        result.warnings.append(f"{user}: ignoring invalid image {image!r} in {where}: {error}")
        return
    if reference.host.lower() not in ours:
        return
    keys = [reference.digest] if reference.digest else []
    # With a digest the tag beside it is not what runs, but keeping it is the safe reading.
    if reference.tag or not reference.digest:
        keys.append(reference.tag or DEFAULT_TAG)
    for key in keys:
        result.references.setdefault((reference.repository, key), user)
