"""Renders the jinja2 templates (one per child object) into manifests."""

from __future__ import annotations

import json
from typing import Any, Final

import jinja2
import yaml

from berth.constants import (
    LABEL_COMPONENT,
    LABEL_INSTANCE,
    LABEL_MANAGED_BY,
    LABEL_NAME,
    LABEL_PART_OF,
    MANAGED_BY,
)

_ENV: Final = jinja2.Environment(
    loader=jinja2.PackageLoader("berth.resources", "templates"),
    undefined=jinja2.StrictUndefined,
    autoescape=False,  # noqa: S701 - YAML, not HTML; values go through the `q` filter
    keep_trailing_newline=True,
)
# JSON is YAML: `{{ value | q }}` quotes any string, list or map safely.
_ENV.filters["q"] = lambda value: json.dumps(value, sort_keys=True)


def selector_labels(instance: str, component: str, name: str = "registry") -> dict[str, str]:
    return {LABEL_NAME: name, LABEL_INSTANCE: instance, LABEL_COMPONENT: component}


def labels(instance: str, component: str, name: str = "registry") -> dict[str, str]:
    """The standard app.kubernetes.io labels every child carries."""
    return {
        **selector_labels(instance, component, name),
        LABEL_MANAGED_BY: MANAGED_BY,
        LABEL_PART_OF: MANAGED_BY,
    }


def render(template: str, **context: Any) -> dict[str, Any]:
    """Render one template into one manifest and check that it is a whole object."""
    text = _ENV.get_template(template).render(**context)
    manifest = yaml.safe_load(text)
    if not isinstance(manifest, dict):
        raise ValueError(f"{template} did not render to a mapping")
    for field in ("apiVersion", "kind"):
        if not manifest.get(field):
            raise ValueError(f"{template} rendered without {field}")
    if not (manifest.get("metadata") or {}).get("name"):
        raise ValueError(f"{template} rendered without metadata.name")
    return manifest


def owned_by(manifest: dict[str, Any], owner: dict[str, Any]) -> dict[str, Any]:
    """Add a controller ownerReference so deleting the owner garbage-collects the child."""
    metadata = owner["metadata"]
    manifest["metadata"]["ownerReferences"] = [
        {
            "apiVersion": owner["apiVersion"],
            "kind": owner["kind"],
            "name": metadata["name"],
            "uid": metadata["uid"],
            "controller": True,
            "blockOwnerDeletion": True,
        }
    ]
    return manifest


def rights(
    name: str,
    labels: dict[str, str],
    rules: list[dict[str, Any]],
    subject: tuple[str, str],
    namespace: str | None = None,
) -> list[dict[str, Any]]:
    """`rules` for the ServiceAccount `subject` (namespace, name): a Role and its
    RoleBinding in `namespace`, or, without one, a ClusterRole and ClusterRoleBinding."""
    subject_namespace, subject_name = subject
    scope = "role" if namespace is not None else "clusterrole"
    where = {"namespace": namespace} if namespace is not None else {}
    return [
        render(f"common/{scope}.yaml.j2", name=name, labels=labels, rules=rules, **where),
        render(
            f"common/{scope}binding.yaml.j2",
            name=name,
            labels=labels,
            subject=subject_name,
            subject_namespace=subject_namespace,
            **where,
        ),
    ]
