"""The retention engine: which tags and manifests a prune deletes, and why.

`plan(inventory, in_use, rules, now)` is a pure function. It decides per digest, because
the registry deletes by digest and a delete removes every tag pointing at that digest:
a digest is kept when any of its tags or the digest itself is kept by a rule, is in use,
or is reached from a kept index; its tags share its fate.

Rules (an image is kept when ANY rule keeps it; names as in the PruneSchedule API):
- in use: a (repository, tag) or (repository, digest) in `in_use`;
- keepTags: a tag matches one of the globs (`*` matches any run of characters);
- keepYoungerThan: the image is younger than the duration, by the newest of its push
  and creation times;
- keepLast: the N newest tagged images of the repository, by creation time, falling back
  to push time;
- age unknown: neither time is known (non-image artifacts, reproducible builds that
  write a placeholder date), so no age rule can show the image is old: it is kept;
- references: everything an index kept for any reason points at is kept;
- deleteUntagged: a manifest no tag points at (e.g. the child of a deleted index) is
  deleted when true and kept when false.
Repositories are selected by include/exclude globs (`*` one path segment, `**` any
depth); repositories not selected are left alone entirely.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final, Protocol

from berth.api.common import glob_match

# A digest in a reason is shortened to this many hex characters.
_SHORT_HEX: Final = 12


class ManifestFacts(Protocol):
    """What the engine reads about one digest (berth.registry's ManifestInfo fits)."""

    @property
    def media_type(self) -> str: ...
    @property
    def size(self) -> int: ...
    @property
    def created(self) -> datetime | None: ...
    @property
    def pushed(self) -> datetime | None: ...
    @property
    def children(self) -> Sequence[str]: ...


class RepositoryFacts(Protocol):
    """One repository: tag -> digest, and the facts of every digest it reaches."""

    @property
    def tags(self) -> Mapping[str, str]: ...
    @property
    def manifests(self) -> Mapping[str, ManifestFacts]: ...


# (repository, tag or digest) -> who uses it, e.g. "Pod team-a/web-7d9f".
InUse = Mapping[tuple[str, str], str]


@dataclass(frozen=True, slots=True)
class InventoryManifest:
    """A plain ManifestFacts, for callers and tests without a registry at hand."""

    media_type: str = "application/vnd.oci.image.manifest.v1+json"
    size: int = 0
    created: datetime | None = None
    pushed: datetime | None = None
    children: tuple[str, ...] = ()


@dataclass(frozen=True)
class InventoryRepository:
    """A plain RepositoryFacts."""

    tags: dict[str, str] = field(default_factory=dict)
    manifests: dict[str, InventoryManifest] = field(default_factory=dict)


def repository_glob_matches(pattern: str, repository: str) -> bool:
    return glob_match(pattern, repository)


def tag_glob_matches(pattern: str, tag: str) -> bool:
    return glob_match(pattern, tag)  # tags have no "/": `*` is any run of characters


@dataclass(frozen=True)
class RepositorySelection:
    """spec.repositories: globs already expanded (no `{namespace}` left)."""

    include: tuple[str, ...] = ("**",)
    exclude: tuple[str, ...] = ()

    def selects(self, repository: str) -> bool:
        return any(repository_glob_matches(p, repository) for p in self.include) and not any(
            repository_glob_matches(p, repository) for p in self.exclude
        )


@dataclass(frozen=True)
class RetentionRules:
    """spec.retention and spec.repositories, with the API's defaults."""

    keep_last: int = 3
    keep_younger_than: timedelta = timedelta(minutes=60)
    keep_tags: tuple[str, ...] = ()
    delete_untagged: bool = True
    repositories: RepositorySelection = field(default_factory=RepositorySelection)

    def __post_init__(self) -> None:
        if self.keep_last < 0:
            raise ValueError("keep_last must not be negative")
        if self.keep_younger_than < timedelta(0):
            raise ValueError("keep_younger_than must not be negative")


class Action(StrEnum):
    KEEP = "Keep"
    DELETE = "Delete"


class Basis(StrEnum):
    """Why an entry got its action, as a category (the reason says it in words)."""

    IN_USE = "InUse"
    KEEP_TAGS = "KeepTags"
    KEEP_YOUNGER_THAN = "KeepYoungerThan"
    KEEP_LAST = "KeepLast"
    AGE_UNKNOWN = "AgeUnknown"
    REFERENCED = "Referenced"  # reached from a kept index
    SHARED_DIGEST = "SharedDigest"  # another tag of the same digest is kept
    UNTAGGED_KEPT = "UntaggedKept"  # deleteUntagged is false
    EXPIRED = "Expired"  # no rule keeps this tagged image
    UNTAGGED = "Untagged"  # no tag and nothing kept reaches it


@dataclass(frozen=True, slots=True)
class PlanEntry:
    """One tag (tag set) or one untagged manifest (tag None)."""

    repository: str
    tag: str | None
    digest: str
    action: Action
    basis: Basis
    reason: str


@dataclass(frozen=True)
class Plan:
    entries: tuple[PlanEntry, ...]
    # (repository, digest) to DELETE, each index before the children it names.
    deletions: tuple[tuple[str, str], ...]
    repositories: tuple[str, ...]  # selected
    excluded_repositories: tuple[str, ...]
    # Upper bound of what storage GC can free: the manifests and blobs of deleted images
    # (blobs shared with kept images are counted too).
    bytes_reclaimable: int = 0

    @property
    def tags_scanned(self) -> int:
        return sum(1 for e in self.entries if e.tag is not None)

    @property
    def tags_deleted(self) -> int:
        return sum(1 for e in self.entries if e.tag is not None and e.action is Action.DELETE)

    @property
    def manifests_deleted(self) -> int:
        return len(self.deletions)

    @property
    def kept_in_use(self) -> int:
        """Tags kept because a workload uses them or their digest."""
        return sum(1 for e in self.entries if e.tag is not None and e.basis is Basis.IN_USE)

    @property
    def kept_by_rule(self) -> int:
        """Tags kept by any other reason."""
        return sum(
            1
            for e in self.entries
            if e.tag is not None and e.action is Action.KEEP and e.basis is not Basis.IN_USE
        )

    def deleted(self) -> set[tuple[str, str]]:
        return set(self.deletions)


def format_duration(duration: timedelta) -> str:
    """A timedelta as a Go-style duration: 1h30m, 45s, 168h."""
    total = int(duration.total_seconds())
    if total == 0:
        return "0s"
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (seconds, "s")) if n)


def short_digest(digest: str) -> str:
    algorithm, _, hex_part = digest.partition(":")
    return f"{algorithm}:{hex_part[:_SHORT_HEX]}"


@dataclass(frozen=True, slots=True)
class _Decision:
    basis: Basis
    reason: str


def plan(
    inventory: Mapping[str, RepositoryFacts],
    in_use: InUse,
    rules: RetentionRules,
    now: datetime,
) -> Plan:
    """Decide, for every tag and manifest of the selected repositories, keep or delete."""
    entries: list[PlanEntry] = []
    deletions: list[tuple[str, str]] = []
    selected: list[str] = []
    excluded: list[str] = []
    reclaimable = 0
    for name in sorted(inventory):
        if not rules.repositories.selects(name):
            excluded.append(name)
            continue
        selected.append(name)
        repository = inventory[name]
        repo_entries, repo_deletions = _plan_repository(name, repository, in_use, rules, now)
        entries += repo_entries
        deletions += ((name, digest) for digest in repo_deletions)
        reclaimable += sum(
            repository.manifests[digest].size
            for digest in repo_deletions
            if not repository.manifests[digest].children
        )
    return Plan(tuple(entries), tuple(deletions), tuple(selected), tuple(excluded), reclaimable)


def _plan_repository(
    name: str,
    repository: RepositoryFacts,
    in_use: InUse,
    rules: RetentionRules,
    now: datetime,
) -> tuple[list[PlanEntry], list[str]]:
    manifests = repository.manifests
    tags_of: dict[str, list[str]] = {}
    for tag, digest in sorted(repository.tags.items()):
        tags_of.setdefault(digest, []).append(tag)
    # A digest a tag names but the inventory could not describe is still decided on.
    digests = sorted(set(manifests) | set(tags_of))

    tag_decisions: dict[str, _Decision] = {}  # tags kept on their own account
    for tag in repository.tags:
        decision = _tag_rule(name, tag, in_use, rules)
        if decision:
            tag_decisions[tag] = decision

    digest_decisions: dict[str, _Decision] = {}  # digests kept on their own account
    for digest in digests:
        decision = _digest_rule(name, digest, manifests.get(digest), in_use, rules, now)
        if decision:
            digest_decisions[digest] = decision
    for digest in _newest(tags_of, manifests, rules.keep_last):
        digest_decisions.setdefault(
            digest, _Decision(Basis.KEEP_LAST, f"keepLast: among the {rules.keep_last} newest")
        )

    # Everything a kept digest reaches is kept: an index's children, transitively.
    kept: dict[str, _Decision] = {}
    for digest in digests:
        own_tags = [t for t in tags_of.get(digest, ()) if t in tag_decisions]
        if digest in digest_decisions:
            kept[digest] = digest_decisions[digest]
        elif own_tags:
            kept[digest] = tag_decisions[own_tags[0]]
        elif digest not in tags_of and not rules.delete_untagged:
            # Kept before the closure below: an untagged index keeps its children too.
            kept[digest] = _Decision(Basis.UNTAGGED_KEPT, "untagged, and deleteUntagged is false")
    frontier = list(kept)
    while frontier:
        parent = frontier.pop()
        facts = manifests.get(parent)
        for child in facts.children if facts else ():
            if child not in kept:
                kept[child] = _Decision(
                    Basis.REFERENCED, f"referenced by kept index {short_digest(parent)}"
                )
                frontier.append(child)

    entries: list[PlanEntry] = []
    to_delete: list[str] = []
    expired = _expired_reason(rules)
    for digest in digests:
        tags = tags_of.get(digest, [])
        decision = kept.get(digest)
        if decision is None:
            to_delete.append(digest)
            for tag in tags:
                entries.append(PlanEntry(name, tag, digest, Action.DELETE, Basis.EXPIRED, expired))
            if not tags:
                entries.append(
                    PlanEntry(name, None, digest, Action.DELETE, Basis.UNTAGGED, "untagged")
                )
            continue
        if not tags:
            entries.append(
                PlanEntry(name, None, digest, Action.KEEP, decision.basis, decision.reason)
            )
        for tag in tags:
            own = _first_reason(tag_decisions.get(tag), digest_decisions.get(digest))
            if own is None and decision.basis is Basis.REFERENCED:
                own = decision
            if own is None:
                keeper = next(t for t in tags if t in tag_decisions)
                own = _Decision(Basis.SHARED_DIGEST, f"digest shared with kept tag {keeper}")
            entries.append(PlanEntry(name, tag, digest, Action.KEEP, own.basis, own.reason))
    return entries, _parents_first(to_delete, manifests)


def _first_reason(*decisions: _Decision | None) -> _Decision | None:
    """Being in use is the reason worth showing first; otherwise the first rule."""
    found = [decision for decision in decisions if decision is not None]
    in_use = [decision for decision in found if decision.basis is Basis.IN_USE]
    preferred = in_use or found
    return preferred[0] if preferred else None


def _tag_rule(name: str, tag: str, in_use: InUse, rules: RetentionRules) -> _Decision | None:
    user = in_use.get((name, tag))
    if user is not None:
        return _Decision(Basis.IN_USE, f"in use by {user}")
    for pattern in rules.keep_tags:
        if tag_glob_matches(pattern, tag):
            return _Decision(Basis.KEEP_TAGS, f"keepTags: {pattern}")
    return None


def _digest_rule(
    name: str,
    digest: str,
    facts: ManifestFacts | None,
    in_use: InUse,
    rules: RetentionRules,
    now: datetime,
) -> _Decision | None:
    user = in_use.get((name, digest))
    if user is not None:
        return _Decision(Basis.IN_USE, f"in use by {user}")
    times = [t for t in (facts.created, facts.pushed) if t is not None] if facts else []
    if not times:
        return _Decision(Basis.AGE_UNKNOWN, "age unknown: no creation or push time")
    if now - max(times) < rules.keep_younger_than:
        return _Decision(
            Basis.KEEP_YOUNGER_THAN,
            f"keepYoungerThan: younger than {format_duration(rules.keep_younger_than)}",
        )
    return None


def _newest(
    tags_of: Mapping[str, Sequence[str]], manifests: Mapping[str, ManifestFacts], count: int
) -> list[str]:
    """The `count` newest tagged digests whose time is known (creation, else push)."""
    dated: list[tuple[datetime, str]] = []
    for digest in tags_of:
        facts = manifests.get(digest)
        when = (facts.created or facts.pushed) if facts else None
        if when is not None:
            dated.append((when, digest))
    # Newest first; equal times fall back to the digest so that the plan is deterministic.
    dated.sort(key=lambda pair: (pair[0], pair[1]), reverse=True)
    return [digest for _, digest in dated[:count]]


def _expired_reason(rules: RetentionRules) -> str:
    parts = [f"older than {format_duration(rules.keep_younger_than)}"]
    if rules.keep_last:
        parts.append(f"not among the {rules.keep_last} newest")
    if rules.keep_tags:
        parts.append("no keepTags match")
    return ", ".join(parts) + ", not in use"


def _parents_first(digests: Iterable[str], manifests: Mapping[str, ManifestFacts]) -> list[str]:
    """Order deletions so that an index goes before the children it names: a pull of the
    index never meets a missing child while the prune runs."""
    wanted = set(digests)
    order: list[str] = []
    visited: set[str] = set()

    def visit(digest: str) -> None:
        # Post-order over children, reversed at the end, gives parents before children.
        visited.add(digest)
        facts = manifests.get(digest)
        for child in facts.children if facts else ():
            if child in wanted and child not in visited:
                visit(child)
        order.append(digest)

    for digest in sorted(wanted):
        if digest not in visited:
            visit(digest)
    order.reverse()
    return order
