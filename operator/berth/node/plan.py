"""What one node needs for one Registry, decided from the cluster's objects alone: the
names to resolve (the registry's and its token realm's, to their Services' ClusterIPs)
and the CA to trust for each registry host. Pure; the agent reads the objects and
`files` writes the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlsplit

from berth.api.registry import AuthMode, ManagementState, RegistrySpec, TLSMode
from berth.k8s.api import JSON
from berth.node.files import HostTrust
from berth.resources.registry import RegistryTarget, service_hosts, token_realm


@dataclass
class RegistryPlan:
    owner: str  # <namespace>/<name>: marks every file and line made for this Registry
    addresses: dict[str, str | None] = field(default_factory=dict)  # name -> ClusterIP
    trusts: list[HostTrust] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # why something is left out


def owner_of(registry: JSON) -> str:
    metadata = registry["metadata"]
    return f"{metadata['namespace']}/{metadata['name']}"


def _cluster_ip(service: JSON | None) -> str | None:
    ip = ((service or {}).get("spec") or {}).get("clusterIP")
    return str(ip) if ip and ip != "None" else None


def _bare(host_port: str) -> str:
    return host_port.rsplit(":", 1)[0]


def registry_plan(
    registry: JSON, services: dict[str, JSON], ca_config_map: JSON | None
) -> RegistryPlan | None:
    """The plan for a Managed Registry, or None when Berth does not serve it to nodes
    (Unmanaged, Removed, or a spec that does not validate: its pass reports that).
    `services` holds the Registry's Services by name (the registry's, the token
    server's); a missing ClusterIP keeps the last good line (address None)."""
    spec = RegistrySpec.model_validate(registry.get("spec") or {})
    if spec.management_state is not ManagementState.MANAGED:
        return None
    target = RegistryTarget(registry, spec)
    names, namespace = target.names, target.namespace
    plan = RegistryPlan(owner_of(registry))
    hosts = service_hosts(names.service, namespace, spec.expose.service.port)
    registry_ip = _cluster_ip(services.get(names.service))
    for host in hosts:
        plan.addresses[_bare(host)] = registry_ip
    if spec.auth.mode is AuthMode.TOKEN:
        realm = urlsplit(token_realm(target)).hostname
        assert realm is not None
        plan.addresses[realm] = _cluster_ip(services.get(names.token_server))
    if spec.tls.mode is TLSMode.DISABLED:
        plan.problems.append(
            "TLS is disabled: containerd needs an http:// server entry, not written yet"
        )
        return plan
    ca_pem = ((ca_config_map or {}).get("data") or {}).get("ca.crt")
    if spec.tls.mode is not TLSMode.SELF_SIGNED:
        # A certificate from the user's or cert-manager's issuer: nodes trust it as
        # they trust that issuer; Berth holds no CA to hand out.
        return plan
    if not ca_pem:
        plan.problems.append(f"ConfigMap {names.ca_config_map} has no ca.crt yet")
        return plan
    plan.trusts = [HostTrust(host, str(ca_pem)) for host in hosts]
    return plan
