"""Every child of a Managed Registry, declared once.

Each row says what the child is (kind, name), when it is wanted, which builder makes it,
in which stage it is applied, and what becomes of it when it is no longer wanted and
when the Registry is set to Removed. The reconciler's apply list, its stale and Removed
deletions, the finalizer's cluster-scoped clean-up and the kinds the operator watches
all derive from this table; a unit test holds the chart's RBAC against it.

The registry pass is the one writer of every object listed here. Two children of a
Registry have another writer and are not listed: the token server's config
(`names.token_server_config`, the access pass) and, for Unmanaged Registries, the
notifications token (the registry pass, `notifications_secret`, created once).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import Any, Final, cast

from berth.api.registry import AuthMode, RegistrySpec, TLSMode
from berth.k8s.kinds import (
    CERTIFICATE,
    CLUSTER_ROLE_BINDING,
    CONFIG_MAP,
    DEPLOYMENT,
    INGRESS,
    NETWORK_POLICY,
    PDB,
    PVC,
    ROUTE,
    SECRET,
    SERVICE,
    SERVICE_ACCOUNT,
    Kind,
)
from berth.resources.registry import secrets, tokenserver, workload
from berth.resources.registry.config import notification_endpoints
from berth.resources.registry.inputs import RegistryInputs, RegistryView
from berth.resources.registry.names import RegistryNames
from berth.resources.render import owned_by

ROUTE_API: Final = "route.openshift.io/v1"
CERT_MANAGER_API: Final = "cert-manager.io/v1"

JSON = dict[str, Any]


class Stage(IntEnum):
    """Apply order; within a stage children are applied in parallel."""

    ADDRESS = 0  # needs no material: the Service, whose cluster IP the certificate names
    FOUNDATION = 1  # what Pods need to start, so no ReplicaSet backs off on a missing SA
    WORKLOAD = 2


class Component(Enum):
    REGISTRY = "registry"
    TOKEN_SERVER = "token-server"


def _always(_: RegistryView) -> bool:
    return True


def _never(_: RegistryView) -> bool:
    return False


@dataclass(frozen=True)
class Child:
    kind: Kind
    # The RegistryNames attribute that names it (a method takes the namespace: a
    # cluster-scoped name must hold it).
    name: str
    build: Callable[[RegistryInputs], JSON]
    stage: Stage = Stage.FOUNDATION
    wanted: Callable[[RegistryInputs], bool] = _always
    # Deleted by the pass when no longer wanted (else kept: a Secret, a claim or a CA
    # outlives a spec edit, so that switching back finds it).
    delete_unwanted: bool = False
    # Deleted when managementState is Removed: the workload goes, storage, certificates
    # and credentials stay.
    delete_when_removed: Callable[[RegistryView], bool] = _never
    component: Component = Component.REGISTRY
    requires_api: str | None = None  # only where the cluster serves this API

    @property
    def watched(self) -> bool:
        """Kinds of the always-served APIs are watched (a hand edit is corrected at
        once); the drift timer covers the rest."""
        return self.kind.namespaced and self.requires_api is None

    @property
    def deleted_ever(self) -> bool:
        """Whether the operator ever deletes it: unwanted, Removed, or (cluster-scoped)
        by the Registry's finalizer."""
        return (
            self.delete_unwanted
            or self.delete_when_removed is not _never
            or not self.kind.namespaced
        )

    def object_name(self, registry: RegistryView) -> str:
        return self.name_in(registry.names, registry.namespace)

    def name_in(self, names: RegistryNames, namespace: str) -> str:
        value = getattr(names, self.name)
        return str(value(namespace) if callable(value) else value)


def _auth(mode: AuthMode) -> Callable[[RegistryView], bool]:
    return lambda registry: registry.spec.auth.mode is mode


def _tls(mode: TLSMode) -> Callable[[RegistryView], bool]:
    return lambda registry: registry.spec.tls.mode is mode


def _route_enabled(spec: RegistrySpec) -> bool:
    return spec.expose.route is not None and spec.expose.route.enabled


def _new_claim(registry: RegistryView) -> bool:
    storage = registry.spec.storage
    return storage is not None and storage.pvc is not None and storage.pvc.existing_claim is None


def _disposable_claim(registry: RegistryView) -> bool:
    """storage.pvc.deleteOnRemove, for a claim Berth made."""
    pvc = registry.spec.storage.pvc if registry.spec.storage else None
    return pvc is not None and pvc.existing_claim is None and pvc.delete_on_remove


_TOKEN: Final = _auth(AuthMode.TOKEN)

CHILDREN: Final[tuple[Child, ...]] = (
    # -- the registry workload --------------------------------------------------------
    Child(SERVICE, "service", workload.service, Stage.ADDRESS,
          delete_when_removed=_always),
    Child(SERVICE_ACCOUNT, "service_account", workload.service_account),
    Child(CONFIG_MAP, "config", workload.config_map),
    Child(SECRET, "secrets", secrets.registry_secrets),
    Child(SECRET, "notifications", secrets.notifications,
          wanted=lambda i: notification_endpoints(i) is not None),
    Child(SECRET, "admin", secrets.admin,
          wanted=lambda i: i.material.admin_password is not None),
    Child(SECRET, "token_signing", secrets.token_signing,
          wanted=lambda i: i.material.token_signing is not None),
    Child(SECRET, "ca_secret", secrets.ca,
          wanted=lambda i: i.material.ca is not None),
    Child(CONFIG_MAP, "ca_config_map", secrets.ca_config_map,
          wanted=lambda i: i.material.ca is not None),
    Child(SECRET, "tls", secrets.serving_tls, wanted=_tls(TLSMode.SELF_SIGNED)),
    Child(CERTIFICATE, "tls", secrets.certificate,
          wanted=lambda i: i.spec.tls.mode is TLSMode.CERT_MANAGER
          and bool(i.material.serving_names),
          requires_api=CERT_MANAGER_API),
    Child(PVC, "pvc", workload.claim, wanted=_new_claim,
          delete_when_removed=_disposable_claim),
    Child(DEPLOYMENT, "deployment", workload.deployment, Stage.WORKLOAD,
          delete_when_removed=_always),
    Child(PDB, "deployment", workload.disruption_budget, Stage.WORKLOAD,
          wanted=lambda i: i.spec.replicas > 1, delete_unwanted=True,
          delete_when_removed=_always),
    Child(NETWORK_POLICY, "deployment", workload.network_policy, Stage.WORKLOAD,
          delete_when_removed=_always),
    Child(ROUTE, "service", workload.route, Stage.WORKLOAD,
          wanted=lambda i: _route_enabled(i.spec), delete_unwanted=True,
          delete_when_removed=_always, requires_api=ROUTE_API),
    Child(INGRESS, "service", workload.ingress, Stage.WORKLOAD,
          wanted=lambda i: i.spec.expose.ingress is not None and not _route_enabled(i.spec),
          delete_unwanted=True, delete_when_removed=_always),
    # -- the token server (auth.mode Token) -------------------------------------------
    Child(SERVICE_ACCOUNT, "token_server", tokenserver.service_account,
          wanted=_TOKEN, component=Component.TOKEN_SERVER),
    Child(SECRET, "token_server_tls", tokenserver.tls,
          wanted=lambda i: _TOKEN(i) and i.material.token_server_tls is not None,
          component=Component.TOKEN_SERVER),
    Child(SERVICE, "token_server", tokenserver.service, Stage.WORKLOAD,
          wanted=_TOKEN, delete_when_removed=_always, component=Component.TOKEN_SERVER),
    Child(DEPLOYMENT, "token_server", tokenserver.deployment, Stage.WORKLOAD,
          wanted=_TOKEN, delete_when_removed=_always, component=Component.TOKEN_SERVER),
    Child(NETWORK_POLICY, "token_server", tokenserver.network_policy,
          Stage.WORKLOAD, wanted=_TOKEN, component=Component.TOKEN_SERVER),
    Child(CLUSTER_ROLE_BINDING, "token_server_binding",
          tokenserver.cluster_role_binding, Stage.WORKLOAD, wanted=_TOKEN,
          component=Component.TOKEN_SERVER),
)  # fmt: skip


def build(child: Child, inputs: RegistryInputs) -> JSON:
    """The child's manifest; namespaced children are owned by the Registry."""
    return _owned(child, child.build(inputs), inputs)


def address_children(registry: RegistryView) -> list[JSON]:
    """Stage ADDRESS, built from the Registry alone before any material exists: its
    builders take a RegistryView (a unit test builds them from a RegistryTarget)."""
    early = [c for c in CHILDREN if c.stage is Stage.ADDRESS]
    return [
        _owned(c, cast(Callable[[RegistryView], JSON], c.build)(registry), registry) for c in early
    ]


def _owned(child: Child, manifest: JSON, registry: RegistryView) -> JSON:
    return owned_by(manifest, registry.owner) if child.kind.namespaced else manifest


def wanted_children(
    inputs: RegistryInputs, stage: Stage | None = None, component: Component | None = None
) -> list[Child]:
    return [
        child
        for child in CHILDREN
        if (stage is None or child.stage is stage)
        and (component is None or child.component is component)
        and child.wanted(inputs)
    ]


def desired_children(
    inputs: RegistryInputs, component: Component | None = Component.REGISTRY
) -> list[JSON]:
    """The manifests of every wanted child (of one component, or all), in apply order."""
    chosen = wanted_children(inputs, component=component)
    return [build(child, inputs) for child in sorted(chosen, key=lambda c: c.stage)]


def unwanted(inputs: RegistryInputs) -> list[Child]:
    """Children the pass deletes because the spec no longer wants them."""
    return [c for c in CHILDREN if c.delete_unwanted and not c.wanted(inputs)]


def removed(registry: RegistryView) -> list[Child]:
    """Children deleted when managementState is Removed."""
    return [c for c in CHILDREN if c.delete_when_removed(registry)]


def cluster_scoped() -> list[Child]:
    """Children no ownerReference can clean up: the finalizer deletes them."""
    return [c for c in CHILDREN if not c.kind.namespaced]


def watched_kinds() -> list[Kind]:
    """The kinds whose events ask for a pass of their owning Registry, each once."""
    kinds: dict[str, Kind] = {}
    for child in CHILDREN:
        if child.watched:
            kinds.setdefault(child.kind.plural, child.kind)
    return list(kinds.values())
