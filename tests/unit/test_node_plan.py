"""What the node agent plans for a Registry, from the objects alone."""

from __future__ import annotations

import copy
from typing import Any

from berth.node.plan import registry_plan
from tests.unit.test_registry_builders import OWNER, sample_specs

CA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
SERVICES = {
    "reg": {"spec": {"clusterIP": "10.96.0.10"}},
    "reg-auth": {"spec": {"clusterIP": "10.96.0.11"}},
}
CA_MAP = {"data": {"ca.crt": CA}}


def _registry(**changes: Any) -> dict[str, Any]:
    spec = copy.deepcopy(sample_specs()[0])  # Token auth, SelfSigned TLS
    spec.update(changes)
    return {**OWNER, "spec": spec}


def test_a_token_registry_resolves_its_service_and_realm_and_trusts_its_ca() -> None:
    plan = registry_plan(_registry(), SERVICES, CA_MAP)
    assert plan is not None
    assert plan.owner == "team/reg"
    assert plan.addresses == {
        "reg.team.svc": "10.96.0.10",
        "reg.team.svc.cluster.local": "10.96.0.10",
        "reg-auth.team.svc": "10.96.0.11",
    }
    assert [(t.host, t.ca_pem, t.server) for t in plan.trusts] == [
        ("reg.team.svc:5000", CA, None),
        ("reg.team.svc.cluster.local:5000", CA, None),
    ]
    assert plan.problems == []


def test_missing_service_keeps_the_last_good_line_and_missing_ca_is_said() -> None:
    plan = registry_plan(_registry(), {}, None)
    assert plan is not None
    assert set(plan.addresses.values()) == {None}
    assert plan.trusts == []
    assert plan.problems == ["ConfigMap reg-ca has no ca.crt yet"]


def test_unmanaged_and_removed_registries_get_no_plan() -> None:
    removed = _registry(managementState="Removed")
    assert registry_plan(removed, SERVICES, CA_MAP) is None
    unmanaged = {
        **OWNER,
        "spec": {"managementState": "Unmanaged", "external": {"url": "https://r.example"}},
    }
    assert registry_plan(unmanaged, SERVICES, CA_MAP) is None


def test_htpasswd_needs_no_realm_and_disabled_tls_no_trust() -> None:
    plan = registry_plan(
        _registry(auth={"mode": "Htpasswd"}, tls={"mode": "Disabled"}), SERVICES, None
    )
    assert plan is not None
    assert "reg-auth.team.svc" not in plan.addresses
    assert plan.trusts == []
    assert plan.problems == [
        "TLS is disabled: containerd needs an http:// server entry, not written yet"
    ]
