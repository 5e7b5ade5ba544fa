"""What an identity may do: repository globs, token-request scopes and their intersection.

The registry asks for access in scopes (`repository:team-a/app:pull,push`); a grant says
which repositories (globs) allow which actions. The token lists, per requested scope,
only the actions both ask for and allow; a scope nothing allows is left out, and the
registry then refuses the request itself.

Repository globs follow `berth.api.common.glob_to_regex`, the grammar the API documents.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, Literal, get_args

from berth.api.common import expand_namespace, glob_match

Action = Literal["pull", "push", "delete"]
# Canonical order of actions in a token: the order clients and the registry print them.
ACTIONS: Final[tuple[Action, ...]] = get_args(Action)
PULL: Final = "pull"
PUSH: Final = "push"
WILDCARD_ACTION: Final = "*"

REPOSITORY_TYPE: Final = "repository"
REGISTRY_TYPE: Final = "registry"
CATALOG_NAME: Final = "catalog"

_REPOSITORY_COMPONENT: Final = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_NAME: Final = re.compile(rf"{_REPOSITORY_COMPONENT}(?:/{_REPOSITORY_COMPONENT})*")
MAX_REPOSITORY_NAME_LENGTH: Final = 255
_GLOB_SEGMENT: Final = r"(?:[a-z0-9._*-]|\{namespace\})+"
REPOSITORY_GLOB: Final = re.compile(rf"{_GLOB_SEGMENT}(?:/{_GLOB_SEGMENT})*")


class ScopeError(ValueError):
    """A scope parameter that does not follow `type:name:action[,action...]`."""


def is_repository_name(name: str) -> bool:
    return len(name) <= MAX_REPOSITORY_NAME_LENGTH and REPOSITORY_NAME.fullmatch(name) is not None


@dataclass(frozen=True)
class Scope:
    """One resource and the actions asked for (or granted) on it."""

    type: str
    name: str
    actions: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.type}:{self.name}:{','.join(self.actions)}"

    def claim(self) -> dict[str, object]:
        """The scope as an entry of the JWT `access` claim."""
        return {"type": self.type, "name": self.name, "actions": list(self.actions)}


def parse_scope(text: str) -> Scope:
    """Parse `type:name:actions`. The name may itself contain colons (a registry host
    with a port), so the type ends at the first colon and the actions start after the
    last one."""
    resource_type, separator, rest = text.partition(":")
    name, second_separator, action_list = rest.rpartition(":")
    if not (separator and second_separator and resource_type and name and action_list):
        raise ScopeError(f"malformed scope {text!r}: expected type:name:action[,action]")
    actions = tuple(dict.fromkeys(a.strip() for a in action_list.split(",") if a.strip()))
    if not actions:
        raise ScopeError(f"malformed scope {text!r}: no actions")
    return Scope(resource_type, name, actions)


def parse_scopes(values: Iterable[str]) -> list[Scope]:
    """All scopes of a token request, one per resource with the union of its actions.

    The distribution spec sends one `scope` parameter per resource; OAuth2 clients send
    several scopes space-separated in one parameter. Both are accepted.
    """
    merged: dict[tuple[str, str], dict[str, None]] = {}
    for value in values:
        for text in value.split():
            scope = parse_scope(text)
            merged.setdefault((scope.type, scope.name), {}).update(dict.fromkeys(scope.actions))
    return [Scope(kind, name, tuple(actions)) for (kind, name), actions in merged.items()]


@dataclass(frozen=True)
class Rule:
    """A grant with its globs expanded and its actions closed under "push implies pull"."""

    patterns: tuple[str, ...]
    actions: frozenset[str]

    @classmethod
    def build(
        cls, repositories: Iterable[str], actions: Iterable[str], namespace: str | None
    ) -> Rule:
        allowed = set(actions)
        if PUSH in allowed:
            allowed.add(PULL)  # pushing a layer needs to read it back (HEAD, mounts)
        return cls(
            tuple(expand_namespace(pattern, namespace) for pattern in repositories),
            frozenset(allowed),
        )

    def covers(self, repository: str) -> bool:
        return any(glob_match(pattern, repository) for pattern in self.patterns)


def allowed_actions(rules: Iterable[Rule], repository: str) -> frozenset[str]:
    allowed: set[str] = set()
    for rule in rules:
        if rule.covers(repository):
            allowed |= rule.actions
    return frozenset(allowed)


def authorize(scopes: Sequence[Scope], rules: Sequence[Rule], *, catalog: bool) -> list[Scope]:
    """The scopes to put in a token: each requested scope cut down to what `rules` allow.

    A requested `*` on a repository stands for every action the rules allow there, listed
    explicitly because the registry checks named actions. `registry:catalog:*` (listing
    every repository) is granted only to identities marked `catalog`; every other
    resource type is never granted.
    """
    granted: list[Scope] = []
    for scope in scopes:
        if scope.type == REPOSITORY_TYPE:
            if not is_repository_name(scope.name):
                continue
            allowed = allowed_actions(rules, scope.name)
            wanted = allowed if WILDCARD_ACTION in scope.actions else set(scope.actions)
            actions = tuple(a for a in ACTIONS if a in wanted and a in allowed)
            if actions:
                granted.append(Scope(scope.type, scope.name, actions))
        elif (
            scope.type == REGISTRY_TYPE
            and scope.name == CATALOG_NAME
            and WILDCARD_ACTION in scope.actions
            and catalog
        ):
            granted.append(Scope(REGISTRY_TYPE, CATALOG_NAME, (WILDCARD_ACTION,)))
    return granted
