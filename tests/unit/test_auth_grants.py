"""Repository globs, scope parsing and the intersection of requested and granted actions."""

from __future__ import annotations

import pytest
from hypothesis import strategies as st

from berth.auth.grants import (
    Rule,
    Scope,
    ScopeError,
    authorize,
    glob_match,
    is_repository_name,
    parse_scope,
    parse_scopes,
)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("team-a/**", "team-a/app", True),
        ("team-a/**", "team-a/x/y", True),
        ("team-a/**", "team-b/app", False),
        ("team-a/**", "team-a", False),
        ("team-a/**", "team-ab/app", False),
        ("team-a/*", "team-a/app", True),
        ("team-a/*", "team-a/x/y", False),
        ("team-a/app-*", "team-a/app-web", True),
        ("team-a/app-*", "team-a/web", False),
        ("*/app", "team-a/app", True),
        ("*/app", "a/b/app", False),
        ("**/app", "app", True),
        ("**/app", "x/y/app", True),
        ("**/app", "x/y/app2", False),
        ("team-a/**/cache", "team-a/cache", True),
        ("team-a/**/cache", "team-a/a/b/cache", True),
        ("**", "anything/at/all", True),
        ("team-a", "team-a", True),
        ("team-a", "team-a/app", False),
        ("team.a/*", "teamxa/app", False),  # a dot is literal, not a regex wildcard
    ],
)
def test_glob_match(pattern: str, name: str, expected: bool) -> None:
    assert glob_match(pattern, name) is expected


_segment = st.from_regex(r"[a-z0-9]{1,3}", fullmatch=True)
_glob_segment = st.one_of(_segment, st.sampled_from(["*", "**", "a*", "*b"]))


def test_parse_scope_with_several_actions() -> None:
    assert parse_scope("repository:a/b:pull,push") == Scope("repository", "a/b", ("pull", "push"))


def test_parse_scope_keeps_colons_in_the_name() -> None:
    scope = parse_scope("repository:localhost:5000/team/app:pull")
    assert scope == Scope("repository", "localhost:5000/team/app", ("pull",))


def test_parse_scope_deduplicates_actions() -> None:
    assert parse_scope("repository:a:pull,pull,push").actions == ("pull", "push")


@pytest.mark.parametrize(
    "text", ["", "repository", "repository:a/b", "repository::pull", ":a:pull", "repository:a:,"]
)
def test_parse_scope_rejects_malformed(text: str) -> None:
    with pytest.raises(ScopeError):
        parse_scope(text)


def test_parse_scopes_merges_parameters_and_space_separated_lists() -> None:
    scopes = parse_scopes(
        [
            "repository:team-a/app:pull",
            "repository:team-a/app:push repository:team-a/web:pull",
            "registry:catalog:*",
        ]
    )
    assert scopes == [
        Scope("repository", "team-a/app", ("pull", "push")),
        Scope("repository", "team-a/web", ("pull",)),
        Scope("registry", "catalog", ("*",)),
    ]


def test_parse_scopes_of_no_parameters_is_empty() -> None:
    assert parse_scopes([]) == []


def test_push_grant_implies_pull_but_not_delete() -> None:
    rules = [Rule.build(["team-a/**"], ["push"], "team-a")]
    granted = authorize(
        [Scope("repository", "team-a/app", ("pull", "push", "delete"))], rules, catalog=False
    )
    assert granted == [Scope("repository", "team-a/app", ("pull", "push"))]


def test_grant_is_the_intersection_per_repository() -> None:
    rules = [
        Rule.build(["team-a/**"], ["pull"], "team-a"),
        Rule.build(["team-a/builds/*"], ["push"], "team-a"),
    ]
    requested = [
        Scope("repository", "team-a/app", ("pull", "push")),
        Scope("repository", "team-a/builds/web", ("push",)),
        Scope("repository", "team-b/app", ("pull",)),
        Scope("repository", "team-a", ("pull",)),
    ]
    assert authorize(requested, rules, catalog=False) == [
        Scope("repository", "team-a/app", ("pull",)),
        Scope("repository", "team-a/builds/web", ("push",)),
    ]


def test_namespace_placeholder_expands_to_the_identity_namespace() -> None:
    rules = [Rule.build(["{namespace}/**"], ["pull"], "team-c")]
    requested = [Scope("repository", n, ("pull",)) for n in ("team-c/app", "team-a/app")]
    assert authorize(requested, rules, catalog=False) == [requested[0]]


def test_wildcard_action_expands_to_what_the_rules_allow() -> None:
    rules = [Rule.build(["team-a/**"], ["push", "delete"], "team-a")]
    granted = authorize([Scope("repository", "team-a/app", ("*",))], rules, catalog=False)
    assert granted == [Scope("repository", "team-a/app", ("pull", "push", "delete"))]


def test_catalog_is_refused_unless_the_identity_may_list() -> None:
    rules = [Rule.build(["**"], ["push", "delete"], None)]
    catalog = [Scope("registry", "catalog", ("*",))]
    assert authorize(catalog, rules, catalog=False) == []
    assert authorize(catalog, rules, catalog=True) == catalog


def test_other_resource_types_and_invalid_names_are_never_granted() -> None:
    rules = [Rule.build(["**"], ["push"], None)]
    requested = [
        Scope("repository(plugin)", "team-a/app", ("pull",)),
        Scope("registry", "other", ("*",)),
        Scope("repository", "Team-A/App", ("pull",)),
        Scope("repository", "team-a/../b", ("pull",)),
        Scope("repository", "team-a/app", ("frobnicate",)),
    ]
    assert authorize(requested, rules, catalog=True) == []


@pytest.mark.parametrize(
    ("name", "valid"),
    [("team-a/app", True), ("a/b/c.d_e", True), ("A/b", False), ("a//b", False), ("a/", False)],
)
def test_repository_names(name: str, valid: bool) -> None:
    assert is_repository_name(name) is valid
