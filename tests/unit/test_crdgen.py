"""The CRD generator: committed files match the models, and the schemas are structural."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, Field

from berth.api import crdgen
from berth.api.common import BerthModel, FreeForm
from berth.constants import GROUP, VERSION

ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = ROOT / "crds"
GENERATED = crdgen.crds()
PLURALS = {"Registry": "registries", "TagPolicy": "tagpolicies", "PruneSchedule": "pruneschedules"}


def schema_of(kind: str) -> dict[str, Any]:
    definition = GENERATED[f"{GROUP}_{PLURALS[kind]}.yaml"]
    return definition["spec"]["versions"][0]["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def at(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The sub-schema at a dotted path; `[]` steps into list items."""
    node = schema
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node with its path (properties by name, items as [])."""
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from walk(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


ALL_NODES = [(f"{kind}:{path}", node) for kind in PLURALS for path, node in walk(schema_of(kind))]


def test_committed_crds_match_the_models() -> None:
    """The drift check: crds/ must be exactly what the models generate."""
    expected = crdgen.rendered()
    committed = {path.name for path in CRDS_DIR.glob("*.yaml")}
    assert committed == set(expected), (
        f"crds/ holds {sorted(committed)}, the models generate {sorted(expected)}; run `make crds`"
    )
    for name, text in expected.items():
        assert (CRDS_DIR / name).read_text(encoding="utf-8") == text, (
            f"crds/{name} is out of date with operator/berth/api; run `make crds` and commit it"
        )


def test_generation_is_deterministic() -> None:
    assert crdgen.rendered() == crdgen.rendered()


def test_check_mode_reports_stale_files(tmp_path: Path) -> None:
    lines: list[str] = []
    assert crdgen.main([str(tmp_path)], out=lines.append) == 0
    assert len(lines) == 3
    assert crdgen.main(["--check", str(tmp_path)], out=lines.append) == 0
    stale = tmp_path / f"{GROUP}_registries.yaml"
    stale.write_text(stale.read_text() + "# edited\n")
    reported: list[str] = []
    assert crdgen.main(["--check", str(tmp_path)], out=reported.append) == 1
    assert len(reported) == 1
    assert "registries" in reported[0]
    assert "make crds" in reported[0]


@pytest.mark.parametrize("kind", PLURALS)
def test_crd_identity(kind: str) -> None:
    definition = GENERATED[f"{GROUP}_{PLURALS[kind]}.yaml"]
    assert definition["apiVersion"] == "apiextensions.k8s.io/v1"
    assert definition["metadata"]["name"] == f"{PLURALS[kind]}.{GROUP}"
    spec = definition["spec"]
    assert spec["group"] == GROUP
    assert spec["scope"] == "Namespaced"
    assert spec["names"]["kind"] == kind
    assert spec["names"]["categories"] == ["berth"]
    [version] = spec["versions"]
    assert version["name"] == VERSION
    assert version["served"] is True
    assert version["storage"] is True
    assert version["subresources"] == {"status": {}}
    columns = {column["name"]: column for column in version["additionalPrinterColumns"]}
    assert columns["Ready"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].status'
    assert columns["Reason"]["jsonPath"] == '.status.conditions[?(@.type=="Ready")].reason'
    assert columns["Age"] == {
        "name": "Age",
        "type": "date",
        "jsonPath": ".metadata.creationTimestamp",
    }


def test_short_names() -> None:
    short = {
        kind: GENERATED[f"{GROUP}_{plural}.yaml"]["spec"]["names"]["shortNames"]
        for kind, plural in PLURALS.items()
    }
    assert short == {"Registry": ["reg"], "TagPolicy": ["tp"], "PruneSchedule": ["ps"]}


def test_registry_shows_its_endpoint() -> None:
    version = GENERATED[f"{GROUP}_registries.yaml"]["spec"]["versions"][0]
    paths = [column["jsonPath"] for column in version["additionalPrinterColumns"]]
    assert ".status.endpoint.internal" in paths


@pytest.mark.parametrize(("where", "node"), ALL_NODES, ids=[where for where, _ in ALL_NODES])
def test_every_node_is_structural(where: str, node: dict[str, Any]) -> None:
    forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "title", "nullable", "const"}
    assert not forbidden & node.keys(), f"{where}: {sorted(forbidden & node.keys())}"
    assert "type" in node or node.get("x-kubernetes-int-or-string"), f"{where} has no type"
    assert not ("properties" in node and "additionalProperties" in node), where
    assert node.get("additionalProperties") is not False, where
    if node.get("type") == "object" and "properties" not in node:
        free_form = node.get("x-kubernetes-preserve-unknown-fields") is True
        assert free_form or "additionalProperties" in node or where.endswith(":metadata"), (
            f"{where}: an object without properties must be a map or free-form"
        )


@pytest.mark.parametrize("kind", PLURALS)
def test_every_field_is_documented(kind: str) -> None:
    """Descriptions become `kubectl explain` text: no field goes without one."""
    undocumented = [
        path
        for path, node in walk(schema_of(kind))
        if path.startswith(("spec", "status"))
        and not path.endswith(("[]", "{}"))
        and not node.get("description", "").strip()
    ]
    assert not undocumented


def test_descriptions_are_single_lines() -> None:
    for where, node in ALL_NODES:
        description = node.get("description", "")
        assert description == " ".join(description.split()), where


@pytest.mark.parametrize(("where", "node"), ALL_NODES, ids=[where for where, _ in ALL_NODES])
def test_bounded_for_cel_cost(where: str, node: dict[str, Any]) -> None:
    """Spec lists and strings carry maxItems/maxLength so CEL rules stay within budget."""
    if ":spec" not in where:
        return
    if node.get("type") == "array":
        assert "maxItems" in node, f"{where} needs maxItems"
    if node.get("type") == "string" and "enum" not in node:
        assert "maxLength" in node, f"{where} needs maxLength"


def test_conditions_are_list_maps_keyed_by_type() -> None:
    paths = ["status.conditions", "status.tags.[].conditions"]
    found = 0
    for kind in PLURALS:
        for path in paths:
            try:
                node = at(schema_of(kind), path)
            except KeyError:
                continue
            found += 1
            assert node["x-kubernetes-list-type"] == "map"
            assert node["x-kubernetes-list-map-keys"] == ["type"]
            item = node["items"]
            assert set(item["required"]) >= {"type", "status", "lastTransitionTime", "reason"}
            assert item["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
            assert item["properties"]["lastTransitionTime"]["format"] == "date-time"
    assert found == 4  # three kinds, plus per-tag conditions of TagPolicy


def test_tags_are_list_maps_keyed_by_name() -> None:
    tags = at(schema_of("TagPolicy"), "spec.tags")
    assert tags["x-kubernetes-list-type"] == "map"
    assert tags["x-kubernetes-list-map-keys"] == ["name"]
    assert tags["items"]["required"] == ["name"]


@pytest.mark.parametrize(
    ("kind", "path", "default"),
    [
        ("Registry", "spec.managementState", "Managed"),
        ("Registry", "spec.replicas", 1),
        ("Registry", "spec.tls", {"mode": "SelfSigned"}),
        ("Registry", "spec.tls.mode", "SelfSigned"),
        ("Registry", "spec.auth", {"mode": "Token"}),
        ("Registry", "spec.auth.mode", "Token"),
        ("Registry", "spec.credentialRotation.period", "720h"),
        ("Registry", "spec.expose.service.port", 5000),
        ("Registry", "spec.storage.pvc.accessModes", ["ReadWriteOnce"]),
        ("Registry", "spec.access.[].serviceAccounts", ["default"]),
        ("Registry", "spec.access.[].repositories", ["{namespace}/**"]),
        ("TagPolicy", "spec.historyLimit", 10),
        (
            "TagPolicy",
            "spec.tags.[].importPolicy",
            {"scheduled": False, "interval": "15m", "insecure": False},
        ),
        ("TagPolicy", "spec.tags.[].importPolicy.interval", "15m"),
        ("PruneSchedule", "spec.schedule", "0 3 * * *"),
        (
            "PruneSchedule",
            "spec.retention",
            {"keepLast": 3, "keepYoungerThan": "60m", "deleteUntagged": True},
        ),
        ("PruneSchedule", "spec.repositories", {"include": ["**"]}),
        ("PruneSchedule", "spec.retention.keepLast", 3),
        ("PruneSchedule", "spec.retention.keepYoungerThan", "60m"),
        ("PruneSchedule", "spec.retention.deleteUntagged", True),
        ("PruneSchedule", "spec.repositories.include", ["**"]),
        ("PruneSchedule", "spec.protectInUse", True),
        ("PruneSchedule", "spec.garbageCollect.enabled", True),
        ("PruneSchedule", "spec.successfulJobsHistoryLimit", 3),
    ],
)
def test_schema_defaults(kind: str, path: str, default: Any) -> None:
    assert at(schema_of(kind), path)["default"] == default


def test_optional_fields_have_no_null_default() -> None:
    for where, node in ALL_NODES:
        assert "default" not in node or node["default"] is not None, where


def test_empty_collections_are_not_defaults_and_status_has_none() -> None:
    for where, node in ALL_NODES:
        if ":status" in where:
            assert "default" not in node, where
        assert node.get("default") not in ([], {}) or node.get("type") == "object", where


def test_free_form_fields_preserve_unknown_fields() -> None:
    registry = schema_of("Registry")
    for path in ("spec.resources", "spec.affinity", "spec.tolerations.[]"):
        node = at(registry, path)
        assert node["type"] == "object"
        assert node["x-kubernetes-preserve-unknown-fields"] is True
    for path in ("spec.nodeSelector", "spec.podAnnotations"):
        assert at(registry, path)["additionalProperties"]["type"] == "string"
    assert at(schema_of("PruneSchedule"), "spec.resources")["x-kubernetes-preserve-unknown-fields"]


def rules(kind: str) -> list[tuple[str, dict[str, str]]]:
    return [
        (path, rule)
        for path, node in walk(schema_of(kind))
        for rule in node.get("x-kubernetes-validations", [])
    ]


@pytest.mark.parametrize("kind", PLURALS)
def test_cel_messages_name_a_field(kind: str) -> None:
    for path, rule in rules(kind):
        assert rule["message"].startswith("spec."), (path, rule)
        assert rule["rule"].strip(), path


def test_registry_cel_rules_sit_where_expected() -> None:
    by_path: dict[str, list[str]] = {}
    for path, rule in rules("Registry"):
        by_path.setdefault(path, []).append(rule["message"])
    assert any("exactly one of emptyDir, pvc or s3" in m for m in by_path["spec.storage"])
    assert any("ReadWriteOnce" in m for m in by_path["spec"])
    assert any("spec.external.url is required" in m for m in by_path["spec"])
    assert any("spec.tls.secretName" in m for m in by_path["spec.tls"])


def test_tag_source_rule() -> None:
    [rule] = [rule for path, rule in rules("TagPolicy") if path == "spec.tags[].from"]
    assert "either image, or tag" in rule["message"]


@pytest.mark.parametrize(
    ("kind", "path", "pattern_source"),
    [
        ("PruneSchedule", "spec.schedule", "CRON_PATTERN"),
        ("PruneSchedule", "spec.retention.keepYoungerThan", "DURATION_PATTERN"),
        ("TagPolicy", "spec.tags.[].name", "TAG_PATTERN"),
        ("TagPolicy", "spec.repository", "REPOSITORY_PATTERN"),
        ("Registry", "spec.storage.pvc.size", "QUANTITY_PATTERN"),
    ],
)
def test_grammars_reach_the_schema(kind: str, path: str, pattern_source: str) -> None:
    from berth.api import common

    pattern = at(schema_of(kind), path)["pattern"]
    assert pattern == getattr(common, pattern_source)
    assert pattern.startswith("^")
    assert pattern.endswith("$")


def test_every_pattern_is_anchored_and_avoids_lookaround() -> None:
    for where, node in ALL_NODES:
        if "pattern" in node:
            pattern = node["pattern"]
            assert pattern.startswith("^"), where
            assert pattern.endswith("$"), where
            assert not re.search(r"\(\?[=!<]", pattern), f"{where}: RE2 has no lookaround"
            re.compile(pattern)


# API.md is the brief for field names: each listed field must appear under its name.
API_FIELDS = {
    "Registry": {
        "spec": "managementState external image replicas rolloutStrategy storage tls auth access "
        "credentialRotation expose readOnly resources nodeSelector tolerations affinity "
        "priorityClassName podAnnotations nodeIntegration",
        "spec.nodeIntegration": "enabled localRegistryHosting",
        "spec.external": "url caSecretRef credentialsSecretRef",
        "spec.storage": "emptyDir pvc s3",
        "spec.storage.emptyDir": "sizeLimit",
        "spec.storage.pvc": "size storageClassName accessModes existingClaim deleteOnRemove",
        "spec.storage.s3": "bucket region regionEndpoint secretRef rootDirectory",
        "spec.tls": "mode secretName issuerRef",
        "spec.auth": "mode",
        "spec.access.[]": "namespaceSelector namespaces serviceAccounts permission repositories",
        "spec.credentialRotation": "period",
        "spec.expose": "service route ingress",
        "spec.expose.service": "type port",
        "spec.expose.route": "enabled host",
        "spec.expose.ingress": "className host",
        "status": "observedGeneration conditions endpoint readyReplicas caConfigMap "
        "accessNamespaces lastCredentialRotation nodes",
        "status.endpoint": "internal external",
        "status.nodes": "configured total",
    },
    "TagPolicy": {
        "spec": "registryRef repository tags immutableTags historyLimit",
        "spec.registryRef": "name namespace",
        "spec.tags.[]": "name from importPolicy immutable",
        "spec.tags.[].from": "image tag repository",
        "spec.tags.[].importPolicy": "scheduled interval insecure",
        "status": "observedGeneration conditions tags pullSpec",
        "status.tags.[]": "tag items conditions",
        "status.tags.[].items.[]": "digest created source generation",
    },
    "PruneSchedule": {
        "spec": "registryRef schedule timeZone suspend repositories retention protectInUse "
        "garbageCollect dryRun successfulJobsHistoryLimit failedJobsHistoryLimit resources",
        "spec.repositories": "include exclude",
        "spec.retention": "keepLast keepYoungerThan keepTags deleteUntagged",
        "spec.garbageCollect": "enabled",
        "status": "observedGeneration conditions lastScheduleTime lastSuccessfulTime lastRun plan",
        "status.lastRun": "startTime completionTime dryRun repositories tagsScanned tagsDeleted "
        "manifestsDeleted bytesReclaimed keptInUse keptByRule errors",
        "status.plan.[]": "repository tag digest action reason",
    },
}


@pytest.mark.parametrize(
    ("kind", "path"), [(kind, path) for kind, paths in API_FIELDS.items() for path in paths]
)
def test_field_names_follow_the_api_brief(kind: str, path: str) -> None:
    expected = set(API_FIELDS[kind][path].split())
    assert set(at(schema_of(kind), path)["properties"]) == expected


def test_no_phase_field() -> None:
    for kind in PLURALS:
        assert "phase" not in schema_of(kind)["properties"]["status"]["properties"]


def test_generator_turns_pydantic_idioms_into_structural_schema() -> None:
    class Inner(BerthModel):
        """Inner docs."""

        level: int = Field(default=2, ge=1, le=5)
        """The level."""

    class Outer(BerthModel):
        """Outer docs."""

        inner: Inner = Field(default_factory=Inner)
        """Field docs win over the model's."""
        maybe: Inner | None = None
        """Optional."""
        extra_stuff: FreeForm | None = None
        """Anything."""
        items: list[str] = Field(default_factory=list, max_length=3)
        """Strings."""

    schema = crdgen.structural_schema(Outer)
    assert schema["description"] == "Outer docs."
    assert set(schema["properties"]) == {"inner", "maybe", "extraStuff", "items"}
    inner = schema["properties"]["inner"]
    assert inner["default"] == {"level": 2}  # in full: CEL rules see defaults unfilled
    assert inner["type"] == "object"
    assert inner["description"] == "Field docs win over the model's."
    assert inner["properties"]["level"] == {
        "default": 2,
        "description": "The level.",
        "maximum": 5,
        "minimum": 1,
        "type": "integer",
    }
    maybe = schema["properties"]["maybe"]
    assert "anyOf" not in maybe
    assert "default" not in maybe
    assert maybe["properties"]["level"]["type"] == "integer"
    assert schema["properties"]["extraStuff"] == {
        "description": "Anything.",
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
    }
    assert "default" not in schema["properties"]["items"]
    assert "required" not in schema


def test_generator_refuses_real_unions() -> None:
    class Either(BaseModel):
        value: int | str

    with pytest.raises(crdgen.SchemaError, match="unions"):
        crdgen.structural_schema(Either)


def test_rendered_files_parse_back_to_the_definitions() -> None:
    for name, text in crdgen.rendered().items():
        assert text.startswith("# Generated by `make crds`")
        assert yaml.safe_load(text) == GENERATED[name]
