"""Registry: a container image registry Berth runs in the cluster, or one it only serves."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Final

from pydantic import ConfigDict, Field, StringConstraints, model_validator

from berth.api.common import (
    URL,
    BerthModel,
    CelRule,
    Condition,
    DNSLabel,
    DNSSubdomain,
    Duration,
    FreeForm,
    Hostname,
    ImageReference,
    LabelSelector,
    LocalObjectReference,
    Quantity,
    RepositoryGlob,
    SecretKeyReference,
    StatusModel,
    conditions_field,
    validations,
)
from berth.constants import API_VERSION, DEFAULT_REGISTRY_IMAGE, REGISTRY_KIND


class ManagementState(StrEnum):
    MANAGED = "Managed"
    UNMANAGED = "Unmanaged"
    REMOVED = "Removed"


class RolloutStrategy(StrEnum):
    ROLLING_UPDATE = "RollingUpdate"
    RECREATE = "Recreate"


class TLSMode(StrEnum):
    SELF_SIGNED = "SelfSigned"
    SECRET = "Secret"
    CERT_MANAGER = "CertManager"
    DISABLED = "Disabled"


class AuthMode(StrEnum):
    TOKEN = "Token"
    HTPASSWD = "Htpasswd"
    NONE = "None"


class Permission(StrEnum):
    PULL = "pull"
    PUSH = "push"


class ServiceType(StrEnum):
    CLUSTER_IP = "ClusterIP"
    NODE_PORT = "NodePort"
    LOAD_BALANCER = "LoadBalancer"


class AccessMode(StrEnum):
    READ_WRITE_ONCE = "ReadWriteOnce"
    READ_WRITE_ONCE_POD = "ReadWriteOncePod"
    READ_WRITE_MANY = "ReadWriteMany"


class IssuerKind(StrEnum):
    ISSUER = "Issuer"
    CLUSTER_ISSUER = "ClusterIssuer"


class RegistryConditionType(StrEnum):
    """A Registry's own condition types, beside the common ones (ConditionType)."""

    STORAGE_READY = "StorageReady"
    # True once every Pod serves a read-only config; storage GC waits for it.
    READ_ONLY = "ReadOnly"
    # True when every node resolves and trusts the registry (the node agent's reports).
    NODES_READY = "NodesReady"
    # True while kube-public/local-registry-hosting (KEP-1755) names this registry.
    LOCAL_REGISTRY_HOSTING = "LocalRegistryHosting"


SINGLE_NODE_ACCESS_MODES: Final = frozenset(
    {AccessMode.READ_WRITE_ONCE, AccessMode.READ_WRITE_ONCE_POD}
)

# Rules the API server enforces (CEL) and the same rules in Python for offline checks.
EXACTLY_ONE_STORAGE = CelRule(
    "(has(self.emptyDir) ? 1 : 0) + (has(self.pvc) ? 1 : 0) + (has(self.s3) ? 1 : 0) == 1",
    "spec.storage must set exactly one of emptyDir, pvc or s3",
)
PVC_NEEDS_SIZE = CelRule(
    "has(self.size) || has(self.existingClaim)",
    "spec.storage.pvc.size is required unless spec.storage.pvc.existingClaim is set",
    field_path=".size",
    reason="FieldValueRequired",
)
SECRET_TLS_NEEDS_SECRET_NAME = CelRule(
    "self.mode != 'Secret' || has(self.secretName)",
    "spec.tls.secretName is required when spec.tls.mode is Secret",
    field_path=".secretName",
    reason="FieldValueRequired",
)
CERT_MANAGER_TLS_NEEDS_ISSUER = CelRule(
    "self.mode != 'CertManager' || has(self.issuerRef)",
    "spec.tls.issuerRef is required when spec.tls.mode is CertManager",
    field_path=".issuerRef",
    reason="FieldValueRequired",
)
GRANT_NEEDS_ONE_NAMESPACE_FORM = CelRule(
    "has(self.namespaceSelector) != has(self.namespaces)",
    "spec.access[] must set exactly one of namespaceSelector or namespaces",
)
ROUTE_OR_INGRESS = CelRule(
    "!(has(self.ingress) && has(self.route) && self.route.enabled)",
    "spec.expose.route.enabled and spec.expose.ingress are mutually exclusive",
)
UNMANAGED_NEEDS_EXTERNAL = CelRule(
    "self.managementState != 'Unmanaged' || has(self.external)",
    "spec.external.url is required when spec.managementState is Unmanaged",
    field_path=".external",
    reason="FieldValueRequired",
)
EXTERNAL_ONLY_WHEN_UNMANAGED = CelRule(
    "!has(self.external) || self.managementState == 'Unmanaged'",
    "spec.external is only allowed when spec.managementState is Unmanaged",
    field_path=".external",
)
MANAGED_NEEDS_STORAGE = CelRule(
    "self.managementState != 'Managed' || has(self.storage)",
    "spec.storage is required when spec.managementState is Managed",
    field_path=".storage",
    reason="FieldValueRequired",
)
SINGLE_NODE_PVC_LIMITS_REPLICAS = CelRule(
    "!has(self.storage) || !has(self.storage.pvc) || self.replicas <= 1"
    " || (has(self.storage.pvc.accessModes) && !self.storage.pvc.accessModes.exists(m,"
    " m == 'ReadWriteOnce' || m == 'ReadWriteOncePod'))",
    "spec.replicas must be at most 1 with a ReadWriteOnce spec.storage.pvc (the volume"
    " mounts on one node only); use accessModes [ReadWriteMany] or s3 storage",
    field_path=".replicas",
)
EMPTY_DIR_LIMITS_REPLICAS = CelRule(
    "!has(self.storage) || !has(self.storage.emptyDir) || self.replicas <= 1",
    "spec.replicas must be at most 1 with spec.storage.emptyDir (each Pod would get its"
    " own empty storage); use pvc or s3 storage",
    field_path=".replicas",
)


class ExternalRegistry(BerthModel):
    """An existing registry that Berth serves but does not run (managementState Unmanaged)."""

    url: URL
    """Base URL of the registry, e.g. https://registry.example.com:5000."""
    ca_secret_ref: SecretKeyReference | None = None
    """Secret key holding the CA bundle that signed the registry's certificate, when it is
    not publicly trusted. The key defaults to ca.crt."""
    credentials_secret_ref: LocalObjectReference | None = None
    """Secret with credentials Berth uses to manage the registry: type
    kubernetes.io/basic-auth (username, password) or kubernetes.io/dockerconfigjson."""


class EmptyDirStorage(BerthModel):
    """Pod-local scratch storage: images are lost when the Pod goes away. For trials and CI."""

    size_limit: Quantity | None = None
    """Upper bound of the volume's size, as a quantity such as 20Gi."""


class PVCStorage(BerthModel):
    """A PersistentVolumeClaim that Berth creates (or an existing one)."""

    size: Quantity | None = None
    """Requested size, as a quantity such as 50Gi. Required unless existingClaim is set."""
    storage_class_name: DNSSubdomain | None = None
    """StorageClass for the claim; the cluster's default class when unset."""
    access_modes: list[AccessMode] = Field(
        default_factory=lambda: [AccessMode.READ_WRITE_ONCE],
        min_length=1,
        max_length=3,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Access modes of the claim. ReadWriteOnce (the default) limits the registry to one
    replica; more replicas need ReadWriteMany. With existingClaim, state the claim's modes."""
    existing_claim: DNSSubdomain | None = None
    """Use this existing claim instead of creating one; size and storageClassName are
    then ignored and Berth never deletes the claim."""
    delete_on_remove: bool = False
    """Delete the claim Berth created when managementState becomes Removed or the Registry
    is deleted. By default the claim, and the images in it, are kept."""

    @model_validator(mode="after")
    def _size_or_existing_claim(self) -> PVCStorage:
        if self.size is None and self.existing_claim is None:
            raise ValueError(PVC_NEEDS_SIZE.message)
        return self

    model_config = ConfigDict(json_schema_extra=validations(PVC_NEEDS_SIZE))


class S3Storage(BerthModel):
    """An S3 (or S3-compatible, e.g. MinIO) bucket."""

    bucket: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", max_length=63)
    """Name of the bucket."""
    region: str = Field(pattern=r"^[a-z0-9-]+$", max_length=64)
    """Region of the bucket, e.g. eu-central-1 (any value for most S3-compatible stores)."""
    region_endpoint: URL | None = None
    """Endpoint of an S3-compatible store, e.g. http://minio.storage.svc:9000."""
    secret_ref: LocalObjectReference | None = None
    """Secret with keys accessKey and secretKey. When unset, the Pod's own cloud identity
    (e.g. IRSA or workload identity) is used."""
    root_directory: str | None = Field(
        default=None, pattern=r"^/?[A-Za-z0-9._/-]*$", max_length=255
    )
    """Prefix inside the bucket under which the registry keeps its data."""


class Storage(BerthModel):
    """Where the registry keeps image data. Set exactly one of emptyDir, pvc or s3."""

    empty_dir: EmptyDirStorage | None = None
    """Pod-local storage that does not survive the Pod; at most one replica."""
    pvc: PVCStorage | None = None
    """A PersistentVolumeClaim."""
    s3: S3Storage | None = None
    """An S3-compatible bucket; the choice for several replicas."""

    @model_validator(mode="after")
    def _exactly_one(self) -> Storage:
        if [self.empty_dir, self.pvc, self.s3].count(None) != 2:
            raise ValueError(EXACTLY_ONE_STORAGE.message)
        return self

    model_config = ConfigDict(json_schema_extra=validations(EXACTLY_ONE_STORAGE))


class IssuerReference(BerthModel):
    """A cert-manager issuer."""

    name: DNSSubdomain
    """Name of the Issuer or ClusterIssuer."""
    kind: IssuerKind = IssuerKind.ISSUER
    """Issuer (in the Registry's namespace) or ClusterIssuer."""
    group: DNSSubdomain = "cert-manager.io"
    """API group of the issuer."""


class TLS(BerthModel):
    """How the registry serves TLS."""

    mode: TLSMode = TLSMode.SELF_SIGNED
    """SelfSigned: Berth creates a CA and a serving certificate and publishes the CA in a
    ConfigMap (see status.caConfigMap). Secret: use the kubernetes.io/tls Secret named by
    secretName. CertManager: request a certificate from issuerRef. Disabled: plain HTTP,
    which clients must be configured to allow."""
    secret_name: DNSSubdomain | None = None
    """kubernetes.io/tls Secret with the serving certificate; required for mode Secret."""
    issuer_ref: IssuerReference | None = None
    """cert-manager issuer; required for mode CertManager."""

    @model_validator(mode="after")
    def _mode_needs(self) -> TLS:
        if self.mode is TLSMode.SECRET and self.secret_name is None:
            raise ValueError(SECRET_TLS_NEEDS_SECRET_NAME.message)
        if self.mode is TLSMode.CERT_MANAGER and self.issuer_ref is None:
            raise ValueError(CERT_MANAGER_TLS_NEEDS_ISSUER.message)
        return self

    model_config = ConfigDict(
        json_schema_extra=validations(SECRET_TLS_NEEDS_SECRET_NAME, CERT_MANAGER_TLS_NEEDS_ISSUER)
    )


class Auth(BerthModel):
    """How clients authenticate to the registry."""

    mode: AuthMode = AuthMode.TOKEN
    """Token: Berth runs a token server (Docker registry token specification) that issues
    tokens scoped to the repositories each namespace was granted in spec.access.
    Htpasswd: one robot user per namespace, with pull and push for everything.
    None: anonymous pull and push for anyone who can reach the Service."""


ServiceAccountName = Annotated[
    str,
    StringConstraints(
        pattern=r"^(\*|[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$",
        max_length=253,
    ),
]


class AccessGrant(BerthModel):
    """Repositories that ServiceAccounts of some namespaces may pull from or push to.

    For each selected namespace Berth keeps a robot credential, a
    kubernetes.io/dockerconfigjson Secret and the ServiceAccounts' imagePullSecrets. A
    namespace opts out with the annotation berth.dev/pull-secrets: disabled.
    """

    namespace_selector: LabelSelector | None = None
    """Namespaces by label; an empty selector selects every namespace. Set this or
    namespaces."""
    namespaces: list[DNSLabel] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Namespaces by name. Set this or namespaceSelector."""
    service_accounts: list[ServiceAccountName] = Field(
        default_factory=lambda: ["default"],
        min_length=1,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """ServiceAccounts whose imagePullSecrets get the credential; "*" means all of them."""
    permission: Permission = Permission.PULL
    """pull, or push (which includes pull)."""
    repositories: list[RepositoryGlob] = Field(
        default_factory=lambda: ["{namespace}/**"],
        min_length=1,
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    """Repository globs the grant covers: "*" matches within one path segment, "**" any
    depth, and {namespace} stands for each selected namespace's name."""

    @model_validator(mode="after")
    def _one_namespace_form(self) -> AccessGrant:
        if (self.namespace_selector is None) == (self.namespaces is None):
            raise ValueError(GRANT_NEEDS_ONE_NAMESPACE_FORM.message)
        return self

    model_config = ConfigDict(json_schema_extra=validations(GRANT_NEEDS_ONE_NAMESPACE_FORM))


class CredentialRotation(BerthModel):
    """When robot credentials are replaced."""

    period: Duration = "720h"
    """How long a credential lives before Berth replaces it everywhere it was copied to,
    as a Go duration (e.g. 720h)."""


class NodeIntegration(BerthModel):
    """What Berth's node agent does on every node for this registry."""

    enabled: bool = True
    """Every node resolves the registry's in-cluster names (and its token realm's) and
    trusts Berth's CA for its hosts, so that the kubelet pulls with no hand edits. The
    agent is a DaemonSet the operator runs; an install can switch it off cluster-wide."""
    local_registry_hosting: bool = False
    """Publish this registry as the cluster's local registry: the KEP-1755 ConfigMap
    kube-public/local-registry-hosting, read by tools such as Tilt and ctlptl. One
    Registry of the cluster can hold it."""


class ServiceExposure(BerthModel):
    """The Service in front of the registry."""

    type: ServiceType = ServiceType.CLUSTER_IP
    """ClusterIP, NodePort or LoadBalancer."""
    port: int = Field(default=5000, ge=1, le=65535)
    """Port the Service listens on."""


class RouteExposure(BerthModel):
    """An OpenShift Route (only where the route.openshift.io API exists)."""

    enabled: bool = False
    """Create a Route."""
    host: Hostname | None = None
    """Host name of the Route; generated by the router when unset."""


class IngressExposure(BerthModel):
    """An Ingress in front of the Service."""

    class_name: DNSSubdomain | None = None
    """IngressClass to use; the cluster default when unset."""
    host: Hostname | None = None
    """Host name the Ingress serves."""


class Expose(BerthModel):
    """How the registry is reached from inside and outside the cluster."""

    service: ServiceExposure = Field(default_factory=ServiceExposure)
    """The Service, always created."""
    route: RouteExposure | None = None
    """An OpenShift Route; exclusive with ingress."""
    ingress: IngressExposure | None = None
    """An Ingress; exclusive with route."""

    @model_validator(mode="after")
    def _route_or_ingress(self) -> Expose:
        if self.ingress is not None and self.route is not None and self.route.enabled:
            raise ValueError(ROUTE_OR_INGRESS.message)
        return self

    model_config = ConfigDict(json_schema_extra=validations(ROUTE_OR_INGRESS))


StringMap = dict[str, Annotated[str, StringConstraints(max_length=4096)]]


class RegistrySpec(BerthModel):
    """The desired state of a Registry."""

    management_state: ManagementState = ManagementState.MANAGED
    """Managed: Berth runs the registry. Unmanaged: the registry at external.url exists
    already and Berth only manages access, pull secrets, tag policies and pruning for it.
    Removed: Berth deletes the registry's workload but keeps its storage (unless
    storage.pvc.deleteOnRemove)."""
    external: ExternalRegistry | None = None
    """The existing registry; required when managementState is Unmanaged, not allowed
    otherwise."""
    image: ImageReference = DEFAULT_REGISTRY_IMAGE
    """The distribution (registry:2 or registry:3) image to run."""
    replicas: int = Field(default=1, ge=0, le=20)
    """Number of registry Pods. More than one needs shared storage: s3, or a pvc with
    accessModes [ReadWriteMany]."""
    rollout_strategy: RolloutStrategy | None = None
    """RollingUpdate or Recreate. When unset, Berth picks Recreate for single-node volumes
    (emptyDir, ReadWriteOnce pvc) and RollingUpdate otherwise."""
    storage: Storage | None = None
    """Where images are stored: exactly one of emptyDir, pvc or s3. Required when
    managementState is Managed."""
    tls: TLS = Field(default_factory=TLS)
    """TLS for the registry endpoint."""
    auth: Auth = Field(default_factory=Auth)
    """Client authentication."""
    access: list[AccessGrant] | None = Field(default=None, max_length=64)
    """Grants of pull or push access to namespaces. Berth keeps pull secrets in every
    granted namespace and adds them to the chosen ServiceAccounts."""
    credential_rotation: CredentialRotation = Field(default_factory=CredentialRotation)
    """Rotation of the robot credentials handed out by access grants."""
    expose: Expose = Field(default_factory=Expose)
    """Service, Route and Ingress for the registry."""
    node_integration: NodeIntegration = Field(default_factory=NodeIntegration)
    """Node integration: names and trust on every node (Managed registries)."""
    read_only: bool = False
    """Serve pulls only; pushes and deletes are refused."""
    resources: FreeForm | None = None
    """Compute resources of the registry container (a core/v1 ResourceRequirements)."""
    node_selector: StringMap | None = None
    """Node labels the registry Pods must be scheduled on."""
    tolerations: list[FreeForm] | None = Field(default=None, max_length=64)
    """Tolerations of the registry Pods (core/v1 Toleration)."""
    affinity: FreeForm | None = None
    """Affinity of the registry Pods (core/v1 Affinity)."""
    priority_class_name: DNSSubdomain | None = None
    """PriorityClass of the registry Pods."""
    pod_annotations: StringMap | None = None
    """Extra annotations on the registry Pods."""

    @model_validator(mode="after")
    def _cross_field_rules(self) -> RegistrySpec:
        unmanaged = self.management_state is ManagementState.UNMANAGED
        if unmanaged and self.external is None:
            raise ValueError(UNMANAGED_NEEDS_EXTERNAL.message)
        if not unmanaged and self.external is not None:
            raise ValueError(EXTERNAL_ONLY_WHEN_UNMANAGED.message)
        if self.management_state is ManagementState.MANAGED and self.storage is None:
            raise ValueError(MANAGED_NEEDS_STORAGE.message)
        if self.storage is not None and self.replicas > 1:
            pvc = self.storage.pvc
            if pvc is not None and SINGLE_NODE_ACCESS_MODES.intersection(pvc.access_modes):
                raise ValueError(SINGLE_NODE_PVC_LIMITS_REPLICAS.message)
            if self.storage.empty_dir is not None:
                raise ValueError(EMPTY_DIR_LIMITS_REPLICAS.message)
        return self

    model_config = ConfigDict(
        json_schema_extra=validations(
            UNMANAGED_NEEDS_EXTERNAL,
            EXTERNAL_ONLY_WHEN_UNMANAGED,
            MANAGED_NEEDS_STORAGE,
            SINGLE_NODE_PVC_LIMITS_REPLICAS,
            EMPTY_DIR_LIMITS_REPLICAS,
        )
    )


class RegistryEndpoint(StatusModel):
    """Addresses of the registry."""

    internal: str | None = Field(default=None, max_length=512)
    """host:port of the Service, for use inside the cluster."""
    external: str | None = Field(default=None, max_length=512)
    """Host (and port) from outside the cluster: Route, Ingress, LoadBalancer or
    external.url."""


class NodesStatus(StatusModel):
    """How many nodes resolve and trust the registry."""

    configured: int = Field(ge=0)
    """Nodes whose agent reports this registry's current plan written."""
    total: int = Field(ge=0)
    """Nodes of the cluster."""


class RegistryStatus(StatusModel):
    """The observed state of a Registry."""

    observed_generation: int | None = Field(default=None, ge=0)
    """The metadata.generation this status describes."""
    conditions: list[Condition] = conditions_field()
    """Ready (the summary), Progressing, Degraded and StorageReady."""
    endpoint: RegistryEndpoint | None = None
    """Where clients reach the registry."""
    ready_replicas: int | None = Field(default=None, ge=0)
    """Registry Pods that are ready."""
    ca_config_map: str | None = Field(default=None, max_length=253)
    """ConfigMap (in the Registry's namespace) holding the CA bundle (key ca.crt) that
    clients need to trust the registry."""
    access_namespaces: int | None = Field(default=None, ge=0)
    """Namespaces that currently hold pull secrets for this registry."""
    last_credential_rotation: datetime | None = None
    """When robot credentials were last rotated."""
    nodes: NodesStatus | None = None
    """Nodes the node agent has configured for this registry, of all nodes."""


class Registry(BerthModel):
    """A container image registry that Berth runs in the cluster (managementState
    Managed), or an existing registry that Berth serves (Unmanaged with external): Berth
    hands out pull and push credentials to namespaces, and TagPolicies and PruneSchedules
    refer to it."""

    model_config = ConfigDict(extra="ignore")

    api_version: str = API_VERSION
    kind: str = REGISTRY_KIND
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: RegistrySpec
    status: RegistryStatus = Field(default_factory=RegistryStatus)
