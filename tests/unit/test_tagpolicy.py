"""The pure parts of the TagPolicy reconciler: permissions, dependency order,
immutability, the repository index."""

from __future__ import annotations

from typing import Any

import pytest

from berth.api.registry import AccessGrant, Permission
from berth.api.tagpolicy import TagPolicySpec, TagSpec
from berth.reconcile.invalid import InvalidSpec
from berth.reconcile.tagpolicy import (
    RepositoryIndex,
    dependency_order,
    is_immutable,
    policy_repository,
    source_label,
)
from berth.resources.access import namespace_may


def _ns(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}}


def _grant(**fields: Any) -> AccessGrant:
    return AccessGrant.model_validate(fields)


def test_the_registry_namespace_may_push_anywhere() -> None:
    assert namespace_may([], "infra", _ns("infra"), "anything/at/all", Permission.PUSH)
    assert not namespace_may([], "infra", _ns("team-a"), "team-a/web", Permission.PULL)


def test_a_push_grant_covers_its_repositories_only() -> None:
    grants = [_grant(namespaces=["team-a"], permission="push")]  # {namespace}/** by default
    assert namespace_may(grants, "infra", _ns("team-a"), "team-a/web", Permission.PUSH)
    assert namespace_may(grants, "infra", _ns("team-a"), "team-a/web", Permission.PULL)
    assert not namespace_may(grants, "infra", _ns("team-a"), "team-b/web", Permission.PUSH)
    assert not namespace_may(grants, "infra", _ns("team-b"), "team-b/web", Permission.PUSH)


def test_pull_and_push_grants_are_not_merged() -> None:
    # Pull everything, push only to base/**: pushing to shared/x is not allowed, though a
    # merged view (pull+push over **) would say it is.
    grants = [
        _grant(namespaces=["team-a"], permission="pull", repositories=["**"]),
        _grant(namespaces=["team-a"], permission="push", repositories=["base/**"]),
    ]
    assert namespace_may(grants, "infra", _ns("team-a"), "shared/x", Permission.PULL)
    assert not namespace_may(grants, "infra", _ns("team-a"), "shared/x", Permission.PUSH)
    assert namespace_may(grants, "infra", _ns("team-a"), "base/x", Permission.PUSH)


def test_grants_select_namespaces_by_label() -> None:
    grants = [
        _grant(
            namespaceSelector={"matchLabels": {"tier": "apps"}},
            permission="push",
            repositories=["{namespace}/*"],
        )
    ]
    assert namespace_may(grants, "infra", _ns("shop", tier="apps"), "shop/web", Permission.PUSH)
    assert not namespace_may(grants, "infra", _ns("shop", tier="apps"), "shop/a/b", Permission.PUSH)
    assert not namespace_may(grants, "infra", _ns("shop"), "shop/web", Permission.PUSH)


def _spec(**fields: Any) -> TagPolicySpec:
    return TagPolicySpec.model_validate({"registryRef": {"name": "r"}, **fields})


def test_tags_follow_their_sources_in_order() -> None:
    spec = _spec(
        tags=[
            {"name": "prod", "from": {"tag": "stage"}},
            {"name": "stage", "from": {"tag": "dev"}},
            {"name": "dev"},
            {"name": "mirror", "from": {"image": "docker.io/library/nginx:1.27"}},
            {"name": "other", "from": {"repository": "x/y", "tag": "prod"}},
        ]
    )
    order = [t.name for t in dependency_order(spec.tags or [])]
    assert order.index("dev") < order.index("stage") < order.index("prod")
    assert sorted(order) == ["dev", "mirror", "other", "prod", "stage"]


def test_a_cycle_of_tags_is_refused_with_its_path() -> None:
    spec = _spec(
        tags=[
            {"name": "a", "from": {"tag": "b"}},
            {"name": "b", "from": {"tag": "c"}},
            {"name": "c", "from": {"tag": "a"}},
        ]
    )
    with pytest.raises(InvalidSpec, match=r"cycle: a -> b -> c -> a"):
        dependency_order(spec.tags or [])


def test_immutability_by_flag_or_glob() -> None:
    spec = _spec(tags=[{"name": "stable", "immutable": True}], immutableTags=["v*"])
    assert is_immutable("stable", spec)
    assert is_immutable("v1.2.3", spec)
    assert not is_immutable("latest", spec)


def test_sources_and_default_repository() -> None:
    spec = _spec(tags=[{"name": "stage", "from": {"tag": "dev"}}])
    assert policy_repository("team-a", "web", spec) == "team-a/web"
    assert policy_repository("team-a", "web", _spec(repository="team-a/x")) == "team-a/x"
    stage = (spec.tags or [])[0]
    assert source_label(stage, "team-a/web") == "team-a/web:dev"
    image = TagSpec.model_validate({"name": "m", "from": {"image": "nginx:1.27"}})
    assert source_label(image, "team-a/web") == "nginx:1.27"
    assert source_label(TagSpec(name="plain"), "team-a/web") is None


def test_the_index_finds_policies_by_registry_and_repository() -> None:
    index = RepositoryIndex()
    index.track(("team-a", "web"), ("infra", "main"), ["team-a/web"])
    # A policy that promotes from team-a/web is woken by pushes there too.
    index.track(("team-a", "release"), ("infra", "main"), ["team-a/release", "team-a/web"])
    index.track(("team-b", "web"), ("infra", "other"), ["team-a/web"])
    assert index.policies(("infra", "main"), "team-a/web") == [
        ("team-a", "release"),
        ("team-a", "web"),
    ]
    assert index.policies(("infra", "main"), "team-a/release") == [("team-a", "release")]
    # A policy that changes its repositories moves; a deleted one is forgotten.
    index.track(("team-a", "release"), ("infra", "main"), ["team-a/release"])
    index.forget(("team-a", "web"))
    assert index.policies(("infra", "main"), "team-a/web") == []
