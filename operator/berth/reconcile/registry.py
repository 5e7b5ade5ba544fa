"""The Registry reconciler: one idempotent pass, whatever triggered it.

    read the Registry -> check what admission cannot -> material (secrets, certificates)
    -> apply every child that differs -> delete children no longer wanted
    -> observe the children -> write status only when it changed

Passes for one Registry never overlap (a lock per object), so a child's event, the slow
timer and kopf's create/update handlers can all ask for a pass at any time.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import secrets
import time
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any, Final

import bcrypt
from pydantic import ValidationError

from berth import pki
from berth.api.registry import (
    AuthMode,
    ManagementState,
    RegistryConditionType,
    RegistrySpec,
    TLSMode,
)
from berth.constants import (
    CONDITION_READ_ONLY,
    REGISTRY_KIND,
    notifications_url,
    operator_image,
)
from berth.k8s.api import JSON, ApiException, Kube
from berth.k8s.events import post_event
from berth.k8s.kinds import (
    CLUSTER_ROLE_BINDING,
    DEPLOYMENT,
    INGRESS,
    NETWORK_POLICY,
    PDB,
    PVC,
    REGISTRY,
    ROUTE,
    SECRET,
    SERVICE,
    STORAGE_CLASS,
)
from berth.observability import RECONCILE_SECONDS, RECONCILES, REDACTOR
from berth.reconcile.access import robots_for_htpasswd, state_secret_name
from berth.reconcile.conditions import Cond, find, merge_conditions
from berth.reconcile.invalid import InvalidSpec, api_message, validation_message
from berth.reconcile.locks import ObjectLocks
from berth.reconcile.unmanaged import probe_external
from berth.resources import tokenserver
from berth.resources.registry import (
    ADMIN_USER,
    RegistryInputs,
    RegistryMaterial,
    RegistryNames,
    TLSMaterial,
    desired_children,
    service,
    serving_names,
)

logger = logging.getLogger(__name__)

FOUNDATION_KINDS: Final = frozenset(
    {"ServiceAccount", "ConfigMap", "Secret", "PersistentVolumeClaim", "Certificate"}
)
ROUTE_API: Final = "route.openshift.io/v1"
CERT_MANAGER_API: Final = "cert-manager.io/v1"

READY = RegistryConditionType.READY.value
PROGRESSING = RegistryConditionType.PROGRESSING.value
DEGRADED = RegistryConditionType.DEGRADED.value
STORAGE_READY = RegistryConditionType.STORAGE_READY.value


@dataclass
class Outcome:
    conditions: list[Cond]
    fields: dict[str, Any] = field(default_factory=dict)
    writes: int = 0  # child writes this pass made

    @property
    def ready(self) -> Cond:
        return next(c for c in self.conditions if c.type == READY)


_locks = ObjectLocks()


def forget(namespace: str, name: str) -> None:
    _locks.forget(namespace, name)


def exclusive(namespace: str, name: str) -> AbstractAsyncContextManager[None]:
    """Hold off this kind of pass for one Registry (e.g. while it is being deleted)."""
    return _locks.hold(namespace, name)


async def reconcile_registry(kube: Kube, namespace: str, name: str) -> Outcome | None:
    """One pass for one Registry; None when it is gone or being deleted."""
    started = time.monotonic()
    async with _locks.hold(namespace, name):
        registry = await kube.get(REGISTRY, namespace, name)
        if registry is None or registry["metadata"].get("deletionTimestamp"):
            return None
        try:
            outcome = await _reconcile(kube, registry)
        except Exception:
            RECONCILES.labels(REGISTRY_KIND, "error").inc()
            raise
        finally:
            RECONCILE_SECONDS.labels(REGISTRY_KIND).observe(time.monotonic() - started)
        RECONCILES.labels(REGISTRY_KIND, "ok" if outcome.ready.status else "not-ready").inc()
        return outcome


async def _reconcile(kube: Kube, registry: JSON) -> Outcome:
    status = registry.get("status") or {}
    if not status.get("conditions"):
        # First visit: say that nothing is known yet before doing any work.
        first = Outcome([Cond(READY, None, "Reconciling", "Berth is setting up the registry")])
        await _publish(kube, registry, first)
    try:
        spec = RegistrySpec.model_validate(registry.get("spec") or {})
        if spec.management_state is ManagementState.MANAGED:
            outcome = await _managed(kube, registry, spec)
        elif spec.management_state is ManagementState.UNMANAGED:
            outcome = await _unmanaged(kube, registry, spec)
        else:
            outcome = await _removed(kube, registry, spec)
    except ValidationError as error:
        outcome = _invalid(validation_message(error))
    except InvalidSpec as error:
        outcome = _invalid(str(error))
    await _publish(kube, registry, outcome)
    return outcome


def _invalid(message: str) -> Outcome:
    return Outcome(
        [
            Cond(READY, False, "InvalidSpec", message),
            Cond(
                PROGRESSING, False, "InvalidSpec", "Nothing is rolled out until the spec is fixed"
            ),
            Cond(DEGRADED, True, "InvalidSpec", message),
        ]
    )


# -- status ------------------------------------------------------------------------------


async def _publish(kube: Kube, registry: JSON, outcome: Outcome) -> None:
    """Write status when, and only when, something in it changed; post an Event when
    Ready changes its reason."""
    metadata = registry["metadata"]
    old = registry.get("status") or {}
    generation = metadata.get("generation")
    # Only the fields this pass owns: the access pass writes accessNamespaces and
    # lastCredentialRotation, and a merge patch of the whole status would undo them.
    new = {
        **outcome.fields,
        "observedGeneration": generation,
        "conditions": merge_conditions(old.get("conditions"), outcome.conditions, generation),
    }
    changed = {key: value for key, value in new.items() if old.get(key) != value}
    if not changed:
        return
    patched = await kube.merge_patch(
        REGISTRY, metadata["namespace"], metadata["name"], {"status": changed}, status=True
    )
    registry["status"] = patched.get("status", {**old, **new})
    before, after = find(old.get("conditions"), READY), find(new["conditions"], READY)
    if after and (before is None or before.get("reason") != after.get("reason")):
        if after["status"] == "False" and after["reason"] not in ("Removed", "ScaledToZero"):
            await post_event(
                kube, registry, reason=after["reason"], message=after["message"], warning=True
            )
        elif after["status"] == "True":
            await post_event(kube, registry, reason="Ready", message=after["message"])


# -- Managed -----------------------------------------------------------------------------


def _decode(secret: JSON | None, key: str) -> str | None:
    value = ((secret or {}).get("data") or {}).get(key)
    return base64.b64decode(value).decode() if value else None


async def _check_references(kube: Kube, namespace: str, spec: RegistrySpec) -> None:
    """What admission cannot see: the objects and APIs the spec relies on."""
    storage = spec.storage
    if storage and storage.pvc and storage.pvc.existing_claim:
        if await kube.get(PVC, namespace, storage.pvc.existing_claim) is None:
            raise InvalidSpec(
                f"spec.storage.pvc.existingClaim: PersistentVolumeClaim "
                f"{storage.pvc.existing_claim!r} does not exist in namespace {namespace}"
            )
    elif (
        storage
        and storage.pvc
        and storage.pvc.storage_class_name
        and await kube.get(STORAGE_CLASS, None, storage.pvc.storage_class_name) is None
    ):
        raise InvalidSpec(
            f"spec.storage.pvc.storageClassName: StorageClass "
            f"{storage.pvc.storage_class_name!r} does not exist"
        )
    if storage and storage.s3 and storage.s3.secret_ref:
        secret = await kube.get(SECRET, namespace, storage.s3.secret_ref.name)
        missing = [
            k for k in ("accessKey", "secretKey") if not (secret or {}).get("data", {}).get(k)
        ]
        if secret is None or missing:
            raise InvalidSpec(
                f"spec.storage.s3.secretRef: Secret {storage.s3.secret_ref.name!r} "
                + ("does not exist" if secret is None else f"lacks {', '.join(missing)}")
            )
    if spec.tls.mode is TLSMode.SECRET:
        name = spec.tls.secret_name
        secret = await kube.get(SECRET, namespace, str(name))
        if secret is None or not _decode(secret, "tls.crt") or not _decode(secret, "tls.key"):
            raise InvalidSpec(
                f"spec.tls.secretName: Secret {name!r} "
                + ("does not exist" if secret is None else "lacks tls.crt or tls.key")
            )
    if spec.tls.mode is TLSMode.CERT_MANAGER and not await kube.has_api(CERT_MANAGER_API):
        raise InvalidSpec(
            "spec.tls.mode: CertManager needs cert-manager (cert-manager.io/v1), which this "
            "cluster does not serve; use SelfSigned or Secret"
        )
    route = spec.expose.route
    if route is not None and route.enabled and not await kube.has_api(ROUTE_API):
        raise InvalidSpec(
            "spec.expose.route: Routes need OpenShift's route.openshift.io/v1 API, which this "
            "cluster does not serve; use spec.expose.ingress instead"
        )


async def _material(
    kube: Kube, registry: JSON, spec: RegistrySpec, names: RegistryNames, cluster_ip: str | None
) -> RegistryMaterial:
    """Secrets and certificates: reused while valid, generated when missing."""
    namespace = registry["metadata"]["namespace"]
    stored = await kube.get(SECRET, namespace, names.secrets)
    http_secret = _decode(stored, "http-secret") or secrets.token_hex(32)
    REDACTOR.register(http_secret)

    htpasswd = admin_password = token_signing = None
    if spec.auth.mode is not AuthMode.NONE:
        admin = await kube.get(SECRET, namespace, names.admin)
        admin_password = _decode(admin, "password") or secrets.token_urlsafe(32)
        REDACTOR.register(admin_password)
    if spec.auth.mode is AuthMode.HTPASSWD:
        assert admin_password is not None
        # Keep the admin's line while it matches (a fresh salt would roll the Pods), and
        # add the robots the access pass keeps: htpasswd is read once, at start.
        admin_line = next(
            (
                line
                for line in (_decode(stored, "htpasswd") or "").splitlines()
                if _htpasswd_has(line, ADMIN_USER, admin_password)
            ),
            None,
        )
        if admin_line is None:
            hashed = bcrypt.hashpw(admin_password.encode(), bcrypt.gensalt(10)).decode()
            admin_line = f"{ADMIN_USER}:{hashed}"
        robots = robots_for_htpasswd(
            await kube.get(SECRET, namespace, state_secret_name(names.registry))
        )
        htpasswd = "".join(f"{line}\n" for line in [admin_line, *(f"{u}:{h}" for u, h in robots)])
    elif spec.auth.mode is AuthMode.TOKEN:
        signing = await kube.get(SECRET, namespace, names.token_signing)
        cert, key = _decode(signing, "tls.crt"), _decode(signing, "tls.key")
        if not cert or not key:
            # Self-signed and long-lived: the registry trusts exactly this certificate.
            pair = pki.new_ca(f"berth {namespace}/{names.registry} token signing")
            cert, key = pair.cert_pem, pair.key_pem
        token_signing = TLSMaterial(cert, key)

    ca = serving = token_server_tls = None
    wanted = serving_names(RegistryInputs(registry, spec, RegistryMaterial(""), False), cluster_ip)
    token_tls = spec.auth.mode is AuthMode.TOKEN and spec.tls.mode is not TLSMode.DISABLED
    if spec.tls.mode is TLSMode.SELF_SIGNED or token_tls:
        ca_secret = await kube.get(SECRET, namespace, names.ca_secret)
        ca_pair = pki.CertKey(
            _decode(ca_secret, "ca.crt") or "", _decode(ca_secret, "ca.key") or ""
        )
        if not ca_pair.cert_pem or not pki.ca_is_usable(ca_pair):
            ca_pair = pki.new_ca(f"berth {namespace}/{names.registry} CA")
        ca = TLSMaterial(ca_pair.cert_pem, ca_pair.key_pem)
        if token_tls:
            server = names.token_server
            token_server_tls = await _serving_certificate(
                kube, namespace, tokenserver.tls_secret_name(names), ca_pair,
                [f"{server}.{namespace}.svc", f"{server}.{namespace}.svc.cluster.local",
                 f"{server}.{namespace}", server],
            )  # fmt: skip
    if spec.tls.mode is TLSMode.SELF_SIGNED:
        assert ca is not None
        serving = await _serving_certificate(
            kube, namespace, names.tls, pki.CertKey(ca.cert_pem, ca.key_pem), wanted
        )
    elif spec.tls.mode in (TLSMode.SECRET, TLSMode.CERT_MANAGER):
        # Someone else's certificate: only its content matters here, so that a renewal
        # rolls the Pods (the registry reads its certificate once, at start).
        secret_name = names.tls if spec.tls.mode is TLSMode.CERT_MANAGER else spec.tls.secret_name
        issued_secret = await kube.get(SECRET, namespace, str(secret_name))
        cert = _decode(issued_secret, "tls.crt")
        serving = TLSMaterial(cert, "") if cert else None
    notifications_token = None
    if notifications_url() is not None:
        notifications = await kube.get(SECRET, namespace, names.notifications)
        notifications_token = _decode(notifications, "token") or secrets.token_urlsafe(32)
        REDACTOR.register(notifications_token)
    return RegistryMaterial(
        notifications_token=notifications_token,
        http_secret=http_secret,
        ca=ca,
        serving=serving,
        htpasswd=htpasswd,
        admin_password=admin_password,
        token_signing=token_signing,
        serving_names=tuple(wanted),
        token_server_tls=token_server_tls,
    )


async def _serving_certificate(
    kube: Kube, namespace: str, secret_name: str, ca: pki.CertKey, names: list[str]
) -> TLSMaterial:
    """The certificate in `secret_name` while it is valid for `names`, else a new one."""
    stored = await kube.get(SECRET, namespace, secret_name)
    cert, key = _decode(stored, "tls.crt"), _decode(stored, "tls.key")
    reason = pki.needs_renewal(cert, names, ca_pem=ca.cert_pem) if cert and key else "new"
    if reason is not None or cert is None or key is None:
        logger.info("issuing a certificate for %s/%s (%s)", namespace, secret_name, reason)
        issued = pki.issue_serving(ca, names)
        cert, key = issued.cert_pem, issued.key_pem
    return TLSMaterial(cert, key, ca.cert_pem)


def _htpasswd_has(htpasswd: str, user: str, password: str) -> bool:
    for line in htpasswd.splitlines():
        name, _, hashed = line.partition(":")
        if name == user:
            return bcrypt.checkpw(password.encode(), hashed.encode())
    return False


async def _managed(kube: Kube, registry: JSON, spec: RegistrySpec) -> Outcome:
    metadata = registry["metadata"]
    namespace = metadata["namespace"]
    names = RegistryNames(metadata["name"])
    await _check_references(kube, namespace, spec)
    openshift = await kube.has_api(ROUTE_API)

    # The Service first: its cluster IP belongs in the serving certificate.
    service_written, live_service = await kube.ensure(
        service(RegistryInputs(registry, spec, RegistryMaterial(""), openshift))
    )
    cluster_ip = live_service.get("spec", {}).get("clusterIP")
    material = await _material(kube, registry, spec, names, cluster_ip)
    inputs = RegistryInputs(registry, spec, material, openshift, notifications_url())
    writes = int(service_written)
    live: dict[tuple[str, str], JSON] = {}
    children = desired_children(inputs)
    if spec.auth.mode is AuthMode.TOKEN:
        children += tokenserver.token_server_children(inputs, operator_image())

    async def ensure(child: JSON) -> None:
        nonlocal writes
        try:
            written, state = await kube.ensure(child)
        except ApiException as error:
            if error.status in (400, 422):
                raise InvalidSpec(api_message(child, error)) from error
            raise
        writes += written
        live[(child["kind"], child["metadata"]["name"])] = state

    # What Pods need to start (ServiceAccounts, config, Secrets, claims) goes first, so
    # that no ReplicaSet backs off on a missing ServiceAccount; within a stage, in parallel.
    foundation = [c for c in children if c["kind"] in FOUNDATION_KINDS]
    rest = [c for c in children if c["kind"] not in FOUNDATION_KINDS]
    for stage in (foundation, rest):
        await asyncio.gather(*(ensure(child) for child in stage))
    writes += await _delete_stale(kube, namespace, names, inputs, openshift)
    outcome = await _observe(kube, inputs, live)
    outcome.writes = writes
    return outcome


async def _delete_stale(
    kube: Kube, namespace: str, names: RegistryNames, inputs: RegistryInputs, openshift: bool
) -> int:
    spec = inputs.spec
    stale = []
    if spec.replicas <= 1:
        stale.append((PDB, names.deployment))
    if spec.expose.ingress is None or (spec.expose.route and spec.expose.route.enabled):
        stale.append((INGRESS, names.service))
    if openshift and not (spec.expose.route and spec.expose.route.enabled):
        stale.append((ROUTE, names.service))
    deleted = 0
    for kind, name in stale:
        if await kube.get(kind, namespace, name) is not None:
            deleted += await kube.delete(kind, namespace, name)
    return deleted


async def _observe(
    kube: Kube, inputs: RegistryInputs, live: dict[tuple[str, str], JSON]
) -> Outcome:
    namespace, names, spec = inputs.namespace, inputs.names, inputs.spec
    deployment = live[("Deployment", names.deployment)]
    storage = await _storage_condition(kube, namespace, names, spec, live)
    dep_status = deployment.get("status") or {}
    wanted = spec.replicas
    ready = int(dep_status.get("readyReplicas") or 0)
    available = int(dep_status.get("availableReplicas") or 0)
    updated = int(dep_status.get("updatedReplicas") or 0)
    total = int(dep_status.get("replicas") or 0)
    observed = (dep_status.get("observedGeneration") or 0) >= deployment["metadata"].get(
        "generation", 0
    )
    rolling = not observed or updated < wanted or total > wanted or ready < wanted
    progressing = (
        Cond(
            PROGRESSING,
            True,
            "RollingOut",
            f"{ready}/{wanted} registry Pods ready, {updated} updated",
        )
        if rolling
        else Cond(PROGRESSING, False, "RolloutComplete", f"{ready}/{wanted} registry Pods ready")
    )
    dep_conditions = dep_status.get("conditions") or []
    stuck = find(dep_conditions, "Progressing")
    failure = find(dep_conditions, "ReplicaFailure")
    if stuck and stuck.get("reason") == "ProgressDeadlineExceeded":
        degraded = Cond(DEGRADED, True, "ProgressDeadlineExceeded", str(stuck.get("message", "")))
    elif failure and failure.get("status") == "True":
        degraded = Cond(DEGRADED, True, "ReplicaFailure", str(failure.get("message", "")))
    else:
        degraded = Cond(DEGRADED, False, "AsExpected", "")
    deployment_available = (find(dep_conditions, "Available") or {}).get("status") == "True"
    if wanted == 0:
        readiness = Cond(READY, False, "ScaledToZero", "spec.replicas is 0")
    elif not storage.status:
        readiness = Cond(READY, False, "StorageNotReady", storage.message)
    elif spec.tls.mode is TLSMode.CERT_MANAGER and not await kube.get(SECRET, namespace, names.tls):
        readiness = Cond(
            READY,
            False,
            "WaitingForCertificate",
            f"cert-manager has not issued Secret {names.tls} yet (Certificate {names.tls})",
        )
    elif (token := _token_server_unavailable(spec, names, live)) is not None:
        readiness = Cond(READY, False, "TokenServerUnavailable", token)
    elif available >= 1 and deployment_available:
        readiness = Cond(READY, True, "Available", f"{available}/{wanted} registry Pods available")
    else:
        readiness = Cond(
            READY, False, "DeploymentUnavailable", f"{available}/{wanted} registry Pods available"
        )
    conditions = [readiness, progressing, degraded, storage, _read_only(inputs, rolling)]
    port = spec.expose.service.port
    endpoint: dict[str, Any] = {"internal": f"{names.service}.{namespace}.svc:{port}"}
    external = _external_host(spec, live)
    if external:
        endpoint["external"] = external
    fields: dict[str, Any] = {"endpoint": endpoint, "readyReplicas": ready}
    if spec.tls.mode is TLSMode.SELF_SIGNED:
        fields["caConfigMap"] = names.ca_config_map
    return Outcome(conditions, fields)


def _token_server_unavailable(
    spec: RegistrySpec, names: RegistryNames, live: dict[tuple[str, str], JSON]
) -> str | None:
    if spec.auth.mode is not AuthMode.TOKEN:
        return None
    server = live.get(("Deployment", names.token_server)) or {}
    available = int((server.get("status") or {}).get("availableReplicas") or 0)
    if available >= 1:
        return None
    return f"the token server {names.token_server} has no available Pod; clients cannot log in"


def _read_only(inputs: RegistryInputs, rolling: bool) -> Cond:
    """True once every Pod serves a read-only config (storage GC waits for this)."""
    if not inputs.read_only:
        return Cond(CONDITION_READ_ONLY, False, "ReadWrite", "pushes and deletes are served")
    why = "Maintenance" if inputs.maintenance else "SpecReadOnly"
    if rolling:
        return Cond(CONDITION_READ_ONLY, False, "RollingOut", "Pods are switching to read-only")
    return Cond(CONDITION_READ_ONLY, True, why, "pushes and deletes are refused")


def _external_host(spec: RegistrySpec, live: dict[tuple[str, str], JSON]) -> str | None:
    for kind in ("Route", "Ingress"):
        for (child_kind, _), state in live.items():
            if child_kind != kind:
                continue
            if kind == "Route":
                host = state.get("spec", {}).get("host")
            else:
                rules = state.get("spec", {}).get("rules") or [{}]
                host = rules[0].get("host")
            if host:
                return str(host)
    if spec.expose.service.type.value == "LoadBalancer":
        for (child_kind, _), state in live.items():
            if child_kind == "Service":
                ingress = state.get("status", {}).get("loadBalancer", {}).get("ingress") or []
                if ingress:
                    host = ingress[0].get("hostname") or ingress[0].get("ip")
                    return f"{host}:{spec.expose.service.port}"
    return None


async def _storage_condition(
    kube: Kube,
    namespace: str,
    names: RegistryNames,
    spec: RegistrySpec,
    live: dict[tuple[str, str], JSON],
) -> Cond:
    storage = spec.storage
    assert storage is not None
    if storage.empty_dir is not None:
        return Cond(
            STORAGE_READY, True, "EmptyDir", "Pod-local storage: images do not survive the Pod"
        )
    if storage.s3 is not None:
        return Cond(STORAGE_READY, True, "S3", f"bucket {storage.s3.bucket}")
    assert storage.pvc is not None
    claim_name = storage.pvc.existing_claim or names.pvc
    claim = live.get(("PersistentVolumeClaim", claim_name)) or await kube.get(
        PVC, namespace, claim_name
    )
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


async def delete_cluster_children(kube: Kube, namespace: str, name: str) -> int:
    """Cluster-scoped children, which ownerReferences cannot clean up."""
    binding = tokenserver.cluster_role_binding_name(namespace, RegistryNames(name))
    return int(await kube.delete(CLUSTER_ROLE_BINDING, None, binding))


# -- Removed and Unmanaged ---------------------------------------------------------------


async def _removed(kube: Kube, registry: JSON, spec: RegistrySpec) -> Outcome:
    """The workload goes; storage, certificates and credentials stay, so that turning
    the registry back on finds its images and its clients still trust it."""
    namespace = registry["metadata"]["namespace"]
    names = RegistryNames(registry["metadata"]["name"])
    doomed = [
        (DEPLOYMENT, names.deployment),
        (SERVICE, names.service),
        (PDB, names.deployment),
        (NETWORK_POLICY, names.deployment),
        (INGRESS, names.service),
        (DEPLOYMENT, names.token_server),
        (SERVICE, names.token_server),
    ]
    if await kube.has_api(ROUTE_API):
        doomed.append((ROUTE, names.service))
    pvc = spec.storage.pvc if spec.storage else None
    if pvc is not None and pvc.delete_on_remove and pvc.existing_claim is None:
        doomed.append((PVC, names.pvc))
    writes = 0
    for kind, name in doomed:
        if await kube.get(kind, namespace, name) is not None:
            writes += await kube.delete(kind, namespace, name)
    kept = "storage deleted (deleteOnRemove)" if pvc and pvc.delete_on_remove else "storage kept"
    return Outcome(
        [
            Cond(READY, False, "Removed", f"managementState is Removed: workload deleted, {kept}"),
            Cond(PROGRESSING, False, "Removed", ""),
            Cond(DEGRADED, False, "Removed", ""),
        ],
        {"readyReplicas": 0},
        writes,
    )


async def _unmanaged(kube: Kube, registry: JSON, spec: RegistrySpec) -> Outcome:
    assert spec.external is not None
    namespace = registry["metadata"]["namespace"]
    result = await probe_external(kube, namespace, spec.external)
    readiness = (
        Cond(READY, True, "Reachable", result.message)
        if result.ok
        else Cond(READY, False, result.reason, result.message)
    )
    return Outcome(
        [
            readiness,
            Cond(PROGRESSING, False, "Unmanaged", "Berth does not run this registry"),
            Cond(
                DEGRADED,
                not result.ok,
                result.reason if not result.ok else "AsExpected",
                "" if result.ok else result.message,
            ),
        ],
        {"endpoint": {"external": spec.external.url}},
    )
