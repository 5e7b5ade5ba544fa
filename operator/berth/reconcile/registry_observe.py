"""A Managed Registry's conditions and status fields, observed from its live children.

Pure: the pass reads the objects (`Live`), this module only looks at them, so every
condition can be checked in unit tests without a cluster.
"""

from __future__ import annotations

from typing import Any

from berth.api.common import ConditionType
from berth.api.registry import AuthMode, RegistryConditionType, TLSMode
from berth.k8s.api import JSON
from berth.reconcile.conditions import Cond, find
from berth.reconcile.kit import Outcome
from berth.resources.registry import RegistryInputs

READY = ConditionType.READY
PROGRESSING = ConditionType.PROGRESSING
DEGRADED = ConditionType.DEGRADED
STORAGE_READY = RegistryConditionType.STORAGE_READY
READ_ONLY = RegistryConditionType.READ_ONLY

# The live children a pass read, by (kind, name).
Live = dict[tuple[str, str], JSON]


def observe(inputs: RegistryInputs, live: Live) -> Outcome:
    """Ready, Progressing, Degraded, StorageReady and ReadOnly, and status.endpoint,
    readyReplicas and caConfigMap."""
    names, spec = inputs.names, inputs.spec
    deployment = live[("Deployment", names.deployment)]
    rollout = Rollout(deployment, spec.replicas)
    storage = storage_condition(inputs, live)
    conditions = [
        _readiness(inputs, live, rollout, storage),
        rollout.progressing(),
        rollout.degraded(),
        storage,
        read_only_condition(inputs, rollout.rolling),
    ]
    port = spec.expose.service.port
    endpoint: dict[str, Any] = {"internal": f"{names.service}.{inputs.namespace}.svc:{port}"}
    external = external_host(inputs, live)
    if external:
        endpoint["external"] = external
    fields: dict[str, Any] = {"endpoint": endpoint, "readyReplicas": rollout.ready}
    if spec.tls.mode is TLSMode.SELF_SIGNED:
        fields["caConfigMap"] = names.ca_config_map
    return Outcome(conditions, fields)


class Rollout:
    """A Deployment's rollout (the registry's, the token server's), as its status
    tells it."""

    def __init__(self, deployment: JSON, wanted: int) -> None:
        status = deployment.get("status") or {}
        self.wanted = wanted
        self.ready = int(status.get("readyReplicas") or 0)
        self.available = int(status.get("availableReplicas") or 0)
        self.updated = int(status.get("updatedReplicas") or 0)
        total = int(status.get("replicas") or 0)
        observed = (status.get("observedGeneration") or 0) >= deployment["metadata"].get(
            "generation", 0
        )
        self.rolling = (
            not observed or self.updated < wanted or total > wanted or self.ready < wanted
        )
        self.conditions = status.get("conditions") or []
        self.deployment_available = (find(self.conditions, "Available") or {}).get(
            "status"
        ) == "True"

    def progressing(self) -> Cond:
        if self.rolling:
            return Cond(
                PROGRESSING,
                True,
                "RollingOut",
                f"{self.ready}/{self.wanted} registry Pods ready, {self.updated} updated",
            )
        return Cond(
            PROGRESSING, False, "RolloutComplete", f"{self.ready}/{self.wanted} registry Pods ready"
        )

    def degraded(self) -> Cond:
        stuck = find(self.conditions, "Progressing")
        failure = find(self.conditions, "ReplicaFailure")
        if stuck and stuck.get("reason") == "ProgressDeadlineExceeded":
            return Cond(DEGRADED, True, "ProgressDeadlineExceeded", str(stuck.get("message", "")))
        if failure and failure.get("status") == "True":
            return Cond(DEGRADED, True, "ReplicaFailure", str(failure.get("message", "")))
        return Cond(DEGRADED, False, "AsExpected", "")


def _readiness(inputs: RegistryInputs, live: Live, rollout: Rollout, storage: Cond) -> Cond:
    names, spec, wanted = inputs.names, inputs.spec, rollout.wanted
    if wanted == 0:
        return Cond(READY, False, "ScaledToZero", "spec.replicas is 0")
    if not storage.status:
        return Cond(READY, False, "StorageNotReady", storage.message)
    if spec.tls.mode is TLSMode.CERT_MANAGER and not live.get(("Secret", names.tls)):
        return Cond(
            READY,
            False,
            "WaitingForCertificate",
            f"cert-manager has not issued Secret {names.tls} yet (Certificate {names.tls})",
        )
    token = token_server_unavailable(inputs, live)
    if token is not None:
        return Cond(READY, False, "TokenServerUnavailable", token)
    if rollout.available >= 1 and rollout.deployment_available:
        return Cond(
            READY, True, "Available", f"{rollout.available}/{wanted} registry Pods available"
        )
    return Cond(
        READY,
        False,
        "DeploymentUnavailable",
        f"{rollout.available}/{wanted} registry Pods available",
    )


def token_server_unavailable(inputs: RegistryInputs, live: Live) -> str | None:
    if inputs.spec.auth.mode is not AuthMode.TOKEN:
        return None
    server_name = inputs.names.token_server
    server = live.get(("Deployment", server_name)) or {}
    if int((server.get("status") or {}).get("availableReplicas") or 0) >= 1:
        return None
    return f"the token server {server_name} has no available Pod; clients cannot log in"


def read_only_condition(inputs: RegistryInputs, rolling: bool) -> Cond:
    """True once every Pod serves a read-only config (storage GC waits for this)."""
    if not inputs.read_only:
        return Cond(READ_ONLY, False, "ReadWrite", "pushes and deletes are served")
    why = "Maintenance" if inputs.maintenance else "SpecReadOnly"
    if rolling:
        return Cond(READ_ONLY, False, "RollingOut", "Pods are switching to read-only")
    return Cond(READ_ONLY, True, why, "pushes and deletes are refused")


def external_host(inputs: RegistryInputs, live: Live) -> str | None:
    """The host clients outside the cluster use: a Route's or Ingress's host, else a
    LoadBalancer's address."""
    names, service = inputs.names, inputs.spec.expose.service
    route = live.get(("Route", names.service))
    if route and route.get("spec", {}).get("host"):
        return str(route["spec"]["host"])
    ingress = live.get(("Ingress", names.service))
    if ingress:
        host = (ingress.get("spec", {}).get("rules") or [{}])[0].get("host")
        if host:
            return str(host)
    if service.type.value == "LoadBalancer":
        live_service = live.get(("Service", names.service)) or {}
        addresses = live_service.get("status", {}).get("loadBalancer", {}).get("ingress") or []
        if addresses:
            host = addresses[0].get("hostname") or addresses[0].get("ip")
            return f"{host}:{service.port}"
    return None


def storage_condition(inputs: RegistryInputs, live: Live) -> Cond:
    storage = inputs.spec.storage
    assert storage is not None
    if storage.empty_dir is not None:
        return Cond(
            STORAGE_READY, True, "EmptyDir", "Pod-local storage: images do not survive the Pod"
        )
    if storage.s3 is not None:
        return Cond(STORAGE_READY, True, "S3", f"bucket {storage.s3.bucket}")
    assert storage.pvc is not None
    claim_name = storage.pvc.existing_claim or inputs.names.pvc
    claim = live.get(("PersistentVolumeClaim", claim_name))
    if claim is None:
        return Cond(
            STORAGE_READY, False, "ClaimNotFound", f"PersistentVolumeClaim {claim_name} is missing"
        )
    phase = (claim.get("status") or {}).get("phase", "Pending")
    if phase == "Bound":
        return Cond(STORAGE_READY, True, "Bound", f"PersistentVolumeClaim {claim_name} is bound")
    return Cond(
        STORAGE_READY,
        False,
        "ClaimPending" if phase == "Pending" else f"Claim{phase}",
        f"PersistentVolumeClaim {claim_name} is {phase}",
    )
