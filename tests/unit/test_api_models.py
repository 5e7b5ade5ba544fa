"""The pydantic models: samples, defaults, the wire form, offline validation and helpers."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from berth.api import (
    Condition,
    ConditionStatus,
    PruneSchedule,
    Registry,
    RegistrySpec,
    TagPolicy,
    TagPolicySpec,
)
from berth.api.common import (
    SecretKeyReference,
    expand_namespace,
    find_condition,
    glob_match,
    is_cron_schedule,
    parse_duration,
)
from berth.api.pruneschedule import PruneScheduleSpec
from berth.api.registry import AccessMode, AuthMode, ExternalRegistry, ManagementState, TLSMode
from berth.api.tagpolicy import TagSource
from berth.constants import API_VERSION, DEFAULT_REGISTRY_IMAGE

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "manifests" / "samples"
CORPUS = ROOT / "tests" / "integration" / "invalid_corpus.yaml"
KINDS: dict[str, type[BaseModel]] = {
    "Registry": Registry,
    "TagPolicy": TagPolicy,
    "PruneSchedule": PruneSchedule,
}


def sample_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            documents.append(
                (f"{path.name}:{document['kind']}/{document['metadata']['name']}", document)
            )
    return documents


SAMPLE_DOCUMENTS = sample_documents()
INVALID_CORPUS: list[dict[str, Any]] = yaml.safe_load(CORPUS.read_text())


def test_there_is_a_sample_of_every_kind() -> None:
    kinds = {document["kind"] for _, document in SAMPLE_DOCUMENTS}
    assert kinds == set(KINDS)
    for name in ("registry.yaml", "tagpolicy.yaml", "pruneschedule.yaml", "dev-stage-prod.yaml"):
        assert (SAMPLES / name).is_file()


@pytest.mark.parametrize(
    "document", [d for _, d in SAMPLE_DOCUMENTS], ids=[i for i, _ in SAMPLE_DOCUMENTS]
)
def test_sample_is_valid_and_round_trips(document: dict[str, Any]) -> None:
    assert document["apiVersion"] == API_VERSION
    assert "namespace" not in document["metadata"], "samples must be namespace-agnostic"
    model = KINDS[document["kind"]].model_validate(document)
    spec = model.spec  # type: ignore[attr-defined]
    wire = spec.to_api()
    # Every field the sample sets survives, under its camelCase name.
    assert _is_subset(document["spec"], wire), (document["spec"], wire)
    assert type(spec).model_validate(wire) == spec


def _is_subset(part: Any, whole: Any) -> bool:
    if isinstance(part, dict):
        return isinstance(whole, dict) and all(
            key in whole and _is_subset(value, whole[key]) for key, value in part.items()
        )
    if isinstance(part, list):
        return (
            isinstance(whole, list)
            and len(part) == len(whole)
            and all(_is_subset(a, b) for a, b in zip(part, whole, strict=True))
        )
    return bool(part == whole)


def test_registry_sample_is_managed_self_signed_with_local_storage() -> None:
    document = yaml.safe_load((SAMPLES / "registry.yaml").read_text())
    registry = Registry.model_validate(document)
    assert registry.spec.management_state is ManagementState.MANAGED
    assert registry.spec.tls.mode is TLSMode.SELF_SIGNED
    storage = registry.spec.storage
    assert storage is not None
    assert storage.empty_dir is not None or storage.pvc is not None


def _k8s_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f"{'.' if path else ''}{part}"
    return path


@pytest.mark.parametrize("case", INVALID_CORPUS, ids=[case["id"] for case in INVALID_CORPUS])
def test_models_reject_what_admission_rejects(case: dict[str, Any]) -> None:
    """Offline validation (the CLI) agrees with the API server on the invalid corpus."""
    with pytest.raises(ValidationError) as rejected:
        KINDS[case["kind"]].model_validate({"spec": case["spec"]})
    errors = [(_k8s_path(error["loc"]), error["msg"]) for error in rejected.value.errors()]
    # Python rules name list items as spec.tags[] where the API server says spec.tags[0].
    generic = re.sub(r"\[\d+\]", "[]", case["field"])
    assert any(case["field"] in path or generic in message for path, message in errors), errors
    if "message" in case and not any(case["field"] in path for path, _ in errors):
        assert any(case["message"] in message for _, message in errors), errors


def test_corpus_is_large_and_covers_every_kind() -> None:
    assert len(INVALID_CORPUS) >= 30
    assert {case["kind"] for case in INVALID_CORPUS} == set(KINDS)
    assert len({case["id"] for case in INVALID_CORPUS}) == len(INVALID_CORPUS)


def test_minimal_registry_gets_the_documented_defaults() -> None:
    spec = RegistrySpec.model_validate({"storage": {"emptyDir": {}}})
    assert spec.management_state is ManagementState.MANAGED
    assert spec.image == DEFAULT_REGISTRY_IMAGE
    assert spec.replicas == 1
    assert spec.tls.mode is TLSMode.SELF_SIGNED
    assert spec.auth.mode is AuthMode.TOKEN
    assert spec.credential_rotation.period == "720h"
    assert spec.expose.service.type == "ClusterIP"
    assert spec.expose.service.port == 5000
    assert spec.read_only is False


def test_access_grant_defaults() -> None:
    spec = RegistrySpec.model_validate(
        {"storage": {"emptyDir": {}}, "access": [{"namespaces": ["team-a"]}]}
    )
    assert spec.access is not None
    grant = spec.access[0]
    assert grant.service_accounts == ["default"]
    assert grant.permission == "pull"
    assert grant.repositories == ["{namespace}/**"]


def test_pvc_defaults_to_read_write_once() -> None:
    spec = RegistrySpec.model_validate({"storage": {"pvc": {"size": "10Gi"}}})
    assert spec.storage is not None
    assert spec.storage.pvc is not None
    assert spec.storage.pvc.access_modes == [AccessMode.READ_WRITE_ONCE]
    assert spec.storage.pvc.delete_on_remove is False


def test_tag_policy_and_prune_schedule_defaults() -> None:
    policy = TagPolicySpec.model_validate(
        {"registryRef": {"name": "r"}, "tags": [{"name": "web", "from": {"image": "nginx"}}]}
    )
    assert policy.history_limit == 10
    assert policy.tags is not None
    assert policy.tags[0].import_policy.interval == "15m"
    assert policy.tags[0].import_policy.scheduled is False
    assert policy.tags[0].immutable is False

    schedule = PruneScheduleSpec.model_validate({"registryRef": {"name": "r"}})
    assert schedule.schedule == "0 3 * * *"
    assert schedule.suspend is False
    assert schedule.repositories.include == ["**"]
    assert schedule.repositories.exclude == []
    assert schedule.retention.keep_last == 3
    assert schedule.retention.keep_younger_than == "60m"
    assert schedule.retention.delete_untagged is True
    assert schedule.protect_in_use is True
    assert schedule.garbage_collect.enabled is True
    assert schedule.dry_run is False
    assert schedule.successful_jobs_history_limit == 3
    assert schedule.failed_jobs_history_limit == 3


def test_fields_are_snake_case_in_python_and_camel_case_on_the_wire() -> None:
    spec = RegistrySpec(
        management_state=ManagementState.UNMANAGED,
        external=ExternalRegistry(
            url="https://r.example.com", ca_secret_ref=SecretKeyReference(name="ca")
        ),
    )
    wire = spec.to_api()
    assert wire["managementState"] == "Unmanaged"
    assert wire["external"] == {
        "url": "https://r.example.com",
        "caSecretRef": {"name": "ca", "key": "ca.crt"},
    }
    assert "storage" not in wire  # unset optional fields stay out
    assert wire["credentialRotation"] == {"period": "720h"}


def test_tag_source_uses_the_reserved_word_from() -> None:
    policy = TagPolicySpec.model_validate(
        {"registryRef": {"name": "r"}, "tags": [{"name": "stage", "from": {"tag": "dev"}}]}
    )
    assert policy.tags is not None
    assert policy.tags[0].from_ == TagSource(tag="dev")
    assert policy.to_api()["tags"][0]["from"] == {"tag": "dev"}


def test_unknown_spec_fields_are_rejected() -> None:
    with pytest.raises(ValidationError, match="replica"):
        RegistrySpec.model_validate({"storage": {"emptyDir": {}}, "replica": 2})


def test_registry_from_an_api_server_body() -> None:
    body = {
        "apiVersion": API_VERSION,
        "kind": "Registry",
        "metadata": {"name": "r", "namespace": "ns", "generation": 4, "uid": "1234"},
        "spec": {"storage": {"pvc": {"size": "5Gi"}}, "replicas": 1},
        "status": {
            "observedGeneration": 3,
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "InvalidSpec",
                    "message": "bucket not found",
                    "lastTransitionTime": "2025-01-02T03:04:05Z",
                    "observedGeneration": 3,
                }
            ],
            "endpoint": {"internal": "r.ns.svc:5000"},
            "kopf": {"progress": {}},
        },
    }
    registry = Registry.model_validate(body)
    assert registry.metadata["generation"] == 4
    assert registry.status.observed_generation == 3
    ready = find_condition(registry.status.conditions, "Ready")
    assert ready is not None
    assert ready.status is ConditionStatus.FALSE
    assert ready.last_transition_time == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert registry.status.endpoint is not None
    assert registry.status.endpoint.internal == "r.ns.svc:5000"
    assert find_condition(registry.status.conditions, "Degraded") is None


def test_body_without_status_gets_an_empty_status() -> None:
    policy = TagPolicy.model_validate({"metadata": {}, "spec": {"registryRef": {"name": "r"}}})
    assert policy.status.conditions == []
    assert policy.status.tags == []


def test_condition_serializes_as_metav1() -> None:
    condition = Condition(
        type="Ready",
        status=ConditionStatus.TRUE,
        reason="Available",
        message="",
        last_transition_time=datetime(2025, 6, 1, 12, 0, tzinfo=UTC),
        observed_generation=2,
    )
    assert condition.to_api() == {
        "type": "Ready",
        "status": "True",
        "reason": "Available",
        "message": "",
        "lastTransitionTime": "2025-06-01T12:00:00Z",
        "observedGeneration": 2,
    }


@pytest.mark.parametrize("reason", ["", "not camel", "Has-Dash", "1Digit"])
def test_condition_reason_must_be_camel_case(reason: str) -> None:
    with pytest.raises(ValidationError):
        Condition(
            type="Ready",
            status=ConditionStatus.TRUE,
            reason=reason,
            message="",
            last_transition_time=datetime.now(UTC),
        )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("15m", timedelta(minutes=15)),
        ("168h", timedelta(days=7)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("3µs", timedelta(microseconds=3)),
        ("2us", timedelta(microseconds=2)),
    ],
)
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "7d", "15", "1 h", "-5m", "h", "1.h", "15 minutes"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("0 3 * * *", True),
        ("*/15 * * * *", True),
        ("0 0 1,15 * MON-FRI", True),
        ("@daily", True),
        ("@hourly", True),
        ("0 3 * *", False),
        ("0 3 * * * *", False),
        ("every night", False),
        ("@sometimes", False),
        ("TZ=UTC 0 3 * * *", False),
    ],
)
def test_is_cron_schedule(text: str, valid: bool) -> None:
    assert is_cron_schedule(text) is valid


@pytest.mark.parametrize(
    ("pattern", "name", "matches"),
    [
        ("**", "a", True),
        ("**", "a/b/c", True),
        ("team/*", "team/app", True),
        ("team/*", "team/app/sub", False),
        ("team/**", "team/app/sub", True),
        ("team/**", "team", False),
        ("team/**", "teams/app", False),
        ("**/app", "app", True),
        ("**/app", "x/y/app", True),
        ("**/app", "x/y/app2", False),
        ("a/**/b", "a/b", True),
        ("a/**/b", "a/x/y/b", True),
        ("team-*/web", "team-a/web", True),
        ("v*", "v1.2.3", True),
        ("v*", "latest", False),
        ("release.1", "releasex1", False),
    ],
)
def test_glob_match(pattern: str, name: str, matches: bool) -> None:
    assert glob_match(pattern, name) is matches


def test_expand_namespace() -> None:
    assert expand_namespace("{namespace}/**", "team-a") == "team-a/**"
    assert glob_match(expand_namespace("{namespace}/**", "team-a"), "team-a/web")


def test_expand_namespace_without_a_namespace() -> None:
    assert expand_namespace("team-a/**", None) == "team-a/**"
    with pytest.raises(ValueError, match="has no namespace"):
        expand_namespace("{namespace}/**", None)


def test_expand_namespace_leaves_patterns_without_the_placeholder() -> None:
    assert expand_namespace("shared/{name}/**", "team-a") == "shared/{name}/**"
    assert expand_namespace("{namespace}/{namespace}", "a") == "a/a"


@pytest.mark.parametrize(
    "tag", ["latest", "v1.2.3", "1.27", "_private", "A" * 128, "build-2025.01.02_3"]
)
def test_valid_tag_names(tag: str) -> None:
    TagPolicySpec.model_validate({"registryRef": {"name": "r"}, "tags": [{"name": tag}]})


@pytest.mark.parametrize("tag", [".hidden", "-dash", "with space", "a" * 129, "a/b", "a:b", ""])
def test_invalid_tag_names(tag: str) -> None:
    with pytest.raises(ValidationError):
        TagPolicySpec.model_validate({"registryRef": {"name": "r"}, "tags": [{"name": tag}]})


@pytest.mark.parametrize(
    "repository", ["web", "team-a/web", "a/b/c", "team__x/app", "my.app/x-y", "a--b"]
)
def test_valid_repository_names(repository: str) -> None:
    TagPolicySpec.model_validate({"registryRef": {"name": "r"}, "repository": repository})


@pytest.mark.parametrize(
    "repository", ["Web", "team//web", "/web", "web/", "-web", "web-", "a___b", "a..b", "a b"]
)
def test_invalid_repository_names(repository: str) -> None:
    with pytest.raises(ValidationError):
        TagPolicySpec.model_validate({"registryRef": {"name": "r"}, "repository": repository})


@pytest.mark.parametrize(
    "image",
    [
        "nginx",
        "nginx:1.27",
        "docker.io/library/nginx:1.27",
        "localhost:5000/team/app:dev",
        "quay.io/org/app@sha256:" + "a" * 64,
        "ghcr.io/org/app:v1@sha256:" + "0" * 64,
    ],
)
def test_valid_image_references(image: str) -> None:
    TagSource(image=image)


@pytest.mark.parametrize("image", ["nginx latest", "Nginx", "nginx:", "docker.io/library/nginx:-x"])
def test_invalid_image_references(image: str) -> None:
    with pytest.raises(ValidationError):
        TagSource(image=image)


def test_readwritemany_pvc_allows_several_replicas() -> None:
    spec = RegistrySpec.model_validate(
        {"replicas": 3, "storage": {"pvc": {"size": "1Gi", "accessModes": ["ReadWriteMany"]}}}
    )
    assert spec.replicas == 3


def test_removed_registry_needs_no_storage() -> None:
    spec = RegistrySpec.model_validate({"managementState": "Removed"})
    assert spec.storage is None
