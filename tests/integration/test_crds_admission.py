"""The generated CRDs against the real API server: samples admitted, the invalid corpus
rejected with messages naming the field, schema defaults applied, docs in kubectl explain."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from berth.api import PruneScheduleSpec, RegistrySpec, TagPolicySpec
from berth.api.common import Condition, ConditionStatus
from berth.api.registry import RegistryEndpoint, RegistryStatus, Storage
from berth.constants import DEFAULT_REGISTRY_IMAGE, GROUP, VERSION
from testbed import testbin
from testbed.cluster import wait_for

ROOT = Path(__file__).resolve().parents[2]
CRDS_DIR = ROOT / "crds"
SAMPLES = ROOT / "manifests" / "samples"
CORPUS: list[dict[str, Any]] = yaml.safe_load(
    (Path(__file__).parent / "invalid_corpus.yaml").read_text()
)
PLURALS = {"Registry": "registries", "TagPolicy": "tagpolicies", "PruneSchedule": "pruneschedules"}
FIELD_MANAGER = "berth-tests"

pytestmark = pytest.mark.cluster


def _samples() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{path.name}:{document['kind']}/{document['metadata']['name']}", document)
        for path in sorted(SAMPLES.glob("*.yaml"))
        for document in yaml.safe_load_all(path.read_text())
    ]


SAMPLE_DOCUMENTS = _samples()


def _custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


def _object(kind: str, name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": kind,
        "metadata": {"name": name},
        "spec": spec,
    }


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


def test_crds_are_established_with_their_names(
    api_client: client.ApiClient, berth_crds: list[str]
) -> None:
    extensions = client.ApiextensionsV1Api(api_client)
    short_names = {}
    for name in berth_crds:
        status = extensions.read_custom_resource_definition(name).status
        assert status is not None
        assert status.accepted_names is not None
        short_names[name] = status.accepted_names.short_names
    assert short_names == {
        f"registries.{GROUP}": ["reg"],
        f"tagpolicies.{GROUP}": ["tp"],
        f"pruneschedules.{GROUP}": ["ps"],
    }


@pytest.mark.parametrize(
    "document", [d for _, d in SAMPLE_DOCUMENTS], ids=[i for i, _ in SAMPLE_DOCUMENTS]
)
def test_sample_passes_server_side_dry_run(
    api_client: client.ApiClient, berth_crds: list[str], namespace: str, document: dict[str, Any]
) -> None:
    created = _custom(api_client).create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        PLURALS[document["kind"]],
        document,
        dry_run="All",
        field_validation="Strict",  # a misspelt field in a sample fails instead of vanishing
    )
    assert isinstance(created, dict)
    assert created["metadata"]["name"] == document["metadata"]["name"]
    assert _is_subset(document["spec"], created["spec"]), created["spec"]
    with pytest.raises(ApiException) as missing:  # dry run: nothing was stored
        _custom(api_client).get_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURALS[document["kind"]], document["metadata"]["name"]
        )
    assert missing.value.status == 404


@pytest.mark.parametrize("case", CORPUS, ids=[case["id"] for case in CORPUS])
def test_invalid_object_is_rejected_naming_the_field(
    api_client: client.ApiClient, berth_crds: list[str], namespace: str, case: dict[str, Any]
) -> None:
    with pytest.raises(ApiException) as rejected:
        _custom(api_client).create_namespaced_custom_object(
            GROUP,
            VERSION,
            namespace,
            PLURALS[case["kind"]],
            _object(case["kind"], "invalid", case["spec"]),
            dry_run="All",
        )
    assert rejected.value.status == 422, rejected.value.body
    message = json.loads(rejected.value.body or "{}")["message"]
    assert case["field"] in message, message
    if "message" in case:
        assert case["message"] in message, message


def _create_and_read(
    api_client: client.ApiClient, namespace: str, kind: str, spec: dict[str, Any]
) -> dict[str, Any]:
    custom = _custom(api_client)
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], _object(kind, "minimal", spec)
    )
    stored = custom.get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURALS[kind], "minimal"
    )
    assert isinstance(stored, dict)
    return stored["spec"]  # type: ignore[no-any-return]


def test_registry_defaults_are_applied(
    api_client: client.ApiClient, berth_crds: list[str], namespace: str
) -> None:
    minimal: dict[str, Any] = {"storage": {"emptyDir": {}}}
    spec = _create_and_read(api_client, namespace, "Registry", minimal)
    assert spec["managementState"] == "Managed"
    assert spec["replicas"] == 1
    assert spec["image"] == DEFAULT_REGISTRY_IMAGE
    assert spec["tls"] == {"mode": "SelfSigned"}
    assert spec["auth"] == {"mode": "Token"}
    assert spec["credentialRotation"] == {"period": "720h"}
    assert spec["expose"] == {"service": {"type": "ClusterIP", "port": 5000}}
    assert spec["readOnly"] is False
    # The API server and the models default alike.
    assert spec == RegistrySpec.model_validate(minimal).to_api()


def test_nested_defaults_inside_lists_and_optional_objects(
    api_client: client.ApiClient, berth_crds: list[str], namespace: str
) -> None:
    minimal: dict[str, Any] = {
        "replicas": 1,
        "storage": {"pvc": {"size": "1Gi"}},
        "access": [{"namespaces": ["team-a"]}],
    }
    spec = _create_and_read(api_client, namespace, "Registry", minimal)
    assert spec["storage"]["pvc"]["accessModes"] == ["ReadWriteOnce"]
    assert spec["storage"]["pvc"]["deleteOnRemove"] is False
    assert spec["access"] == [
        {
            "namespaces": ["team-a"],
            "serviceAccounts": ["default"],
            "permission": "pull",
            "repositories": ["{namespace}/**"],
        }
    ]
    assert spec == RegistrySpec.model_validate(minimal).to_api()


def test_tag_policy_defaults_are_applied(
    api_client: client.ApiClient, berth_crds: list[str], namespace: str
) -> None:
    minimal = {
        "registryRef": {"name": "registry"},
        "tags": [{"name": "web", "from": {"image": "docker.io/library/nginx:1.27"}}],
    }
    spec = _create_and_read(api_client, namespace, "TagPolicy", minimal)
    assert spec["historyLimit"] == 10
    assert spec["tags"][0]["importPolicy"] == {
        "scheduled": False,
        "interval": "15m",
        "insecure": False,
    }
    assert spec["tags"][0]["immutable"] is False
    assert spec == TagPolicySpec.model_validate(minimal).to_api()


def test_prune_schedule_defaults_are_applied(
    api_client: client.ApiClient, berth_crds: list[str], namespace: str
) -> None:
    minimal = {"registryRef": {"name": "registry"}}
    spec = _create_and_read(api_client, namespace, "PruneSchedule", minimal)
    assert spec["schedule"] == "0 3 * * *"
    assert spec["suspend"] is False
    assert spec["repositories"] == {"include": ["**"]}
    assert spec["retention"] == {"keepLast": 3, "keepYoungerThan": "60m", "deleteUntagged": True}
    assert spec["protectInUse"] is True
    assert spec["garbageCollect"] == {"enabled": True}
    assert spec["dryRun"] is False
    assert spec["successfulJobsHistoryLimit"] == 3
    assert spec["failedJobsHistoryLimit"] == 3
    model_defaults = PruneScheduleSpec.model_validate(minimal).to_api()
    model_defaults["repositories"].pop("exclude")  # [] is left out of the schema on purpose
    assert spec == model_defaults


def _kubectl(kubeconfig: Path, cache: Path, *args: str) -> subprocess.CompletedProcess[str]:
    kubectl = testbin.ensure_built() / "kubectl"
    return subprocess.run(
        [str(kubectl), "--kubeconfig", str(kubeconfig), "--cache-dir", str(cache), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_status_written_from_the_models_is_accepted_and_printed(
    api_client: client.ApiClient,
    berth_crds: list[str],
    namespace: str,
    kubeconfig: Path,
    tmp_path: Path,
) -> None:
    custom = _custom(api_client)
    custom.create_namespaced_custom_object(
        GROUP,
        VERSION,
        namespace,
        "registries",
        yaml.safe_load((SAMPLES / "registry.yaml").read_text()),
    )
    status = RegistryStatus(
        observed_generation=1,
        conditions=[
            Condition(
                type="Ready",
                status=ConditionStatus.FALSE,
                reason="StorageUnavailable",
                message="waiting for the volume",
                last_transition_time=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
                observed_generation=1,
            )
        ],
        endpoint=RegistryEndpoint(internal=f"registry.{namespace}.svc:5000"),
        ready_replicas=0,
    )
    # The operator (running for other tests) reconciles this Registry too and may
    # rewrite its status at any moment: read what the apiserver stored from the PATCH
    # response itself, and the printed columns together with the object in one Table.
    stored = custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, namespace, "registries", "registry", {"status": status.to_api()}
    )
    assert isinstance(stored, dict)
    assert RegistryStatus.model_validate(stored["status"]) == status

    response = api_client.call_api(
        "GET",
        f"{api_client.configuration.host}/apis/{GROUP}/{VERSION}/namespaces/{namespace}"
        "/registries?includeObject=Object",
        {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io"},
    )
    table = json.loads(response.read())
    # kubectl shows the priority-0 columns; -o wide adds the others.
    header = [c["name"] for c in table["columnDefinitions"] if not c.get("priority")]
    assert header == ["Name", "State", "Ready", "Reason", "Endpoint", "Age"]
    (row,) = table["rows"]
    shown = RegistryStatus.model_validate(row["object"]["status"])
    ready = next(c for c in shown.conditions if c.type == "Ready")
    assert row["cells"][:5] == [
        "registry",
        "Managed",
        ready.status.value,
        ready.reason,
        f"registry.{namespace}.svc:5000",
    ]

    listing = _kubectl(kubeconfig, tmp_path, "get", "reg", "-n", namespace)
    assert listing.returncode == 0, listing.stderr
    assert listing.stdout.split()[:6] == ["NAME", "STATE", "READY", "REASON", "ENDPOINT", "AGE"]


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_kubectl_explain_shows_the_model_docs(
    berth_crds: list[str], kubeconfig: Path, tmp_path: Path
) -> None:
    expected = [
        RegistrySpec.model_fields["storage"].description,
        Storage.model_fields["empty_dir"].description,
        Storage.model_fields["pvc"].description,
        Storage.model_fields["s3"].description,
    ]
    assert all(expected)
    last: list[str] = []

    def explained() -> bool:
        result = _kubectl(kubeconfig, tmp_path, "explain", "registry.spec.storage")
        last[:] = [result.stdout, result.stderr]
        flat = _flat(result.stdout)
        return result.returncode == 0 and all(_flat(str(text)) in flat for text in expected)

    # The API server publishes a new CRD's OpenAPI a moment after it is Established.
    wait_for(f"kubectl explain to show the docs (last: {last})", explained, timeout=60, interval=1)
    assert "emptyDir" in last[0]
    assert "<Object>" in last[0]
