"""The retention engine: worked examples, then properties over random inventories."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from berth.prune.retention import (
    Action,
    Basis,
    InventoryManifest,
    InventoryRepository,
    Plan,
    PlanEntry,
    RepositorySelection,
    RetentionRules,
    format_duration,
    plan,
    repository_glob_matches,
    short_digest,
    tag_glob_matches,
)

NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
INDEX = "application/vnd.oci.image.index.v1+json"


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def image(hours_old: float | None, *, size: int = 100) -> InventoryManifest:
    created = None if hours_old is None else NOW - timedelta(hours=hours_old)
    return InventoryManifest(created=created, size=size)


def index(hours_old: float, *children: str) -> InventoryManifest:
    return InventoryManifest(
        media_type=INDEX, created=NOW - timedelta(hours=hours_old), children=children
    )


def rules(**changes: object) -> RetentionRules:
    base: dict[str, object] = {"keep_last": 0, "keep_younger_than": timedelta(0)}
    base.update(changes)
    return RetentionRules(**base)  # type: ignore[arg-type]


def by_tag(result: Plan, repository: str = "app") -> dict[str, PlanEntry]:
    return {e.tag: e for e in result.entries if e.repository == repository and e.tag}


def untagged(result: Plan, repository: str = "app") -> dict[str, PlanEntry]:
    return {e.digest: e for e in result.entries if e.repository == repository and not e.tag}


def test_keep_last_keeps_the_newest_images_and_deletes_the_rest() -> None:
    repo = InventoryRepository(
        tags={f"b{n}": digest(n) for n in range(1, 6)},
        manifests={digest(n): image(hours_old=n) for n in range(1, 6)},  # b1 is newest
    )
    result = plan({"app": repo}, {}, rules(keep_last=2), NOW)
    tags = by_tag(result)
    assert {t for t, e in tags.items() if e.action is Action.KEEP} == {"b1", "b2"}
    assert tags["b1"].reason == "keepLast: among the 2 newest"
    assert tags["b5"].basis is Basis.EXPIRED
    assert tags["b5"].reason == "older than 0s, not among the 2 newest, not in use"
    assert sorted(result.deletions) == [("app", digest(n)) for n in (3, 4, 5)]
    assert (result.tags_scanned, result.tags_deleted, result.manifests_deleted) == (5, 3, 3)
    assert result.bytes_reclaimable == 300


def test_keep_last_orders_by_creation_and_falls_back_to_push_time() -> None:
    pushed_recently = InventoryManifest(pushed=NOW - timedelta(hours=1))
    repo = InventoryRepository(
        tags={"old": digest(1), "pushed": digest(2), "mid": digest(3)},
        manifests={digest(1): image(30), digest(2): pushed_recently, digest(3): image(10)},
    )
    tags = by_tag(plan({"app": repo}, {}, rules(keep_last=2), NOW))
    assert {t for t, e in tags.items() if e.action is Action.KEEP} == {"pushed", "mid"}


def test_keep_younger_than_uses_the_newest_known_time() -> None:
    # Built long ago (reproducible builds) but pushed a moment ago: young.
    rebuilt = InventoryManifest(
        created=NOW - timedelta(days=400), pushed=NOW - timedelta(minutes=5)
    )
    repo = InventoryRepository(
        tags={"fresh": digest(1), "stale": digest(2), "rebuilt": digest(3)},
        manifests={digest(1): image(0.5), digest(2): image(2), digest(3): rebuilt},
    )
    tags = by_tag(plan({"app": repo}, {}, rules(keep_younger_than=timedelta(hours=1)), NOW))
    assert tags["fresh"].reason == "keepYoungerThan: younger than 1h"
    assert tags["rebuilt"].action is Action.KEEP
    assert tags["stale"].action is Action.DELETE


def test_keep_tags_globs() -> None:
    names = ["v1.0", "v2", "release-3", "release", "dev-1", "v", "xv1"]
    repo = InventoryRepository(
        tags={name: digest(n) for n, name in enumerate(names)},
        manifests={digest(n): image(100) for n in range(len(names))},
    )
    tags = by_tag(plan({"app": repo}, {}, rules(keep_tags=("v*", "release-*")), NOW))
    kept = {t for t, e in tags.items() if e.action is Action.KEEP}
    assert kept == {"v1.0", "v2", "release-3", "v"}
    assert tags["release-3"].reason == "keepTags: release-*"


def test_a_digest_is_deleted_only_with_all_its_tags() -> None:
    repo = InventoryRepository(
        tags={"v1": digest(1), "build-7": digest(1), "build-8": digest(2), "tmp": digest(2)},
        manifests={digest(1): image(100), digest(2): image(100)},
    )
    result = plan({"app": repo}, {}, rules(keep_tags=("v*",)), NOW)
    tags = by_tag(result)
    assert tags["build-7"].action is Action.KEEP
    assert tags["build-7"].basis is Basis.SHARED_DIGEST
    assert tags["build-7"].reason == "digest shared with kept tag v1"
    # Two tags on one expired digest: both marked, one DELETE.
    assert tags["build-8"].action is tags["tmp"].action is Action.DELETE
    assert result.deletions == (("app", digest(2)),)


def test_images_in_use_by_tag_or_digest_are_kept() -> None:
    repo = InventoryRepository(
        tags={"web": digest(1), "job": digest(2), "free": digest(3)},
        manifests={digest(n): image(100) for n in (1, 2, 3)},
    )
    in_use = {("app", "web"): "Pod shop/web-1", ("app", digest(2)): "CronJob ops/nightly"}
    result = plan({"app": repo}, in_use, rules(), NOW)
    tags = by_tag(result)
    assert tags["web"].reason == "in use by Pod shop/web-1"
    assert tags["job"].reason == "in use by CronJob ops/nightly"
    assert tags["web"].basis is tags["job"].basis is Basis.IN_USE
    assert result.deletions == (("app", digest(3)),)
    assert (result.kept_in_use, result.kept_by_rule) == (2, 0)


def test_in_use_is_the_reason_shown_before_other_rules() -> None:
    repo = InventoryRepository(tags={"v1": digest(1)}, manifests={digest(1): image(0)})
    in_use = {("app", digest(1)): "Pod a/b"}
    tags = by_tag(plan({"app": repo}, in_use, rules(keep_tags=("v*",), keep_last=1), NOW))
    assert tags["v1"].reason == "in use by Pod a/b"


def test_in_use_elsewhere_does_not_protect_this_repository() -> None:
    repo = InventoryRepository(tags={"v1": digest(1)}, manifests={digest(1): image(100)})
    result = plan({"app": repo}, {("other", "v1"): "Pod x/y"}, rules(), NOW)
    assert result.deletions == (("app", digest(1)),)


def test_multi_platform_children_shared_with_a_kept_index_survive() -> None:
    amd, arm, arm_old = digest(11), digest(12), digest(13)
    repo = InventoryRepository(
        tags={"new": digest(1), "old": digest(2)},
        manifests={
            digest(1): index(1, amd, arm),
            digest(2): index(50, amd, arm_old),  # the amd64 image did not change
            amd: image(50),
            arm: image(1),
            arm_old: image(50),
        },
    )
    result = plan({"app": repo}, {}, rules(keep_last=1), NOW)
    assert by_tag(result)["old"].action is Action.DELETE
    children = untagged(result)
    assert children[amd].action is Action.KEEP
    assert children[amd].reason == f"referenced by kept index {short_digest(digest(1))}"
    assert children[arm_old].action is Action.DELETE
    assert children[arm_old].basis is Basis.UNTAGGED
    # The index goes before the child it names.
    assert result.deletions == (("app", digest(2)), ("app", arm_old))

    keep_untagged = plan({"app": repo}, {}, rules(keep_last=1, delete_untagged=False), NOW)
    assert keep_untagged.deletions == (("app", digest(2)),)
    assert untagged(keep_untagged)[arm_old].basis is Basis.UNTAGGED_KEPT


def test_a_child_in_use_by_digest_outlives_its_index() -> None:
    child = digest(11)
    repo = InventoryRepository(
        tags={"old": digest(1)},
        manifests={digest(1): index(50, child), child: image(50)},
    )
    result = plan({"app": repo}, {("app", child): "Pod a/b"}, rules(), NOW)
    assert result.deletions == (("app", digest(1)),)
    assert untagged(result)[child].reason == "in use by Pod a/b"


def test_a_tagged_image_inside_a_kept_index_is_kept() -> None:
    child = digest(11)
    repo = InventoryRepository(
        tags={"v1": digest(1), "amd64-only": child},
        manifests={digest(1): index(50, child), child: image(50)},
    )
    tags = by_tag(plan({"app": repo}, {}, rules(keep_tags=("v*",)), NOW))
    assert tags["amd64-only"].basis is Basis.REFERENCED


def test_unknown_age_is_kept_and_does_not_use_up_keep_last() -> None:
    repo = InventoryRepository(
        tags={"chart": digest(1), "new": digest(2), "old": digest(3), "ghost": digest(4)},
        # digest(4) is tagged but could not be described: no facts at all.
        manifests={digest(1): image(None), digest(2): image(5), digest(3): image(9)},
    )
    tags = by_tag(plan({"app": repo}, {}, rules(keep_last=1), NOW))
    assert tags["chart"].basis is tags["ghost"].basis is Basis.AGE_UNKNOWN
    assert tags["new"].basis is Basis.KEEP_LAST
    assert tags["old"].action is Action.DELETE


def test_repository_selection() -> None:
    inventory = {
        name: InventoryRepository(tags={"v1": digest(1)}, manifests={digest(1): image(100)})
        for name in ("team/app", "team/keep/db", "team/a/b", "other/app", "app")
    }
    selection = RepositorySelection(include=("team/**", "**/app"), exclude=("team/keep/*",))
    result = plan(inventory, {}, rules(repositories=selection), NOW)
    assert result.repositories == ("app", "other/app", "team/a/b", "team/app")
    assert result.excluded_repositories == ("team/keep/db",)
    assert {e.repository for e in result.entries} == set(result.repositories)


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("**", "a/b/c", True),
        ("team/*", "team/app", True),
        ("team/*", "team/a/b", False),
        ("team/**", "team/a/b", True),
        ("team/**", "team", False),
        ("**/app", "app", True),
        ("**/app", "x/y/app", True),
        ("**/app", "x/myapp", False),
        ("t*/app", "team/app", True),
        ("a.b/c", "axb/c", False),
    ],
)
def test_repository_globs(pattern: str, name: str, matches: bool) -> None:
    assert repository_glob_matches(pattern, name) is matches


def test_tag_globs_and_durations() -> None:
    assert tag_glob_matches("v*", "v1.2.3")
    assert tag_glob_matches("*-rc*", "2.0-rc1")
    assert not tag_glob_matches("v*", "xv1")
    assert not tag_glob_matches("v1.0", "v1x0")
    assert [format_duration(timedelta(seconds=s)) for s in (0, 45, 3600, 5400, 604800)] == [
        "0s",
        "45s",
        "1h",
        "1h30m",
        "168h",
    ]


# -- properties ------------------------------------------------------------------------

TAG_POOL = ["v1", "v2", "v10", "release-1", "release-2", "latest", "dev-1", "dev-2", "rc", "x"]
REPO_POOL = ["app", "team/app", "team/web", "other/db"]
GLOBS = ["**", "team/*", "team/**", "**/app", "other/*", "app"]
TIMES = [None, *(NOW - timedelta(minutes=m) for m in (1, 30, 59, 61, 120, 600, 600, 5000))]


@st.composite
def repositories(draw: st.DrawFn) -> InventoryRepository:
    manifests: dict[str, InventoryManifest] = {}
    for n in range(draw(st.integers(1, 10))):
        children: tuple[str, ...] = ()
        make_index = draw(st.booleans())
        if manifests and make_index:
            # An index over some earlier digests (possibly another index: a DAG).
            children = tuple(
                draw(st.lists(st.sampled_from(sorted(manifests)), max_size=3, unique=True))
            )
        manifests[digest(n)] = InventoryManifest(
            media_type=INDEX if children else "application/vnd.oci.image.manifest.v1+json",
            created=draw(st.sampled_from(TIMES)),
            pushed=draw(st.sampled_from(TIMES)),
            size=draw(st.integers(0, 1000)),
            children=children,
        )
    # Sometimes a tag names a digest the inventory could not describe.
    targets = [*sorted(manifests), digest(999)]
    tags = draw(st.dictionaries(st.sampled_from(TAG_POOL), st.sampled_from(targets)))
    return InventoryRepository(tags=tags, manifests=manifests)


@st.composite
def scenarios(
    draw: st.DrawFn,
) -> tuple[dict[str, InventoryRepository], dict[tuple[str, str], str], RetentionRules]:
    inventory = draw(st.dictionaries(st.sampled_from(REPO_POOL), repositories(), min_size=1))
    references = [
        (name, ref) for name, repo in inventory.items() for ref in [*repo.tags, *repo.manifests]
    ]
    in_use = {ref: "Pod ns/p" for ref in draw(st.lists(st.sampled_from(references), max_size=4))}
    retention = RetentionRules(
        keep_last=draw(st.integers(0, 4)),
        keep_younger_than=timedelta(minutes=draw(st.sampled_from([0, 30, 60, 600]))),
        keep_tags=tuple(draw(st.lists(st.sampled_from(["v*", "release-*", "*-1", "rc"])))),
        delete_untagged=draw(st.booleans()),
        repositories=RepositorySelection(
            # "**" weighs more so that most scenarios have something to decide.
            include=tuple(
                draw(st.lists(st.sampled_from(["**", "**", *GLOBS]), min_size=1, max_size=2))
            ),
            exclude=tuple(draw(st.lists(st.sampled_from(GLOBS), max_size=1))),
        ),
    )
    return inventory, in_use, retention


def reachable(start: set[str], manifests: Mapping[str, InventoryManifest]) -> set[str]:
    seen, stack = set(start), list(start)
    while stack:
        facts = manifests.get(stack.pop())
        for child in facts.children if facts else ():
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return seen


@settings(max_examples=400, deadline=None)
@given(scenarios())
def test_nothing_in_use_or_kept_is_ever_deleted(
    scenario: tuple[dict[str, InventoryRepository], dict[tuple[str, str], str], RetentionRules],
) -> None:
    inventory, in_use, retention = scenario
    result = plan(inventory, in_use, retention, NOW)
    deleted = result.deleted()
    assert len(deleted) == len(result.deletions), "a digest is deleted twice"

    for name, repo in inventory.items():
        deleted_here = {d for r, d in deleted if r == name}
        entries = [e for e in result.entries if e.repository == name]
        if not retention.repositories.selects(name):
            assert not entries
            assert not deleted_here
            continue

        # Every tag once, every untagged digest once; actions agree with the deletions.
        assert sorted(e.tag for e in entries if e.tag) == sorted(repo.tags)
        tagged = set(repo.tags.values())
        assert {e.digest for e in entries if not e.tag} == set(repo.manifests) - tagged
        for entry in entries:
            assert (entry.action is Action.DELETE) == (entry.digest in deleted_here), entry

        # Deleting by digest removes every tag of it: all of them must be marked delete.
        for tag, target in repo.tags.items():
            if target in deleted_here:
                assert not retention.keep_tags or not any(
                    tag_glob_matches(p, tag) for p in retention.keep_tags
                ), f"{tag} matches keepTags but its digest is deleted"

        # Nothing in use, and nothing an in-use image or a kept image reaches.
        used = {ref for (r, ref), _ in in_use.items() if r == name}
        used_digests = {repo.tags.get(ref, ref) for ref in used}
        assert not reachable(used_digests, repo.manifests) & deleted_here
        kept = (set(repo.manifests) | tagged) - deleted_here
        assert not reachable(kept, repo.manifests) & deleted_here

        for target in deleted_here:
            facts = repo.manifests.get(target)
            assert facts is not None, "an undescribed digest was deleted"
            times = [t for t in (facts.created, facts.pushed) if t]
            assert times, "an image of unknown age was deleted"
            assert NOW - max(times) >= retention.keep_younger_than
            if target in tagged:
                # keepLast: at least keep_last kept tagged images are at least as new.
                when = facts.created or facts.pushed
                assert when is not None
                newer_kept = [
                    d
                    for d in tagged - deleted_here
                    if (f := repo.manifests.get(d)) and (f.created or f.pushed or when) >= when
                ]
                assert len(newer_kept) >= retention.keep_last
            else:
                assert retention.delete_untagged

        # An index is deleted before any child of it that is deleted too.
        order = [d for r, d in result.deletions if r == name]
        for position, target in enumerate(order):
            facts = repo.manifests[target]
            for child in facts.children:
                if child in deleted_here:
                    assert order.index(child) > position


@settings(max_examples=100, deadline=None)
@given(scenarios())
def test_a_longer_retention_never_deletes_more(
    scenario: tuple[dict[str, InventoryRepository], dict[tuple[str, str], str], RetentionRules],
) -> None:
    inventory, in_use, retention = scenario
    stricter = plan(inventory, in_use, retention, NOW).deleted()
    looser = RetentionRules(
        keep_last=retention.keep_last + 1,
        keep_younger_than=retention.keep_younger_than + timedelta(hours=1),
        keep_tags=(*retention.keep_tags, "dev-*"),
        delete_untagged=retention.delete_untagged,
        repositories=retention.repositories,
    )
    assert plan(inventory, in_use, looser, NOW).deleted() <= stricter
