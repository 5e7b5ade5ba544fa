"""Pure builders for access: which namespaces a Registry's grants select, what each may
do, and the pull Secrets, token-server configuration and htpasswd file that follow."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from berth.api.common import LabelSelector, expand_namespace, glob_match
from berth.api.registry import AccessGrant, Permission
from berth.constants import ANNOTATION_PULL_SECRETS
from berth.resources.registry import secret
from berth.resources.render import labels, owned_by, render

LABEL_REGISTRY: Final = "berth.dev/registry"
LABEL_REGISTRY_NAMESPACE: Final = "berth.dev/registry-namespace"
ANNOTATION_ROBOT: Final = "berth.dev/robot"
PULL_SECRETS_DISABLED: Final = "disabled"
ALL_SERVICE_ACCOUNTS: Final = "*"


@dataclass(frozen=True)
class NamespaceAccess:
    """What one namespace gets from one Registry: the union of the grants selecting it."""

    namespace: str
    actions: tuple[str, ...]
    repositories: tuple[str, ...]
    service_accounts: tuple[str, ...]

    def grant(self) -> dict[str, Any]:
        return {"repositories": list(self.repositories), "actions": list(self.actions)}


def _matches(selector: LabelSelector, namespace_labels: Mapping[str, str]) -> bool:
    for key, value in (selector.match_labels or {}).items():
        if namespace_labels.get(key) != value:
            return False
    for requirement in selector.match_expressions or []:
        present = requirement.key in namespace_labels
        actual = namespace_labels.get(requirement.key)
        values = set(requirement.values or [])
        operator = requirement.operator
        if (
            (operator == "In" and actual not in values)
            or (operator == "NotIn" and present and actual in values)
            or (operator == "Exists" and not present)
            or (operator == "DoesNotExist" and present)
        ):
            return False
    return True


def _selects(grant: AccessGrant, name: str, namespace_labels: Mapping[str, str]) -> bool:
    if grant.namespaces is not None:
        return name in grant.namespaces
    assert grant.namespace_selector is not None
    return _matches(grant.namespace_selector, namespace_labels)


def namespace_may(
    grants: Iterable[AccessGrant],
    registry_namespace: str,
    namespace: Mapping[str, Any],
    repository: str,
    permission: Permission,
) -> bool:
    """Whether `namespace` (the object) may pull from, or push to, `repository` by the
    Registry's grants. The Registry's own namespace may do anything: whoever can edit the
    Registry can grant it anything. Unlike select_namespaces, grants are not merged: a
    push needs one grant that gives push and covers the repository."""
    metadata = namespace.get("metadata") or {}
    name = str(metadata.get("name"))
    if name == registry_namespace:
        return True
    namespace_labels = metadata.get("labels") or {}
    for grant in grants:
        if permission is Permission.PUSH and grant.permission is not Permission.PUSH:
            continue
        if not _selects(grant, name, namespace_labels):
            continue
        if any(glob_match(expand_namespace(r, name), repository) for r in grant.repositories):
            return True
    return False


def select_namespaces(
    grants: Iterable[AccessGrant], namespaces: Iterable[Mapping[str, Any]]
) -> dict[str, NamespaceAccess]:
    """Namespaces the grants select, minus those that opted out or are terminating."""
    merged: dict[str, tuple[set[str], set[str], set[str]]] = {}
    grants = list(grants)
    for namespace in namespaces:
        metadata = namespace.get("metadata") or {}
        name = str(metadata.get("name"))
        annotations = metadata.get("annotations") or {}
        if annotations.get(ANNOTATION_PULL_SECRETS) == PULL_SECRETS_DISABLED:
            continue
        if (
            metadata.get("deletionTimestamp")
            or (namespace.get("status") or {}).get("phase") == "Terminating"
        ):
            continue
        namespace_labels = metadata.get("labels") or {}
        for grant in grants:
            if not _selects(grant, name, namespace_labels):
                continue
            actions, repositories, accounts = merged.setdefault(name, (set(), set(), set()))
            actions.add("pull")
            if grant.permission is Permission.PUSH:
                actions.add("push")
            repositories.update(expand_namespace(r, name) for r in grant.repositories)
            accounts.update(grant.service_accounts)
    return {
        name: NamespaceAccess(
            name,
            tuple(a for a in ("pull", "push") if a in actions),
            tuple(sorted(repositories)),
            tuple(sorted(accounts)),
        )
        for name, (actions, repositories, accounts) in sorted(merged.items())
    }


def pull_secret_name(registry_namespace: str, registry_name: str) -> str:
    name = f"berth-{registry_namespace}-{registry_name}"
    if len(name) <= 253:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:10]
    return f"{name[:242]}-{digest}"


def registry_labels(registry_namespace: str, registry_name: str) -> dict[str, str]:
    return {
        **labels(registry_name, "pull-secret"),
        LABEL_REGISTRY: registry_name,
        LABEL_REGISTRY_NAMESPACE: registry_namespace,
    }


def registry_selector(registry_namespace: str, registry_name: str) -> str:
    return f"{LABEL_REGISTRY}={registry_name},{LABEL_REGISTRY_NAMESPACE}={registry_namespace}"


def pull_secret(
    *,
    registry_namespace: str,
    registry_name: str,
    namespace: str,
    dockerconfigjson: bytes,
    robot: str,
) -> dict[str, Any]:
    return render(
        "access/pull-secret.yaml.j2",
        name=pull_secret_name(registry_namespace, registry_name),
        namespace=namespace,
        labels=registry_labels(registry_namespace, registry_name),
        robot_annotation=ANNOTATION_ROBOT,
        robot=robot,
        data=base64.b64encode(dockerconfigjson).decode(),
    )


def robots_secret(owner: dict[str, Any], name: str, robots_json: str) -> dict[str, Any]:
    """The Registry's own record of its robots: usernames, bcrypt hashes, phases."""
    metadata = owner["metadata"]
    return owned_by(
        secret(
            metadata["namespace"],
            name,
            labels(metadata["name"], "access"),
            "Opaque",
            {"robots.json": base64.b64encode(robots_json.encode()).decode()},
        ),
        owner,
    )
