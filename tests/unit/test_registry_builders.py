"""The Registry's pure builders, checked without a cluster: every sample renders into
well-formed children with the standard labels, owner references and a Pod spec that
meets Pod Security `restricted`."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from berth import pki
from berth.api.registry import RegistrySpec
from berth.constants import ANNOTATION_CONFIG_CHECKSUM
from berth.k8s.diff import is_subset
from berth.reconcile.conditions import Cond, merge_conditions
from berth.resources.registry import (
    RegistryInputs,
    RegistryMaterial,
    TLSMaterial,
    desired_children,
    registry_config,
    rollout_strategy,
    serving_names,
)

SAMPLES = Path(__file__).resolve().parents[2] / "manifests" / "samples"
OWNER = {
    "apiVersion": "berth.dev/v1alpha1",
    "kind": "Registry",
    "metadata": {"name": "reg", "namespace": "team", "uid": "0000-1111"},
}
CA = pki.new_ca("test CA")
SERVING = pki.issue_serving(CA, ["reg.team.svc"])
SIGNING = pki.new_ca("test token signing")


def sample_specs() -> list[dict[str, Any]]:
    specs = []
    for path in sorted(SAMPLES.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document and document["kind"] == "Registry":
                specs.append(document["spec"])
    assert specs, "the samples include a Registry"
    return specs


def inputs(spec: dict[str, Any], *, openshift: bool = False, **material: Any) -> RegistryInputs:
    model = RegistrySpec.model_validate(spec)
    defaults: dict[str, Any] = {
        "http_secret": "h" * 64,
        "ca": TLSMaterial(CA.cert_pem, CA.key_pem),
        "serving": TLSMaterial(SERVING.cert_pem, SERVING.key_pem, CA.cert_pem),
        "admin_password": "admin-password-0123456789",
        "token_signing": TLSMaterial(SIGNING.cert_pem, SIGNING.key_pem),
        "htpasswd": "berth-admin:$2b$10$abcdefghijklmnopqrstuv\n",
    }
    defaults.update(material)
    return RegistryInputs(OWNER, model, RegistryMaterial(**defaults), openshift)


def by_kind(children: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [c for c in children if c["kind"] == kind]


@pytest.mark.parametrize("spec", sample_specs())
def test_every_sample_renders_labelled_owned_children(spec: dict[str, Any]) -> None:
    children = desired_children(inputs(spec))
    assert {c["kind"] for c in children} >= {
        "ServiceAccount",
        "ConfigMap",
        "Secret",
        "Service",
        "Deployment",
        "NetworkPolicy",
    }
    for child in children:
        metadata = child["metadata"]
        assert metadata["namespace"] == "team"
        assert metadata["labels"]["app.kubernetes.io/managed-by"] == "berth"
        assert metadata["labels"]["app.kubernetes.io/instance"] == "reg"
        assert metadata["ownerReferences"][0]["uid"] == "0000-1111"
        assert metadata["ownerReferences"][0]["controller"] is True
    names = [(c["kind"], c["metadata"]["name"]) for c in children]
    assert len(names) == len(set(names)), "no child is rendered twice"


@pytest.mark.parametrize("openshift", [False, True], ids=["kubernetes", "openshift"])
def test_pod_spec_meets_restricted_and_fixes_no_uid_on_openshift(openshift: bool) -> None:
    (deployment,) = by_kind(
        desired_children(inputs(sample_specs()[0], openshift=openshift)), "Deployment"
    )
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert ("runAsUser" in pod["securityContext"]) is not openshift
    assert pod["automountServiceAccountToken"] is False
    # A Service named "registry" would inject REGISTRY_PORT=tcp://..., which distribution
    # reads as its configuration and refuses to start (seen on the real node).
    assert pod["enableServiceLinks"] is False
    assert container["readinessProbe"]["httpGet"]["path"] == "/debug/health"


def test_replicas_bring_a_disruption_budget_and_a_rolling_update() -> None:
    spec = copy.deepcopy(sample_specs()[0])
    spec["storage"] = {"pvc": {"size": "5Gi", "accessModes": ["ReadWriteMany"]}}
    spec["replicas"] = 3
    children = desired_children(inputs(spec))
    (pdb,) = by_kind(children, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    (deployment,) = by_kind(children, "Deployment")
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    (claim,) = by_kind(children, "PersistentVolumeClaim")
    assert claim["spec"]["accessModes"] == ["ReadWriteMany"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"


def test_single_node_volumes_roll_out_by_recreate() -> None:
    spec = copy.deepcopy(sample_specs()[0])
    spec["storage"] = {"pvc": {"size": "5Gi"}}
    assert rollout_strategy(RegistrySpec.model_validate(spec)).value == "Recreate"
    spec["storage"] = {"emptyDir": {}}
    assert rollout_strategy(RegistrySpec.model_validate(spec)).value == "Recreate"
    spec["storage"] = {"s3": {"bucket": "images", "region": "eu-west-1"}}
    assert rollout_strategy(RegistrySpec.model_validate(spec)).value == "RollingUpdate"


def test_a_stopping_pod_drains_only_when_another_takes_over() -> None:
    """RollingUpdate: the old Pod serves 5 s more while the endpoints let go of it.
    Recreate: no Pod takes over, so it stops at once (it would serve its old config)."""
    spec = copy.deepcopy(sample_specs()[0])

    def pre_stop(spec: dict[str, Any]) -> Any:
        (deployment,) = by_kind(desired_children(inputs(spec)), "Deployment")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        return (container.get("lifecycle") or {}).get("preStop")

    spec["storage"] = {"pvc": {"size": "5Gi"}}
    assert pre_stop(spec) is None
    spec["rolloutStrategy"] = "RollingUpdate"
    assert pre_stop(spec) == {"sleep": {"seconds": 5}}


def test_checksum_rolls_pods_on_config_but_not_on_scale() -> None:
    spec = copy.deepcopy(sample_specs()[0])

    def checksum(spec: dict[str, Any]) -> str:
        (deployment,) = by_kind(desired_children(inputs(spec)), "Deployment")
        return str(
            deployment["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_CHECKSUM]
        )

    base = checksum(spec)
    assert checksum({**spec, "replicas": 0}) == base
    assert checksum({**spec, "readOnly": True}) != base


def test_config_follows_storage_auth_and_tls() -> None:
    spec = copy.deepcopy(sample_specs()[0])
    spec.update(
        storage={"s3": {"bucket": "images", "region": "eu-west-1", "secretRef": {"name": "s3"}}},
        auth={"mode": "Htpasswd"},
        tls={"mode": "Disabled"},
        readOnly=True,
    )
    config = registry_config(inputs(spec))
    assert config["storage"]["s3"] == {"bucket": "images", "region": "eu-west-1"}
    assert config["storage"]["maintenance"]["readonly"] == {"enabled": True}
    assert config["auth"] == {"htpasswd": {"realm": "berth", "path": "/etc/berth/auth/htpasswd"}}
    assert "tls" not in config["http"]
    (deployment,) = by_kind(desired_children(inputs(spec)), "Deployment")
    env = {e["name"] for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert {"REGISTRY_STORAGE_S3_ACCESSKEY", "REGISTRY_STORAGE_S3_SECRETKEY"} <= env
    # No secret value is written into the ConfigMap.
    (config_map,) = [
        c
        for c in by_kind(desired_children(inputs(spec)), "ConfigMap")
        if c["metadata"]["name"] == "reg-config"
    ]
    assert "h" * 64 not in config_map["data"]["config.yml"]


def test_token_mode_points_at_the_token_server() -> None:
    config = registry_config(inputs(sample_specs()[0]))
    token = config["auth"]["token"]
    assert token["realm"] == "https://reg-auth.team.svc:8443/token"
    assert token["service"] == "reg.team.svc"
    assert token["rootcertbundle"] == "/etc/berth/auth/token-ca.crt"


def test_serving_names_cover_service_forms_cluster_ip_and_external_host() -> None:
    spec = copy.deepcopy(sample_specs()[0])
    spec["expose"] = {"ingress": {"host": "registry.example.com"}}
    names = serving_names(inputs(spec), "10.96.0.42")
    assert names[:2] == ["reg.team.svc", "reg.team.svc.cluster.local"]
    assert {"10.96.0.42", "registry.example.com", "reg"} <= set(names)


def test_ingress_and_route_are_exclusive_renders() -> None:
    spec = copy.deepcopy(sample_specs()[0])
    spec["expose"] = {"ingress": {"host": "r.example.com", "className": "nginx"}}
    children = desired_children(inputs(spec))
    (ingress,) = by_kind(children, "Ingress")
    assert ingress["spec"]["rules"][0]["host"] == "r.example.com"
    assert ingress["spec"]["tls"][0]["secretName"] == "reg-tls"
    assert not by_kind(children, "Route")
    spec["expose"] = {"route": {"enabled": True, "host": "r.apps.example.com"}}
    children = desired_children(inputs(spec, openshift=True))
    (route,) = by_kind(children, "Route")
    assert route["spec"]["tls"]["termination"] == "passthrough"
    assert not by_kind(children, "Ingress")


def test_subset_comparison_sees_drift_and_ignores_server_defaults() -> None:
    desired = {
        "spec": {
            "replicas": 2,
            "template": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "0.5"}}}]},
        }
    }
    live = {
        "spec": {
            "replicas": 2,
            "progressDeadlineSeconds": 600,
            "template": {
                "containers": [
                    {
                        "name": "a",
                        "imagePullPolicy": "IfNotPresent",
                        "resources": {"limits": {"cpu": "500m"}},
                    }
                ]
            },
        }
    }
    assert is_subset(desired, live)
    live["spec"]["replicas"] = 3
    assert not is_subset(desired, live)
    assert is_subset({"data": {}}, {})  # empty maps are dropped by the API server
    assert not is_subset({"items": [1, 2]}, {"items": [1, 2, 3]})
    assert not is_subset({"flag": True}, {"flag": 1})


def test_condition_transition_time_moves_only_when_status_flips() -> None:
    first = merge_conditions([], [Cond("Ready", False, "Starting", "")], 1)
    first[0]["lastTransitionTime"] = "2020-01-01T00:00:00Z"
    same = merge_conditions(first, [Cond("Ready", False, "StillStarting", "")], 2)
    assert same[0]["lastTransitionTime"] == "2020-01-01T00:00:00Z"
    assert same[0]["reason"] == "StillStarting"
    assert same[0]["observedGeneration"] == 2
    flipped = merge_conditions(same, [Cond("Ready", True, "Available", "")], 2)
    assert flipped[0]["lastTransitionTime"] != "2020-01-01T00:00:00Z"


def test_notifications_go_to_the_operator_with_the_token_kept_out_of_the_config_map() -> None:
    spec = copy.deepcopy(sample_specs()[0])
    without = desired_children(inputs(spec))
    assert not [
        s for s in by_kind(without, "Secret") if s["metadata"]["name"] == "reg-notifications"
    ]

    token = "notification-token-0123456789"
    url = "http://berth-operator.berth-system.svc:8082/notifications"

    def with_url(address: str) -> list[dict[str, Any]]:
        built = inputs(spec, notifications_token=token)
        return desired_children(
            RegistryInputs(built.owner, built.spec, built.material, False, address)
        )

    children = with_url(url)
    (secret,) = [
        s for s in by_kind(children, "Secret") if s["metadata"]["name"] == "reg-notifications"
    ]
    assert secret["metadata"]["ownerReferences"][0]["kind"] == "Registry"
    data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
    assert data["token"] == token
    (endpoint,) = yaml.safe_load(data["endpoints"])
    assert endpoint["url"] == f"{url}/team/reg"
    assert endpoint["headers"] == {"Authorization": [f"Bearer {token}"]}
    assert endpoint["ignore"] == {"actions": ["pull"]}
    (config_map,) = by_kind(children, "ConfigMap")[:1]
    assert token not in yaml.safe_dump(config_map)

    (deployment,) = by_kind(children, "Deployment")
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["REGISTRY_NOTIFICATIONS_ENDPOINTS"]["valueFrom"]["secretKeyRef"] == {
        "name": "reg-notifications",
        "key": "endpoints",
    }
    # A new endpoint rolls the Pods: the registry reads its environment once.
    (moved,) = by_kind(with_url("http://elsewhere:8082/notifications"), "Deployment")
    (plain,) = by_kind(without, "Deployment")
    annotations = [
        d["spec"]["template"]["metadata"]["annotations"][ANNOTATION_CONFIG_CHECKSUM]
        for d in (deployment, moved, plain)
    ]
    assert len(set(annotations)) == 3
