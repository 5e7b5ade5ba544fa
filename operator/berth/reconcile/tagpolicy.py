"""TagPolicy: tags imported from images outside the registry, tags promoted from other
tags, immutable tags kept where they were, and a history of what each tag pointed to.

One pass (`reconcile_tag_policy`) does everything and is safe to repeat:
1. checks what admission cannot: the Registry exists, the namespace may push to the
   repository (and pull from a promotion's source repository), tags do not follow
   each other in a cycle;
2. brings every tag with a `from` in place, in dependency order (dev before stage
   before prod): imports copy manifests and blobs from the source registry; promotions
   copy within the registry, mounting blobs across repositories so no layer moves;
3. observes the tags it tracks (those spec.tags names, and those immutableTags cover):
   a tag that moved gets a history item, and an immutable tag that moved is put back on
   its recorded digest, with an Event;
4. writes status only when it changed.

Passes come from kopf (create/update/resume), from a per-object daemon (scheduled
imports and polling) and from the registry's push notifications.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Final
from urllib.parse import urlsplit

from berth.api.common import ConditionType, glob_match, parse_duration
from berth.api.registry import Permission
from berth.api.tagpolicy import TagPolicyConditionType, TagPolicySpec, TagSpec
from berth.k8s.api import JSON, Kube
from berth.k8s.kinds import NAMESPACE, TAG_POLICY
from berth.k8s.secrets import secret_value
from berth.observability import TAG_REVERTS
from berth.reconcile.conditions import Cond, find, merge_conditions, now_rfc3339
from berth.reconcile.endpoints import RegistryProblem, referenced_registry, registry_access
from berth.reconcile.invalid import InvalidSpec
from berth.reconcile.kit import Note, Outcome, Passes, checked, invalid_outcome, publish
from berth.registry.access import RegistryAccess, registry_client
from berth.registry.client import RegistryClient, RegistryError
from berth.registry.copy import copy_image
from berth.registry.reference import DEFAULT_HOST, InvalidReference, parse_reference
from berth.resources.access import namespace_may

logger = logging.getLogger(__name__)

READY: Final = ConditionType.READY
IMPORT_SUCCESS: Final = TagPolicyConditionType.IMPORT_SUCCESS
IMMUTABLE: Final = "Immutable"
PUSH_SOURCE: Final = "push"
# Docker Hub's API host: docker.io names images, registry-1.docker.io serves them.
DOCKER_HUB_API: Final = "registry-1.docker.io"
MAX_STATUS_TAGS: Final = 256
MIN_NEXT_CHECK: Final = 1.0
# A failed import or revert is tried again this soon (seconds), polls being slower.
FAILURE_RETRY: Final = 15.0

_passes = Passes(TAG_POLICY)
# When each (namespace, name, tag) last asked its source, by time.monotonic(). Not kept
# across restarts: a restarted operator checks every source once, which is cheap.
_checked: dict[tuple[str, str, str], float] = {}


class RepositoryIndex:
    """Which TagPolicies watch which repositories of which Registry: a push notification
    names a registry and a repository, and wakes the policies that track it, or that
    promote from it."""

    def __init__(self) -> None:
        self._by_policy: dict[tuple[str, str], tuple[tuple[str, str], frozenset[str]]] = {}

    def track(
        self, policy: tuple[str, str], registry: tuple[str, str], repositories: Iterable[str]
    ) -> None:
        self._by_policy[policy] = (registry, frozenset(repositories))

    def forget(self, policy: tuple[str, str]) -> None:
        self._by_policy.pop(policy, None)

    def policies(self, registry: tuple[str, str], repository: str) -> list[tuple[str, str]]:
        return sorted(
            policy
            for policy, (watched, repositories) in self._by_policy.items()
            if watched == registry and repository in repositories
        )


INDEX: Final = RepositoryIndex()


def forget(namespace: str, name: str) -> None:
    _passes.forget(namespace, name)
    INDEX.forget((namespace, name))
    for key in [k for k in _checked if k[:2] == (namespace, name)]:
        del _checked[key]


def policy_repository(namespace: str, name: str, spec: TagPolicySpec) -> str:
    return spec.repository or f"{namespace}/{name}"


def source_label(tag: TagSpec, repository: str) -> str | None:
    """How a history item names where a tag's image came from."""
    source = tag.from_
    if source is None:
        return None
    if source.image is not None:
        return source.image
    return f"{source.repository or repository}:{source.tag}"


def is_immutable(tag: str, spec: TagPolicySpec) -> bool:
    for wanted in spec.tags or ():
        if wanted.name == tag and wanted.immutable:
            return True
    return any(glob_match(pattern, tag) for pattern in spec.immutable_tags or ())


def dependency_order(tags: Iterable[TagSpec]) -> list[TagSpec]:
    """Tags that follow another tag of the same repository come after it. Raises
    InvalidSpec on a cycle."""
    by_name = {tag.name: tag for tag in tags}
    ordered: list[TagSpec] = []
    state: dict[str, int] = {}  # 1 visiting, 2 done

    def visit(tag: TagSpec, path: list[str]) -> None:
        if state.get(tag.name) == 2:
            return
        if state.get(tag.name) == 1:
            cycle = " -> ".join([*path[path.index(tag.name) :], tag.name])
            raise InvalidSpec(f"spec.tags: tags follow each other in a cycle: {cycle}")
        state[tag.name] = 1
        source = tag.from_
        if source is not None and source.tag and source.repository is None:
            upstream = by_name.get(source.tag)
            if upstream is not None:
                visit(upstream, [*path, tag.name])
        state[tag.name] = 2
        ordered.append(tag)

    for tag in by_name.values():
        visit(tag, [])
    return ordered


# -- the pass --------------------------------------------------------------------------


async def reconcile_tag_policy(
    kube: Kube, namespace: str, name: str, *, poll_interval: float
) -> Outcome | None:
    """One pass over a TagPolicy; None when it is gone or going."""
    outcome = await _passes.run(
        kube, namespace, name, lambda policy: _reconcile(kube, policy, poll_interval)
    )
    if outcome is None:
        forget(namespace, name)
    return outcome


async def _reconcile(kube: Kube, policy: JSON, poll_interval: float) -> Outcome:
    def invalid(message: str) -> Outcome:
        return replace(invalid_outcome(message), next_check=poll_interval)

    try:
        outcome = await checked(_validated(kube, policy, poll_interval), invalid)
    except RegistryProblem as problem:
        ready = Cond(READY, False, problem.reason, str(problem))
        outcome = Outcome([ready], next_check=poll_interval)
    await publish(kube, TAG_POLICY, policy, outcome)
    return outcome


async def _validated(kube: Kube, policy: JSON, poll_interval: float) -> Outcome:
    spec = TagPolicySpec.model_validate(policy.get("spec") or {})
    return await _apply(kube, policy, spec, poll_interval)


async def _apply(kube: Kube, policy: JSON, spec: TagPolicySpec, poll_interval: float) -> Outcome:
    metadata = policy["metadata"]
    namespace, name = metadata["namespace"], metadata["name"]
    registry_ns = spec.registry_ref.namespace or namespace
    registry_name = spec.registry_ref.name
    registry, registry_spec = await referenced_registry(kube, registry_ns, registry_name)
    repository = policy_repository(namespace, name, spec)
    namespace_obj = await kube.get(NAMESPACE, None, namespace) or {"metadata": {"name": namespace}}
    grants = registry_spec.access or []
    if not namespace_may(grants, registry_ns, namespace_obj, repository, Permission.PUSH):
        raise RegistryProblem(
            "RepositoryNotAllowed",
            f"spec.repository: namespace {namespace} may not push to {repository} on Registry "
            f"{registry_ns}/{registry_name}; a grant with permission push in the Registry's "
            "spec.access must cover it",
        )
    for tag in spec.tags or ():
        source = tag.from_
        if source is not None and source.repository not in (None, repository):
            assert source.repository is not None
            if not namespace_may(
                grants, registry_ns, namespace_obj, source.repository, Permission.PULL
            ):
                raise RegistryProblem(
                    "SourceNotAllowed",
                    f"spec.tags[{tag.name}].from.repository: namespace {namespace} may not "
                    f"pull from {source.repository} on Registry {registry_ns}/{registry_name}",
                )
    ordered = dependency_order(spec.tags or ())
    access = await registry_access(kube, registry, registry_spec)
    sources = {t.from_.repository for t in spec.tags or () if t.from_ and t.from_.repository}
    INDEX.track((namespace, name), (registry_ns, registry_name), {repository, *sources})
    pull_spec = f"{_pull_host(registry, access)}/{repository}"
    async with registry_client(access) as client:
        work = _Pass(kube, policy, spec, client, repository)
        try:
            await work.run(ordered)
        except RegistryError as error:
            ready = Cond(
                READY,
                False,
                "RegistryUnavailable",
                f"Registry {registry_ns}/{registry_name}: {error}",
            )
            return Outcome([ready], {"pullSpec": pull_spec}, next_check=poll_interval)
    return Outcome(
        [work.ready()],
        {"tags": work.status_tags(), "pullSpec": pull_spec},
        next_check=work.next_check(poll_interval),
        events=work.events,
    )


def _pull_host(registry: JSON, access: RegistryAccess) -> str:
    endpoint = (registry.get("status") or {}).get("endpoint") or {}
    host = str(endpoint.get("external") or endpoint.get("internal") or access.hosts[0])
    # An Unmanaged Registry's external endpoint is its URL; an image names only the host.
    return urlsplit(host).netloc if "://" in host else host


def notification_token(secret: JSON | None) -> str | None:
    value = secret_value(secret, "token")
    return value.strip() if value is not None else None


class _Pass:
    """The registry side of one pass: tags brought in place and observed."""

    def __init__(
        self,
        kube: Kube,
        policy: JSON,
        spec: TagPolicySpec,
        client: RegistryClient,
        repository: str,
    ) -> None:
        self.kube = kube
        self.policy = policy
        self.spec = spec
        self.client = client
        self.repository = repository
        metadata = policy["metadata"]
        self.key = (metadata["namespace"], metadata["name"])
        self.generation = metadata.get("generation")
        old = (policy.get("status") or {}).get("tags") or []
        self.history: dict[str, list[JSON]] = {
            str(t["tag"]): list(t.get("items") or []) for t in old if t.get("tag")
        }
        self.tag_conditions: dict[str, list[JSON]] = {
            str(t["tag"]): list(t.get("conditions") or []) for t in old if t.get("tag")
        }
        self.updates: dict[str, list[Cond]] = {}
        self.events: list[Note] = []
        self.reverted: list[str] = []
        self.imported: list[str] = []
        self.present: set[str] = set()
        self.tracked: list[str] = []

    # -- tags with a source --------------------------------------------------------

    async def run(self, ordered: list[TagSpec]) -> None:
        existing = set(await self._tags())
        for tag in ordered:
            if tag.from_ is not None:
                await self._bring(tag, tag.name in existing)
        existing = set(await self._tags())
        self.present = existing
        self.tracked = self._tracked(existing)
        for tag_name in self.tracked:
            if tag_name in existing:
                await self._observe(tag_name)

    def _tracked(self, existing: set[str]) -> list[str]:
        """The tags this policy keeps history of: those spec.tags names, then those of
        the repository that immutableTags cover. Other tags are not the policy's: it
        records nothing of them (and so PruneSchedules do not protect them for it)."""
        wanted = [t.name for t in self.spec.tags or ()]
        immutable = sorted(
            tag
            for tag in existing - set(wanted)
            if any(glob_match(pattern, tag) for pattern in self.spec.immutable_tags or ())
        )
        return [*wanted, *immutable][:MAX_STATUS_TAGS]

    async def _tags(self) -> list[str]:
        try:
            return await self.client.tags(self.repository)
        except RegistryError as error:
            if error.status == 404:  # NAME_UNKNOWN: nothing pushed yet
                return []
            raise

    def _due(self, tag: TagSpec, label: str, present: bool) -> bool:
        items = self.history.get(tag.name) or []
        last_source = items[0].get("source") if items else None
        if not present or last_source != label:
            return True  # new, changed, or gone from the registry
        if is_immutable(tag.name, self.spec):
            return False  # recorded once, never moved by an import
        if not tag.import_policy.scheduled:
            return False
        if tag.from_ is not None and tag.from_.image is None:
            # Following another tag of this registry costs one HEAD: on every pass, so
            # that a push to the source (which notifies) moves the follower at once.
            return True
        checked = _checked.get((*self.key, tag.name))
        interval = parse_duration(tag.import_policy.interval).total_seconds()
        return checked is None or time.monotonic() - checked >= interval

    async def _bring(self, tag: TagSpec, present: bool) -> None:
        label = source_label(tag, self.repository)
        assert label is not None and tag.from_ is not None
        if not self._due(tag, label, present):
            return
        _checked[(*self.key, tag.name)] = time.monotonic()
        try:
            if tag.from_.image is not None:
                digest, copied = await self._import(tag, tag.from_.image)
            else:
                digest, copied = await self._promote(tag, tag.from_.repository, tag.from_.tag)
        except (RegistryError, InvalidReference) as error:
            reason = _failure_reason(error)
            message = f"{label}: " + (
                "not found in its registry" if reason == "NotFound" else str(error)
            )
            self.updates[tag.name] = [Cond(IMPORT_SUCCESS, False, reason, message)]
            before = find(self.tag_conditions.get(tag.name), IMPORT_SUCCESS) or {}
            if (before.get("status"), before.get("message")) != ("False", message):
                self.events.append(Note("ImportFailed", f"tag {tag.name}: {message}"))
            return
        verb = "imported" if tag.from_.image is not None else "promoted"
        self.updates[tag.name] = [
            Cond(IMPORT_SUCCESS, True, verb.capitalize(), f"{verb} {label} as {digest}")
        ]
        self._record(tag.name, digest, label)
        if copied:
            self.imported.append(tag.name)
            self.events.append(
                Note(verb.capitalize(), f"tag {tag.name}: {verb} {label}", warning=False)
            )

    async def _current(self, tag: str) -> str | None:
        try:
            return (await self.client.head_manifest(self.repository, tag)).digest
        except RegistryError as error:
            if error.status == 404:
                return None
            raise

    async def _import(self, tag: TagSpec, image: str) -> tuple[str, bool]:
        reference = parse_reference(image)
        async with await _upstream(reference.host, tag.import_policy.insecure) as upstream:
            source = await upstream.head_manifest(reference.repository, reference.reference)
            current = await self._current(tag.name)
            if current == source.digest:
                return source.digest, False
            result = await copy_image(
                upstream,
                reference.repository,
                source.digest,
                self.client,
                self.repository,
                tag.name,
            )
        logger.info(
            "imported %s into %s:%s (%s): %d blobs uploaded, %d present",
            image,
            self.repository,
            tag.name,
            result.digest,
            result.blobs_uploaded,
            result.blobs_present,
        )
        return result.digest, True

    async def _promote(
        self, tag: TagSpec, repository: str | None, source_tag: str | None
    ) -> tuple[str, bool]:
        assert source_tag is not None
        source_repository = repository or self.repository
        source = await self.client.head_manifest(source_repository, source_tag)
        current = await self._current(tag.name)
        if current == source.digest:
            return source.digest, False
        result = await copy_image(
            self.client, source_repository, source.digest, self.client, self.repository, tag.name
        )
        logger.info(
            "promoted %s:%s to %s:%s (%s): %d blobs mounted, %d uploaded",
            source_repository,
            source_tag,
            self.repository,
            tag.name,
            result.digest,
            result.blobs_mounted,
            result.blobs_uploaded,
        )
        return result.digest, True

    # -- every tag ------------------------------------------------------------------

    async def _observe(self, tag: str) -> None:
        current = await self._current(tag)
        if current is None:
            return
        items = self.history.get(tag) or []
        recorded = items[0].get("digest") if items else None
        if recorded == current:
            return
        if recorded is not None and is_immutable(tag, self.spec):
            await self._revert(tag, str(recorded), current)
            return
        self._record(tag, current, PUSH_SOURCE)

    async def _revert(self, tag: str, recorded: str, pushed: str) -> None:
        try:
            manifest = await self.client.get_manifest(self.repository, recorded)
            await self.client.put_manifest(self.repository, tag, manifest.raw, manifest.media_type)
        except RegistryError as error:
            message = (
                f"tag {tag} is immutable but was moved to {pushed}; putting it back on "
                f"{recorded} failed: {error}"
            )
            self.updates[tag] = [Cond(IMMUTABLE, False, "RevertFailed", message)]
            self.events.append(Note("RevertFailed", message))
            return
        message = f"tag {tag} is immutable: a push moved it to {pushed}; put back on {recorded}"
        logger.warning("%s:%s %s", self.repository, tag, message)
        self.reverted.append(tag)
        TAG_REVERTS.inc()
        self.updates[tag] = [Cond(IMMUTABLE, True, "Reverted", message)]
        self.events.append(Note("ImmutableTagReverted", message))

    def _record(self, tag: str, digest: str, source: str) -> None:
        items = self.history.setdefault(tag, [])
        if items and items[0].get("digest") == digest:
            if source != PUSH_SOURCE and items[0].get("source") != source:
                # Adopted: the tag already pointed at what its source names.
                items[0] = {**items[0], "source": source}
            return
        item: JSON = {"digest": digest, "created": now_rfc3339(), "source": source}
        if self.generation is not None:
            item["generation"] = self.generation
        items.insert(0, item)
        del items[self.spec.history_limit :]

    # -- results --------------------------------------------------------------------

    def status_tags(self) -> list[JSON]:
        out: list[JSON] = []
        for tag in self.tracked:
            entry: JSON = {
                "tag": tag,
                "items": (self.history.get(tag) or [])[: self.spec.history_limit],
            }
            conditions = self.tag_conditions.get(tag)
            if tag in self.updates:
                conditions = merge_conditions(conditions, self.updates[tag], self.generation)
            if conditions:
                entry["conditions"] = conditions
            out.append(entry)
        return out[:MAX_STATUS_TAGS]

    def ready(self) -> Cond:
        failed = []
        for entry in self.status_tags():
            for condition in entry.get("conditions") or ():
                if condition.get("type") == IMPORT_SUCCESS and condition.get("status") == "False":
                    failed.append(f"{entry['tag']}: {condition.get('message')}")
        missing = [t.name for t in self.spec.tags or () if t.name not in self.present]
        if failed:
            return Cond(READY, False, "ImportFailed", "; ".join(failed))
        tracked = len(self.present & {t.name for t in self.spec.tags or ()})
        if missing and any(t.from_ is not None for t in self.spec.tags or () if t.name in missing):
            return Cond(
                READY, False, "TagsMissing", f"not in the registry yet: {', '.join(missing)}"
            )
        return Cond(
            READY,
            True,
            "Ready",
            f"{tracked} of {len(self.spec.tags or ())} tags in place in {self.repository}",
        )

    def next_check(self, poll_interval: float) -> float:
        delays = [poll_interval]
        if any(not c.status for conds in self.updates.values() for c in conds):
            delays.append(FAILURE_RETRY)
        now = time.monotonic()
        for tag in self.spec.tags or ():
            if tag.from_ is not None and tag.from_.image and tag.import_policy.scheduled:
                checked = _checked.get((*self.key, tag.name), now)
                interval = parse_duration(tag.import_policy.interval).total_seconds()
                delays.append(interval - (now - checked))
        return max(MIN_NEXT_CHECK, min(delays))


def _failure_reason(error: Exception) -> str:
    if isinstance(error, InvalidReference):
        return "InvalidReference"
    status = getattr(error, "status", None)
    if status == 404:
        return "NotFound"
    if status in (401, 403):
        return "Unauthorized"
    return "ImportFailed"


_schemes: dict[str, str] = {}


async def _upstream(host: str, insecure: bool) -> RegistryClient:
    """A client for an import's source registry: HTTPS, or for `insecure` sources
    unverified HTTPS falling back to plain HTTP, as Docker does for insecure registries."""
    api_host = DOCKER_HUB_API if host == DEFAULT_HOST else host
    if not insecure:
        return RegistryClient(f"https://{api_host}")
    scheme = _schemes.get(api_host)
    if scheme is None:
        probe = RegistryClient(f"https://{api_host}", verify_tls=False, retries=0, timeout=10)
        try:
            await probe.ping()
            scheme = "https"
        except RegistryError as error:
            # An answer (even 401) means HTTPS works; no answer means try HTTP.
            scheme = "https" if error.status is not None else "http"
        finally:
            await probe.close()
        _schemes[api_host] = scheme
    return RegistryClient(f"{scheme}://{api_host}", verify_tls=False)
