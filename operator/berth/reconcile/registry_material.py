"""What a Managed Registry's pass reads before it builds anything: the checks admission
cannot make, and the material kept in Secrets (reused while valid, made when missing)."""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass

import bcrypt

from berth import pki
from berth.api.registry import AuthMode, RegistrySpec, TLSMode
from berth.k8s.api import JSON, Kube
from berth.k8s.kinds import DEPLOYMENT, PVC, SECRET, STORAGE_CLASS
from berth.k8s.secrets import secret_value
from berth.observability import REDACTOR
from berth.reconcile import nodes, rotation
from berth.reconcile.access import robots_for_htpasswd, state_secret_name
from berth.reconcile.invalid import InvalidSpec
from berth.reconcile.kit import Note
from berth.reconcile.registry_observe import Rollout
from berth.resources.registry import (
    ADMIN_USER,
    CA_ROTATION_KEY,
    CERT_MANAGER_API,
    ROUTE_API,
    RegistryMaterial,
    RegistryTarget,
    TLSMaterial,
    serving_names,
    token_server_names,
)

logger = logging.getLogger(__name__)


# -- what admission cannot see -----------------------------------------------------------


async def check_references(kube: Kube, namespace: str, spec: RegistrySpec) -> None:
    """The objects and APIs the spec relies on; InvalidSpec names the first missing."""
    await _check_storage(kube, namespace, spec)
    await _check_tls(kube, namespace, spec)
    route = spec.expose.route
    if route is not None and route.enabled and not await kube.has_api(ROUTE_API):
        raise InvalidSpec(
            "spec.expose.route: Routes need OpenShift's route.openshift.io/v1 API, which this "
            "cluster does not serve; use spec.expose.ingress instead"
        )


async def _check_storage(kube: Kube, namespace: str, spec: RegistrySpec) -> None:
    storage = spec.storage
    pvc = storage.pvc if storage else None
    if pvc is not None and pvc.existing_claim:
        if await kube.get(PVC, namespace, pvc.existing_claim) is None:
            raise InvalidSpec(
                f"spec.storage.pvc.existingClaim: PersistentVolumeClaim "
                f"{pvc.existing_claim!r} does not exist in namespace {namespace}"
            )
    elif (
        pvc is not None
        and pvc.storage_class_name
        and await kube.get(STORAGE_CLASS, None, pvc.storage_class_name) is None
    ):
        raise InvalidSpec(
            f"spec.storage.pvc.storageClassName: StorageClass "
            f"{pvc.storage_class_name!r} does not exist"
        )
    s3 = storage.s3 if storage else None
    if s3 is not None and s3.secret_ref:
        secret = await kube.get(SECRET, namespace, s3.secret_ref.name)
        missing = [
            k for k in ("accessKey", "secretKey") if not (secret or {}).get("data", {}).get(k)
        ]
        if secret is None or missing:
            raise InvalidSpec(
                f"spec.storage.s3.secretRef: Secret {s3.secret_ref.name!r} "
                + ("does not exist" if secret is None else f"lacks {', '.join(missing)}")
            )


async def _check_tls(kube: Kube, namespace: str, spec: RegistrySpec) -> None:
    if spec.tls.mode is TLSMode.SECRET:
        name = spec.tls.secret_name
        secret = await kube.get(SECRET, namespace, str(name))
        if (
            secret is None
            or not secret_value(secret, "tls.crt")
            or not secret_value(secret, "tls.key")
        ):
            raise InvalidSpec(
                f"spec.tls.secretName: Secret {name!r} "
                + ("does not exist" if secret is None else "lacks tls.crt or tls.key")
            )
    if spec.tls.mode is TLSMode.CERT_MANAGER and not await kube.has_api(CERT_MANAGER_API):
        raise InvalidSpec(
            "spec.tls.mode: CertManager needs cert-manager (cert-manager.io/v1), which this "
            "cluster does not serve; use SelfSigned or Secret"
        )


# -- material ----------------------------------------------------------------------------


@dataclass(frozen=True)
class MaterialRead:
    """The material, the Events to post (a CA rotation's steps) and when the next pass
    is due for it (seconds; None: no hurry)."""

    material: RegistryMaterial
    notes: list[Note]
    next_check: float | None = None


async def registry_material(
    kube: Kube, target: RegistryTarget, cluster_ip: str | None
) -> MaterialRead:
    """Secrets and certificates: reused while valid, generated when missing."""
    namespace, names = target.namespace, target.names
    stored = await kube.get(SECRET, namespace, names.secrets)
    http_secret = secret_value(stored, "http-secret") or secrets.token_hex(32)
    REDACTOR.register(http_secret)
    admin_password = await _admin_password(kube, target)
    wanted = serving_names(target, cluster_ip)
    ca = await _ca(kube, target)
    material = RegistryMaterial(
        notifications_token=await _notifications_token(kube, target),
        http_secret=http_secret,
        ca=ca.signing,
        ca_trusted=ca.record.trusted if ca.record else (),
        ca_record=ca.record.to_json() if ca.record else None,
        serving=await _serving(kube, target, ca.signing, wanted),
        htpasswd=await _htpasswd(kube, target, stored, admin_password),
        admin_password=admin_password,
        token_signing=await _token_signing(kube, target),
        serving_names=tuple(wanted),
        token_server_tls=ca.token_server_tls,
    )
    return MaterialRead(material, [ca.change] if ca.change else [], ca.next_check)


async def _notifications_token(kube: Kube, target: RegistryTarget) -> str | None:
    """The token the registry's notifications carry, while the operator has an
    endpoint for them: kept when present (a user may bring their own), else made up."""
    if target.notifications_url is None:
        return None
    stored = await kube.get(SECRET, target.namespace, target.names.notifications)
    token = secret_value(stored, "token")
    if token is None:
        return new_token()
    REDACTOR.register(token)
    return token


def new_token() -> str:
    """A fresh shared secret, known to the log redactor before anyone can log it."""
    token = secrets.token_urlsafe(32)
    REDACTOR.register(token)
    return token


async def _admin_password(kube: Kube, target: RegistryTarget) -> str | None:
    if target.spec.auth.mode is AuthMode.NONE:
        return None
    admin = await kube.get(SECRET, target.namespace, target.names.admin)
    password = secret_value(admin, "password") or secrets.token_urlsafe(32)
    REDACTOR.register(password)
    return password


async def _htpasswd(
    kube: Kube, target: RegistryTarget, stored: JSON | None, admin_password: str | None
) -> str | None:
    """Htpasswd: Berth's own line (kept while it matches: a fresh salt would roll the
    Pods) and the robots the access pass keeps (htpasswd is read once, at start)."""
    if target.spec.auth.mode is not AuthMode.HTPASSWD:
        return None
    assert admin_password is not None
    admin_line = next(
        (
            line
            for line in (secret_value(stored, "htpasswd") or "").splitlines()
            if _htpasswd_has(line, ADMIN_USER, admin_password)
        ),
        None,
    )
    if admin_line is None:
        hashed = bcrypt.hashpw(admin_password.encode(), bcrypt.gensalt(10)).decode()
        admin_line = f"{ADMIN_USER}:{hashed}"
    state = await kube.get(SECRET, target.namespace, state_secret_name(target.names.registry))
    robots = robots_for_htpasswd(state)
    return "".join(f"{line}\n" for line in [admin_line, *(f"{u}:{h}" for u, h in robots)])


def _htpasswd_has(htpasswd: str, user: str, password: str) -> bool:
    for line in htpasswd.splitlines():
        name, _, hashed = line.partition(":")
        if name == user:
            return bcrypt.checkpw(password.encode(), hashed.encode())
    return False


async def _token_signing(kube: Kube, target: RegistryTarget) -> TLSMaterial | None:
    """Token: self-signed and long-lived, the registry trusts exactly this certificate."""
    if target.spec.auth.mode is not AuthMode.TOKEN:
        return None
    names = target.names
    signing = await kube.get(SECRET, target.namespace, names.token_signing)
    cert, key = secret_value(signing, "tls.crt"), secret_value(signing, "tls.key")
    if not cert or not key:
        pair = pki.new_ca(f"berth {target.namespace}/{names.registry} token signing")
        cert, key = pair.cert_pem, pair.key_pem
    return TLSMaterial(cert, key)


@dataclass(frozen=True)
class _CA:
    """Berth's CA for a Registry as this pass leaves it, and the token server's
    certificate it signs."""

    signing: TLSMaterial | None = None
    record: rotation.CARotation | None = None
    change: Note | None = None
    token_server_tls: TLSMaterial | None = None
    next_check: float | None = None


async def _ca(kube: Kube, target: RegistryTarget) -> _CA:
    """Berth's CA (SelfSigned, or a Token server with TLS), one rotation step further
    when one is under way (berth.reconcile.rotation), and the token server's
    certificate it signs."""
    spec, namespace, names = target.spec, target.namespace, target.names
    token_tls = spec.auth.mode is AuthMode.TOKEN and spec.tls.mode is not TLSMode.DISABLED
    if spec.tls.mode is not TLSMode.SELF_SIGNED and not token_tls:
        return _CA()
    ca_secret = await kube.get(SECRET, namespace, names.ca_secret)
    pair = pki.CertKey(
        secret_value(ca_secret, "ca.crt") or "", secret_value(ca_secret, "ca.key") or ""
    )
    stored = pair if pki.ca_is_valid(pair) else None
    record = rotation.CARotation.from_json(secret_value(ca_secret, CA_ROTATION_KEY))
    moment, timing = rotation.now(), rotation.TIMING
    annotations = target.owner["metadata"].get("annotations") or {}
    step = rotation.advance_ca(
        stored,
        record,
        request=annotations.get(rotation.ANNOTATION_ROTATE_CA),
        moment=moment,
        timing=timing,
        nodes_hold=rotation.promotion_due(record, moment, timing)
        and await _nodes_hold(kube, target, record.next_cert or ""),
        rolled_out=rotation.retirement_due(record, moment) and await _rolled_out(kube, target),
        new_ca=lambda: pki.new_ca(f"berth {namespace}/{names.registry} CA"),
    )
    if step.change is not None:
        logger.info("CA of Registry %s/%s: %s", namespace, names.registry, step.change.reason)
    token_server_tls = None
    if token_tls:
        token_server_tls = await _serving_certificate(
            kube, namespace, names.token_server_tls, step.ca, token_server_names(target)
        )
    return _CA(
        TLSMaterial(step.ca.cert_pem, step.ca.key_pem),
        step.record,
        step.change,
        token_server_tls,
        rotation.seconds_to_next_step(step.record, moment, timing),
    )


async def _nodes_hold(kube: Kube, target: RegistryTarget, ca_pem: str) -> bool:
    """Whether every node Berth configures for the Registry trusts `ca_pem` already."""
    if not target.spec.node_integration.enabled:
        return True
    return await nodes.agents_hold(kube, target.namespace, target.names.registry, ca_pem)


async def _rolled_out(kube: Kube, target: RegistryTarget) -> bool:
    """Whether every Pod of the registry and token server runs the current template (so
    none serves a certificate of a retired CA)."""
    for name in (target.names.deployment, target.names.token_server):
        found = await kube.get(DEPLOYMENT, target.namespace, name)
        if (
            found is not None
            and Rollout(found, (found.get("spec") or {}).get("replicas", 1)).rolling
        ):
            return False
    return True


async def _serving(
    kube: Kube, target: RegistryTarget, ca: TLSMaterial | None, wanted: list[str]
) -> TLSMaterial | None:
    spec, namespace, names = target.spec, target.namespace, target.names
    if spec.tls.mode is TLSMode.SELF_SIGNED:
        assert ca is not None
        return await _serving_certificate(
            kube, namespace, names.tls, pki.CertKey(ca.cert_pem, ca.key_pem), wanted
        )
    if spec.tls.mode in (TLSMode.SECRET, TLSMode.CERT_MANAGER):
        # Someone else's certificate: only its content matters here, so that a renewal
        # rolls the Pods (the registry reads its certificate once, at start).
        secret_name = names.tls if spec.tls.mode is TLSMode.CERT_MANAGER else spec.tls.secret_name
        cert = secret_value(await kube.get(SECRET, namespace, str(secret_name)), "tls.crt")
        return TLSMaterial(cert, "") if cert else None
    return None


async def _serving_certificate(
    kube: Kube, namespace: str, secret_name: str, ca: pki.CertKey, names: list[str]
) -> TLSMaterial:
    """The certificate in `secret_name` while it is valid for `names`, else a new one."""
    stored = await kube.get(SECRET, namespace, secret_name)
    cert, key = secret_value(stored, "tls.crt"), secret_value(stored, "tls.key")
    reason = pki.needs_renewal(cert, names, ca_pem=ca.cert_pem) if cert and key else "new"
    if reason is not None or cert is None or key is None:
        logger.info("issuing a certificate for %s/%s (%s)", namespace, secret_name, reason)
        issued = pki.issue_serving(ca, names)
        cert, key = issued.cert_pem, issued.key_pem
    return TLSMaterial(cert, key, ca.cert_pem)
