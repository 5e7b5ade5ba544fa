"""The access pass of a Registry: robots, pull Secrets in every granted namespace, the
ServiceAccounts' imagePullSecrets, the token server's configuration, and rotation.

The pass is level-based over three lists (namespaces, our labelled pull Secrets, all
ServiceAccounts), so a steady state costs three paginated LISTs and no writes.

Rotation never breaks a pull. A robot goes through three phases:
    pending   its hash is in the token server's config (or htpasswd), its password only
              in the Registry's robot record; clients do not have it yet
    active    after PROPAGATION, its password replaces the old one in every pull Secret
    retiring  the old robot stays valid for RETIRE_GRACE, then is dropped
so the new credential works everywhere before any copy carries it, and the old one
keeps working until no client can still be holding it.

What a pass does is decided by pure functions (which namespaces it serves, what each
namespace's robots become, what the robot record, the token server's configuration and
each ServiceAccount should hold), from what it has read; the async functions around
them only read and write.
"""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import logging
import secrets
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Final

from pydantic import ValidationError

from berth.api.common import parse_duration
from berth.api.registry import AuthMode, ManagementState, RegistrySpec
from berth.auth.config import Grant, Robot, TokenServerConfig
from berth.auth.robots import dockerconfigjson, hash_password
from berth.constants import GROUP
from berth.k8s.api import JSON, ApiException, Kube
from berth.k8s.kinds import NAMESPACE, REGISTRY, SECRET, SERVICE, SERVICE_ACCOUNT
from berth.k8s.secrets import secret_value
from berth.observability import REDACTOR
from berth.reconcile.kit import Note, Outcome, Passes, publish
from berth.reconcile.rotation import TIMING, Timing, parse_stamp, stamp
from berth.reconcile.rotation import now as utc_now
from berth.reconcile.unmanaged import SecretProblem, credentials_from_secret
from berth.resources.access import (
    ALL_SERVICE_ACCOUNTS,
    ANNOTATION_ROBOT,
    NamespaceAccess,
    pull_secret,
    pull_secret_name,
    registry_selector,
    robots_secret,
    select_namespaces,
)
from berth.resources.registry import (
    ADMIN_USER,
    SIGNING_DIR,
    TOKEN_ISSUER,
    RegistryNames,
    RegistryTarget,
    service_hosts,
    token_config_secret,
    token_service,
)

logger = logging.getLogger(__name__)

ANNOTATION_ROTATE: Final = f"{GROUP}/rotate-credentials"
# Robot passwords are 256-bit random strings: no cost factor makes them harder to guess,
# while a high one would cost seconds per namespace. bcrypt still, as htpasswd requires.
ROBOT_BCRYPT_COST: Final = 5


@dataclass
class RobotRecord:
    username: str
    password_hash: str
    namespace: str
    created: str
    phase: str  # pending | active | retiring
    fingerprint: str  # sha256 of the password: tells a hand-edited copy apart
    retire_at: str | None = None
    pending_password: str | None = None


@dataclass
class AccessState:
    robots: list[RobotRecord] = field(default_factory=list)
    admin_hash: str | None = None
    admin_fingerprint: str | None = None
    rotation_request: str | None = None
    last_rotation: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1)

    @classmethod
    def from_json(cls, text: str) -> AccessState:
        data = json.loads(text)
        return cls(
            robots=[RobotRecord(**r) for r in data.get("robots", [])],
            admin_hash=data.get("admin_hash"),
            admin_fingerprint=data.get("admin_fingerprint"),
            rotation_request=data.get("rotation_request"),
            last_rotation=data.get("last_rotation"),
        )


def fingerprint(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


def state_secret_name(registry_name: str) -> str:
    return f"{registry_name}-robots"


def credential_of(secret: JSON) -> tuple[str, str] | None:
    """The (username, password) a pull Secret carries, or None if it is unreadable."""
    try:
        document = json.loads(secret_value(secret, ".dockerconfigjson") or "{}")
        entry = next(iter(document["auths"].values()))
        return str(entry["username"]), str(entry["password"])
    except (ValueError, KeyError, StopIteration, TypeError, AttributeError):
        return None


async def _new_robot(namespace: str, phase: str, now: datetime.datetime) -> tuple[RobotRecord, str]:
    password = secrets.token_urlsafe(32)
    REDACTOR.register(password)
    hashed = await asyncio.to_thread(hash_password, password, cost=ROBOT_BCRYPT_COST)
    username = f"robot-{namespace}"[:55].rstrip("-.") + "-" + secrets.token_hex(4)
    record = RobotRecord(username, hashed, namespace, stamp(now), phase, fingerprint(password))
    return record, password


# The access pass is a pass of its own over Registries: its own locks, no metrics of
# its own (the registry pass counts the Registry), its own status fields.
_passes = Passes(REGISTRY, metrics=False)


def forget(namespace: str, name: str) -> None:
    _passes.forget(namespace, name)


def exclusive(namespace: str, name: str) -> AbstractAsyncContextManager[None]:
    """Hold off this kind of pass for one Registry (e.g. while it is being deleted)."""
    return _passes.exclusive(namespace, name)


async def registry_hosts(kube: Kube, registry: JSON, spec: RegistrySpec) -> list[str]:
    """Every host[:port] the registry answers to, as image references name it."""
    metadata = registry["metadata"]
    if spec.management_state is ManagementState.UNMANAGED:
        assert spec.external is not None
        return [spec.external.url.split("://", 1)[-1].rstrip("/")]
    names = RegistryNames(metadata["name"])
    port = spec.expose.service.port
    hosts = service_hosts(names.service, metadata["namespace"], port)
    service = await kube.get(SERVICE, metadata["namespace"], names.service)
    cluster_ip = (service or {}).get("spec", {}).get("clusterIP")
    if cluster_ip and cluster_ip != "None":
        hosts.append(f"{cluster_ip}:{port}")
    external = ((registry.get("status") or {}).get("endpoint") or {}).get("external")
    if external:
        hosts.append(str(external))
    return hosts


async def reconcile_access(kube: Kube, namespace: str, name: str) -> Outcome | None:
    """One access pass for one Registry; None when it is gone or being deleted. Its
    Outcome has no conditions: it owns status.accessNamespaces and
    lastCredentialRotation, and reports problems as Events."""
    return await _passes.run(kube, namespace, name, lambda registry: _access(kube, registry))


async def _access(kube: Kube, registry: JSON) -> Outcome:
    try:
        spec = RegistrySpec.model_validate(registry.get("spec") or {})
    except ValidationError:
        return Outcome(invalid=True)  # the Registry pass reports InvalidSpec
    outcome = await _reconcile(kube, registry, spec)
    await publish(kube, REGISTRY, registry, outcome)
    return outcome


# -- the pass: read, write the copies, record the robots, tidy up ----------------------


@dataclass(frozen=True)
class _Observed:
    """What an access pass reads before it writes anything."""

    wanted: dict[str, NamespaceAccess]  # the namespaces to serve, and what each may do
    live_secrets: dict[str, JSON]  # our pull Secrets by namespace (kept current as written)
    hosts: list[str]
    state_text: str | None  # the robot record as stored
    state: AccessState  # ... parsed (an empty record when there is none)


async def _reconcile(kube: Kube, registry: JSON, spec: RegistrySpec) -> Outcome:
    metadata = registry["metadata"]
    rns, rname = metadata["namespace"], metadata["name"]
    now = utc_now()
    writes_before = kube.writes
    problems: list[str] = []

    seen = await _observe(kube, registry, spec)
    state = seen.state
    if spec.management_state is ManagementState.UNMANAGED:
        await _share_external_credential(kube, registry, spec, seen, problems)
    else:
        state = await _keep_robots(kube, registry, spec, seen, now, problems)

    for ns, secret_name in stale_pull_secrets(seen.live_secrets, seen.wanted):
        await kube.delete(SECRET, ns, secret_name)
    await _service_accounts(kube, pull_secret_name(rns, rname), seen.wanted, problems)
    fields: dict[str, Any] = {"accessNamespaces": len(seen.wanted)}
    if state.last_rotation:
        fields["lastCredentialRotation"] = state.last_rotation
    events = [Note("AccessFailed", problem) for problem in problems]
    return Outcome(fields=fields, writes=kube.writes - writes_before, events=events)


async def _observe(kube: Kube, registry: JSON, spec: RegistrySpec) -> _Observed:
    rns, rname = registry["metadata"]["namespace"], registry["metadata"]["name"]
    namespaces = [ns async for ns in kube.list(NAMESPACE)]
    wanted = wanted_namespaces(spec, namespaces)
    live_secrets = {
        s["metadata"]["namespace"]: s
        async for s in kube.list(SECRET, label_selector=registry_selector(rns, rname))
    }
    hosts = await registry_hosts(kube, registry, spec)
    state_secret = await kube.get(SECRET, rns, state_secret_name(rname))
    state_text = secret_value(state_secret, "robots.json")
    state = AccessState.from_json(state_text) if state_text else AccessState()
    return _Observed(wanted, live_secrets, hosts, state_text, state)


async def _share_external_credential(
    kube: Kube, registry: JSON, spec: RegistrySpec, seen: _Observed, problems: list[str]
) -> None:
    """Unmanaged registries: every namespace gets a copy of the configured credential."""
    shared = await _external_credential(kube, registry, spec, problems)
    if shared is None:
        return
    rns, rname = registry["metadata"]["namespace"], registry["metadata"]["name"]
    for ns in seen.wanted:
        document = dockerconfigjson(seen.hosts, *shared)
        await _ensure_secret(kube, rns, rname, ns, document, shared[0], seen.live_secrets, problems)


async def _keep_robots(
    kube: Kube,
    registry: JSON,
    spec: RegistrySpec,
    seen: _Observed,
    now: datetime.datetime,
    problems: list[str],
) -> AccessState:
    """Managed registries: a robot per namespace, rotated when due, recorded in the robot
    record and (Token mode) in the token server's configuration; the record afterwards."""
    metadata = registry["metadata"]
    rns, rname = metadata["namespace"], metadata["name"]
    request = _rotation_request(metadata, seen.state)
    period = parse_duration(spec.credential_rotation.period)
    by_namespace = robots_by_namespace(seen.state.robots)
    # Namespaces are independent: in parallel (the Kube pool bounds the fan-out).
    plans = await asyncio.gather(
        *(
            _namespace_robots(
                kube, rns, rname, ns, by_namespace.get(ns, []), seen.live_secrets.get(ns),
                seen.hosts, period, request is not None, now, seen.live_secrets, problems,
            )
            for ns in seen.wanted
        )
    )  # fmt: skip
    state = recorded_state(seen.state, plans, rotation_request=request, now=now)
    if spec.auth.mode is AuthMode.TOKEN:
        await _ensure_token_config(kube, registry, spec, RegistryNames(rname), state, seen.wanted)
    if state.to_json() != (seen.state_text or AccessState().to_json()):
        await kube.ensure(robots_secret(registry, state_secret_name(rname), state.to_json()))
    return state


# -- what the pass decides (pure): namespaces, stale copies, the robot record ----------


def wanted_namespaces(spec: RegistrySpec, namespaces: list[JSON]) -> dict[str, NamespaceAccess]:
    """The namespaces to serve and what each may do: none when the registry asks for no
    authentication (anyone may pull) or grants nothing."""
    if spec.auth.mode is AuthMode.NONE or not spec.access:
        return {}
    return select_namespaces(spec.access, namespaces)


def stale_pull_secrets(
    live_secrets: dict[str, JSON], wanted: dict[str, NamespaceAccess]
) -> list[tuple[str, str]]:
    """(namespace, name) of our pull Secrets in namespaces no longer served."""
    return [
        (ns, secret["metadata"]["name"]) for ns, secret in live_secrets.items() if ns not in wanted
    ]


def robots_by_namespace(robots: list[RobotRecord]) -> dict[str, list[RobotRecord]]:
    """The robot record's robots grouped by namespace, in their recorded order."""
    grouped: dict[str, list[RobotRecord]] = {}
    for robot in robots:
        grouped.setdefault(robot.namespace, []).append(robot)
    return grouped


def _rotation_request(metadata: JSON, state: AccessState) -> str | None:
    """The rotate-credentials annotation, if it asks for a rotation not yet made."""
    request: str | None = (metadata.get("annotations") or {}).get(ANNOTATION_ROTATE)
    return request if request and request != state.rotation_request else None


def recorded_state(
    state: AccessState,
    plans: Sequence[NamespacePlan],
    *,
    rotation_request: str | None,
    now: datetime.datetime,
) -> AccessState:
    """The robot record after a pass that planned `plans`, one per namespace served, and
    acted on `rotation_request` (the rotate-credentials annotation), if not None."""
    return replace(
        state,
        # Robots of namespaces that left every grant are revoked at once.
        robots=[robot for plan in plans for robot in plan.robots],
        last_rotation=stamp(now) if any(plan.rotated for plan in plans) else state.last_rotation,
        rotation_request=state.rotation_request if rotation_request is None else rotation_request,
    )


# -- one namespace's robots: what they become (pure), then the writes ------------------


@dataclass(frozen=True)
class HeldRobots:
    """One namespace's robots as the state records them (retiring ones past their grace
    left out), and the active robot's password if its pull Secret still carries it."""

    active: RobotRecord | None
    pending: RobotRecord | None
    retiring: list[RobotRecord]
    password: str | None  # None: no credential yet, or its copy was lost or edited


@dataclass(frozen=True)
class NamespacePlan:
    """One namespace after this pass: its robots as the state records them, the
    (username, password) its pull Secret carries, and whether a rotation completed."""

    robots: list[RobotRecord]
    credential: tuple[str, str]
    rotated: bool = False


def held_robots(
    robots: list[RobotRecord], carried: tuple[str, str] | None, now: datetime.datetime
) -> HeldRobots:
    """What a namespace holds: its robots, and `carried`, its pull Secret's credential."""
    active = next((r for r in robots if r.phase == "active"), None)
    pending = next((r for r in robots if r.phase == "pending"), None)
    retiring = [r for r in robots if _in_grace(r, now)]
    return HeldRobots(active, pending, retiring, _password_of(active, carried))


def _in_grace(robot: RobotRecord, now: datetime.datetime) -> bool:
    """Whether `robot` is retiring and still valid."""
    if robot.phase != "retiring" or not robot.retire_at:
        return False
    return parse_stamp(robot.retire_at) > now


def _password_of(robot: RobotRecord | None, carried: tuple[str, str] | None) -> str | None:
    """The password in `carried`, a pull Secret's credential, if it is `robot`'s, unedited."""
    if robot is None or carried is None:
        return None
    username, password = carried
    if username != robot.username or fingerprint(password) != robot.fingerprint:
        return None
    return password


def robot_to_mint(
    held: HeldRobots, *, period: datetime.timedelta, rotate_all: bool, now: datetime.datetime
) -> str | None:
    """The phase of the robot this pass must make for the namespace: "active" when it has
    no working credential (there is nothing working to protect, so one is issued at
    once), "pending" when its rotation is due, else None."""
    if held.active is None or held.password is None:
        return "active"
    due = rotate_all or now - parse_stamp(held.active.created) >= period
    return "pending" if held.pending is None and due else None


def plan_namespace(
    held: HeldRobots,
    minted: tuple[RobotRecord, str] | None,
    *,
    now: datetime.datetime,
    timing: Timing,
) -> NamespacePlan:
    """The namespace's robots after this pass, given `minted`, the robot (and password)
    made for the phase robot_to_mint asked for, if it asked."""
    active = held.active
    if active is None or held.password is None:
        assert minted is not None, "robot_to_mint asks for an active robot"
        robot, password = minted
        return NamespacePlan([robot, *held.retiring], (robot.username, password))
    pending = held.pending
    if minted is not None:
        robot, password = minted
        pending = replace(robot, pending_password=password)
    if pending is not None and now - parse_stamp(pending.created) >= timing.propagation:
        # Every client can have the new robot now: it replaces the old one in the pull
        # Secret, and the old one stays valid for the grace.
        assert pending.pending_password is not None
        return NamespacePlan(
            [
                replace(pending, phase="active", pending_password=None),
                replace(active, phase="retiring", retire_at=stamp(now + timing.retire_grace)),
                *held.retiring,
            ],
            (pending.username, pending.pending_password),
            rotated=True,
        )
    # Steady: the pull Secret keeps the active credential.
    kept = [active] if pending is None else [active, pending]
    return NamespacePlan([*kept, *held.retiring], (active.username, held.password))


async def _namespace_robots(
    kube: Kube,
    rns: str,
    rname: str,
    ns: str,
    robots: list[RobotRecord],
    secret: JSON | None,
    hosts: list[str],
    period: datetime.timedelta,
    rotate_all: bool,
    now: datetime.datetime,
    live_secrets: dict[str, JSON],
    problems: list[str],
) -> NamespacePlan:
    """One namespace's robots after this pass; writes its pull Secret when needed (the
    steady case too: host names can change, e.g. a new external host)."""
    held = held_robots(robots, credential_of(secret) if secret else None, now)
    phase = robot_to_mint(held, period=period, rotate_all=rotate_all, now=now)
    minted = await _new_robot(ns, phase, now) if phase else None
    plan = plan_namespace(held, minted, now=now, timing=TIMING)
    username, password = plan.credential
    document = dockerconfigjson(hosts, username, password)
    await _ensure_secret(kube, rns, rname, ns, document, username, live_secrets, problems)
    return plan


# -- pull Secrets, the token server's configuration, ServiceAccounts, status -----------


async def _ensure_secret(
    kube: Kube,
    rns: str,
    rname: str,
    ns: str,
    document: bytes,
    robot: str,
    live_secrets: dict[str, JSON],
    problems: list[str],
) -> None:
    desired = pull_secret(
        registry_namespace=rns,
        registry_name=rname,
        namespace=ns,
        dockerconfigjson=document,
        robot=robot,
    )
    live = live_secrets.get(ns)
    if live is not None and _same_secret(desired, live):
        return
    try:
        live_secrets[ns] = await kube.apply(desired)
    except ApiException as error:
        problems.append(
            f"namespace {ns}: writing pull Secret failed: {error.status} {error.reason}"
        )


def _same_secret(desired: JSON, live: JSON) -> bool:
    return (
        desired["data"] == live.get("data")
        and desired["type"] == live.get("type")
        and all(
            (live["metadata"].get(field) or {}).get(key) == value
            for field in ("labels", "annotations")
            for key, value in desired["metadata"][field].items()
        )
    )


async def _external_credential(
    kube: Kube, registry: JSON, spec: RegistrySpec, problems: list[str]
) -> tuple[str, str] | None:
    """Unmanaged registries have no robots: namespaces get the configured credential."""
    assert spec.external is not None
    ref = spec.external.credentials_secret_ref
    if ref is None:
        return None
    secret = await kube.get(SECRET, registry["metadata"]["namespace"], ref.name)
    if secret is None:
        return None  # the Registry pass reports it
    try:
        credentials = credentials_from_secret(secret, spec.external.url)
    except SecretProblem as problem:
        problems.append(f"spec.external.credentialsSecretRef: {problem}")
        return None
    REDACTOR.register(credentials.password)
    return credentials.username, credentials.password


async def _ensure_token_config(
    kube: Kube,
    registry: JSON,
    spec: RegistrySpec,
    names: RegistryNames,
    state: AccessState,
    wanted: dict[str, NamespaceAccess],
) -> None:
    admin = await kube.get(SECRET, registry["metadata"]["namespace"], names.admin)
    admin_password = secret_value(admin, "password")
    admin_hash = None
    if admin_password:
        REDACTOR.register(admin_password)
        if state.admin_fingerprint != fingerprint(admin_password) or not state.admin_hash:
            state.admin_hash = await asyncio.to_thread(
                hash_password, admin_password, cost=ROBOT_BCRYPT_COST
            )
            state.admin_fingerprint = fingerprint(admin_password)
        admin_hash = state.admin_hash
    config = token_server_config(registry, spec, state.robots, wanted, admin_hash=admin_hash)
    await kube.ensure(token_config_secret(registry, names, config.to_json()))


def token_server_config(
    registry: JSON,
    spec: RegistrySpec,
    robots: list[RobotRecord],
    wanted: dict[str, NamespaceAccess],
    *,
    admin_hash: str | None,
) -> TokenServerConfig:
    """Whom the token server accepts: the admin (when its Secret has a password, whose
    bcrypt hash is `admin_hash`), the robots of the namespaces served, each with its
    namespace's grant, and the ServiceAccounts those grants name."""
    accepted: list[Robot] = []
    if admin_hash is not None:
        accepted.append(
            Robot(
                username=ADMIN_USER,
                password_hash=admin_hash,
                grants=[Grant(repositories=["**"], actions=["pull", "push", "delete"])],
                catalog=True,
            )
        )
    for robot in sorted(robots, key=lambda r: r.username):
        access = wanted.get(robot.namespace)
        if access is None:
            continue
        accepted.append(
            Robot(
                username=robot.username,
                password_hash=robot.password_hash,
                namespace=robot.namespace,
                grants=[Grant.model_validate(access.grant())],
            )
        )
    inputs = RegistryTarget(registry, spec)
    return TokenServerConfig(
        issuer=TOKEN_ISSUER,
        service=token_service(inputs),
        signing_key_file=SIGNING_DIR / "tls.key",
        signing_cert_file=SIGNING_DIR / "tls.crt",
        robots=accepted,
        namespace_grants={
            ns: [
                Grant.model_validate(
                    {**access.grant(), "serviceAccounts": list(access.service_accounts)}
                )
            ]
            for ns, access in wanted.items()
        },
        token_review=True,
    )


async def _service_accounts(
    kube: Kube, secret_name: str, wanted: dict[str, NamespaceAccess], problems: list[str]
) -> None:
    """Add our pull Secret to the chosen ServiceAccounts, remove it from the others."""
    patches = []
    async for account in kube.list(SERVICE_ACCOUNT):
        patch = service_account_patch(account, secret_name, wanted)
        if patch is not None:
            patches.append((account["metadata"], patch))

    async def change(metadata: JSON, patch: JSON) -> None:
        ns, name = metadata["namespace"], metadata["name"]
        try:
            await kube.merge_patch(SERVICE_ACCOUNT, ns, name, patch)
        except ApiException as error:
            if error.status not in (404, 409):
                problems.append(
                    f"namespace {ns}: ServiceAccount {name}: {error.status} {error.reason}"
                )

    await asyncio.gather(*(change(metadata, patch) for metadata, patch in patches))


def service_account_patch(
    account: JSON, secret_name: str, wanted: dict[str, NamespaceAccess]
) -> JSON | None:
    """The merge patch after which `account` names our pull Secret exactly when its
    namespace's grants choose it, or None if it already does; entries other people put
    there are never touched.

    imagePullSecrets is an atomic list (no strategic merge): the patch rewrites it whole,
    with the resourceVersion read, so a concurrent edit by someone else is not lost (a
    conflict leaves it to the next pass, which their edit triggers).
    """
    metadata = account["metadata"]
    access = wanted.get(metadata["namespace"])
    should = access is not None and _chooses(access, metadata["name"])
    references = account.get("imagePullSecrets") or []
    if should == any(ref.get("name") == secret_name for ref in references):
        return None
    others = [ref for ref in references if ref.get("name") != secret_name]
    entries = [*others, {"name": secret_name}] if should else others
    return {
        "metadata": {"resourceVersion": metadata["resourceVersion"]},
        "imagePullSecrets": entries or None,
    }


def _chooses(access: NamespaceAccess, service_account: str) -> bool:
    return (
        ALL_SERVICE_ACCOUNTS in access.service_accounts
        or service_account in access.service_accounts
    )


async def revoke_everything(kube: Kube, namespace: str, name: str) -> int:
    """On Registry deletion: every pull Secret copy and ServiceAccount reference goes
    (they live in other namespaces, where ownerReferences cannot reach)."""
    removed = 0
    async for secret in kube.list(SECRET, label_selector=registry_selector(namespace, name)):
        removed += await kube.delete(
            SECRET, secret["metadata"]["namespace"], secret["metadata"]["name"]
        )
    await _service_accounts(kube, pull_secret_name(namespace, name), {}, [])
    return removed


def robots_for_htpasswd(state_secret: JSON | None) -> list[tuple[str, str]]:
    """(username, bcrypt hash) of every robot a Htpasswd registry must accept."""
    text = secret_value(state_secret, "robots.json")
    if not text:
        return []
    return [(r.username, r.password_hash) for r in AccessState.from_json(text).robots]


__all__ = [
    "ANNOTATION_ROBOT",
    "TIMING",
    "reconcile_access",
    "revoke_everything",
    "robots_for_htpasswd",
]
