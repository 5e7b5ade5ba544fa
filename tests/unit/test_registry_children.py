"""The table of a Registry's children and the pure observation of the live ones:
what a pass applies, deletes and watches, and which conditions it reports, all
without a cluster."""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Any

import pytest

from berth.api.registry import RegistrySpec
from berth.reconcile.registry_observe import external_host, observe
from berth.resources.registry import (
    CHILDREN,
    Component,
    RegistryInputs,
    RegistryTarget,
    Stage,
    TLSMaterial,
    address_children,
    desired_children,
    removed,
    unwanted,
    watched_kinds,
)
from tests.unit.test_registry_builders import OWNER, SERVING, sample_specs
from tests.unit.test_registry_builders import inputs as registry_inputs


def inputs(spec: dict[str, Any], **material: Any) -> RegistryInputs:
    """The builders' inputs, with the operator image the token server runs."""
    return replace(registry_inputs(spec, **material), operator_image="localhost/berth:test")


def _spec(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(sample_specs()[0])  # Token auth, SelfSigned TLS, a PVC
    spec.update(changes)
    return spec


def _keys(children: list[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(c["kind"], c["metadata"]["name"]) for c in children}


SHARED = {"pvc": {"size": "5Gi", "accessModes": ["ReadWriteMany"]}}


def test_every_row_names_and_builds_its_child() -> None:
    built = inputs(_spec(replicas=3, storage=SHARED, expose={"ingress": {"host": "r.example.com"}}))
    everything = desired_children(built, component=None)
    for child in CHILDREN:
        if child.wanted(built):
            assert (child.kind.kind, child.object_name(built)) in _keys(everything), child
    names = [(c["kind"], c["metadata"]["name"]) for c in everything]
    assert len(names) == len(set(names)), "no child is declared twice"


def test_the_service_is_built_from_the_registry_alone() -> None:
    """Stage ADDRESS runs before any material exists."""
    target = RegistryTarget(OWNER, RegistrySpec.model_validate(_spec()))
    (service,) = address_children(target)
    assert (service["kind"], service["metadata"]["name"]) == ("Service", "reg")
    assert service["metadata"]["ownerReferences"][0]["uid"] == "0000-1111"
    assert [c.kind.kind for c in CHILDREN if c.stage is Stage.ADDRESS] == ["Service"]


def test_token_server_children_belong_to_their_component() -> None:
    built = inputs(_spec(), token_server_tls=TLSMaterial(SERVING.cert_pem, SERVING.key_pem))
    server = desired_children(built, component=Component.TOKEN_SERVER)
    assert _keys(server) == {
        ("ServiceAccount", "reg-auth"),
        ("Secret", "reg-auth-tls"),
        ("Service", "reg-auth"),
        ("Deployment", "reg-auth"),
        ("NetworkPolicy", "reg-auth"),
        ("ClusterRoleBinding", "berth:team:reg-auth"),
    }
    (binding,) = [c for c in server if c["kind"] == "ClusterRoleBinding"]
    assert "ownerReferences" not in binding["metadata"], "cluster-scoped: the finalizer's"
    assert not _keys(desired_children(inputs(_spec(auth={"mode": "Htpasswd"})), None)) & _keys(
        server
    )


def test_what_a_spec_no_longer_wants_is_deleted_and_nothing_else() -> None:
    one_replica = inputs(_spec(replicas=1))
    assert {(c.kind.kind, c.object_name(one_replica)) for c in unwanted(one_replica)} == {
        ("PodDisruptionBudget", "reg"),
        ("Ingress", "reg"),
        ("Route", "reg"),
    }
    exposed = inputs(
        _spec(replicas=2, storage=SHARED, expose={"ingress": {"host": "r.example.com"}})
    )
    assert {c.kind.kind for c in unwanted(exposed)} == {"Route"}


@pytest.mark.parametrize("delete_on_remove", [False, True])
def test_removed_deletes_the_workload_and_keeps_storage_and_credentials(
    delete_on_remove: bool,
) -> None:
    spec = _spec(storage={"pvc": {"size": "1Gi", "deleteOnRemove": delete_on_remove}})
    target = RegistryTarget(OWNER, RegistrySpec.model_validate(spec))
    doomed = {(c.kind.kind, c.object_name(target)) for c in removed(target)}
    assert doomed == {
        ("Deployment", "reg"),
        ("Service", "reg"),
        ("PodDisruptionBudget", "reg"),
        ("NetworkPolicy", "reg"),
        ("Ingress", "reg"),
        ("Route", "reg"),
        ("Deployment", "reg-auth"),
        ("Service", "reg-auth"),
    } | ({("PersistentVolumeClaim", "reg-data")} if delete_on_remove else set())


def test_watched_kinds_are_the_namespaced_ones_of_always_served_apis() -> None:
    assert sorted(k.plural for k in watched_kinds()) == [
        "configmaps",
        "deployments",
        "ingresses",
        "networkpolicies",
        "persistentvolumeclaims",
        "poddisruptionbudgets",
        "secrets",
        "serviceaccounts",
        "services",
    ]


# -- observation -------------------------------------------------------------------------


def _deployment(ready: int, *, generation: int = 1, observed: int = 1) -> dict[str, Any]:
    return {
        "metadata": {"generation": generation},
        "status": {
            "observedGeneration": observed,
            "replicas": ready,
            "readyReplicas": ready,
            "availableReplicas": ready,
            "updatedReplicas": ready,
            "conditions": [{"type": "Available", "status": "True" if ready else "False"}],
        },
    }


def _live(ready: int = 1, claim_phase: str = "Bound", token_ready: int = 1) -> dict[Any, Any]:
    return {
        ("Deployment", "reg"): _deployment(ready),
        ("Deployment", "reg-auth"): _deployment(token_ready),
        ("PersistentVolumeClaim", "reg-data"): {"status": {"phase": claim_phase}},
        ("Service", "reg"): {"spec": {"clusterIP": "10.96.0.10"}},
    }


def _conditions(built: RegistryInputs, live: dict[Any, Any]) -> dict[str, tuple[Any, str]]:
    return {c.type: (c.status, c.reason) for c in observe(built, live).conditions}


def test_a_rolled_out_registry_is_ready() -> None:
    outcome = observe(inputs(_spec()), _live())
    conditions = {c.type: (c.status, c.reason) for c in outcome.conditions}
    assert conditions == {
        "Ready": (True, "Available"),
        "Progressing": (False, "RolloutComplete"),
        "Degraded": (False, "AsExpected"),
        "StorageReady": (True, "Bound"),
        "ReadOnly": (False, "ReadWrite"),
    }
    assert outcome.fields == {
        "endpoint": {"internal": "reg.team.svc:5000"},
        "readyReplicas": 1,
        "caConfigMap": "reg-ca",
    }


def test_readiness_names_what_is_missing_first() -> None:
    built = inputs(_spec())
    assert _conditions(built, _live(claim_phase="Pending"))["Ready"] == (False, "StorageNotReady")
    assert _conditions(built, _live(token_ready=0))["Ready"] == (False, "TokenServerUnavailable")
    assert _conditions(built, _live(ready=0))["Ready"] == (False, "DeploymentUnavailable")
    assert _conditions(inputs(_spec(replicas=0)), _live())["Ready"] == (False, "ScaledToZero")
    claimless = _live()
    del claimless[("PersistentVolumeClaim", "reg-data")]
    assert _conditions(built, claimless)["StorageReady"] == (False, "ClaimNotFound")


def test_a_cert_manager_registry_waits_for_its_secret() -> None:
    spec = _spec(tls={"mode": "CertManager", "issuerRef": {"name": "ca", "kind": "Issuer"}})
    built = inputs(spec)
    assert _conditions(built, _live())["Ready"] == (False, "WaitingForCertificate")
    issued = {**_live(), ("Secret", "reg-tls"): {"data": {}}}
    assert _conditions(built, issued)["Ready"] == (True, "Available")


def test_read_only_turns_true_only_once_the_rollout_is_done() -> None:
    built = inputs(_spec(readOnly=True))
    assert _conditions(built, _live())["ReadOnly"] == (True, "SpecReadOnly")
    rolling = {**_live(), ("Deployment", "reg"): _deployment(1, generation=2, observed=1)}
    assert _conditions(built, rolling)["ReadOnly"] == (False, "RollingOut")
    assert _conditions(built, rolling)["Progressing"] == (True, "RollingOut")


def test_a_stuck_rollout_is_degraded() -> None:
    live = _live()
    live[("Deployment", "reg")]["status"]["conditions"].append(
        {"type": "Progressing", "reason": "ProgressDeadlineExceeded", "message": "stuck"}
    )
    assert _conditions(inputs(_spec()), live)["Degraded"] == (True, "ProgressDeadlineExceeded")


def test_the_external_host_comes_from_ingress_route_or_load_balancer() -> None:
    built = inputs(_spec(expose={"ingress": {"host": "r.example.com"}}))
    ingress = {("Ingress", "reg"): {"spec": {"rules": [{"host": "r.example.com"}]}}}
    assert external_host(built, ingress) == "r.example.com"
    balanced = inputs(_spec(expose={"service": {"type": "LoadBalancer", "port": 443}}))
    service = {("Service", "reg"): {"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}}
    assert external_host(balanced, service) == "1.2.3.4:443"
    assert external_host(inputs(_spec()), {}) is None
