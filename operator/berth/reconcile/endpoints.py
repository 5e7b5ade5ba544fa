"""How the operator reaches a Registry: the RegistryAccess (URL, credentials, CA, and
every host name images in the cluster may call it by) resolved from the Registry, its
Service and its Secrets. Shared by prune runs, TagPolicies and promotions."""

from __future__ import annotations

from urllib.parse import urlsplit

from berth.api.registry import AuthMode, ManagementState, RegistrySpec, TLSMode
from berth.k8s.api import JSON, Kube
from berth.k8s.kinds import CONFIG_MAP, REGISTRY, SECRET, SERVICE
from berth.k8s.secrets import secret_value
from berth.observability import REDACTOR
from berth.reconcile.unmanaged import Credentials, SecretProblem, credentials_from_secret
from berth.registry.access import RegistryAccess
from berth.resources.registry import RegistryNames, service_hosts


class RegistryProblem(Exception):
    """The registry cannot be used yet: `reason` is a CamelCase word, the message says
    why."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def referenced_registry(kube: Kube, namespace: str, name: str) -> tuple[JSON, RegistrySpec]:
    """The Registry a spec.registryRef names, and its spec; it must exist and not be
    Removed."""
    registry = await kube.get(REGISTRY, namespace, name)
    if registry is None:
        raise RegistryProblem(
            "RegistryNotFound", f"spec.registryRef: Registry {namespace}/{name} does not exist"
        )
    spec = RegistrySpec.model_validate(registry.get("spec") or {})
    if spec.management_state is ManagementState.REMOVED:
        raise RegistryProblem(
            "RegistryRemoved", f"Registry {namespace}/{name} is Removed: no images"
        )
    return registry, spec


async def registry_access(
    kube: Kube, registry: JSON, spec: RegistrySpec, registry_url: str | None = None
) -> RegistryAccess:
    """URL, credentials and CA for the operator's own requests to `registry`;
    `registry_url` overrides the URL (e.g. a port-forward for `berth prune`)."""
    if spec.management_state is ManagementState.UNMANAGED:
        return await _unmanaged_access(kube, registry, spec, registry_url)
    return await _managed_access(kube, registry, spec, registry_url)


def _host(url: str) -> str:
    return urlsplit(url if "://" in url else f"//{url}").netloc


def _access(
    url: str, hosts: list[str], credentials: Credentials | None, ca_pem: str | None
) -> RegistryAccess:
    return RegistryAccess(
        url,
        tuple(dict.fromkeys(hosts)),
        credentials.username if credentials else None,
        credentials.password if credentials else None,
        ca_pem,
    )


async def _credentials(
    kube: Kube, namespace: str, secret_name: str, url: str, *, missing: str
) -> Credentials:
    """The credential for `url` in Secret namespace/secret_name, registered with the
    redactor; `missing` says what it means that the Secret does not exist."""
    secret = await kube.get(SECRET, namespace, secret_name)
    if secret is None:
        raise RegistryProblem("CredentialsNotFound", missing)
    try:
        credentials = credentials_from_secret(secret, url)
    except SecretProblem as problem:
        raise RegistryProblem(
            "CredentialsNotFound", f"Secret {namespace}/{secret_name} {problem}"
        ) from problem
    REDACTOR.register(credentials.password)
    return credentials


async def _managed_access(
    kube: Kube, registry: JSON, spec: RegistrySpec, registry_url: str | None
) -> RegistryAccess:
    namespace, name = registry["metadata"]["namespace"], registry["metadata"]["name"]
    names = RegistryNames(name)
    endpoint = (registry.get("status") or {}).get("endpoint") or {}
    port = spec.expose.service.port
    tls = spec.tls.mode is not TLSMode.DISABLED
    internal = endpoint.get("internal") or f"{names.service}.{namespace}.svc:{port}"
    url = registry_url or f"{'https' if tls else 'http'}://{internal}"
    credentials = None
    if spec.auth.mode is not AuthMode.NONE:
        credentials = await _credentials(
            kube,
            namespace,
            names.admin,
            url,
            missing=f"Secret {namespace}/{names.admin} (Berth's admin credential for the "
            "registry) does not exist yet",
        )
    ca_pem = await _managed_ca(kube, spec, namespace, names, registry_url)
    hosts = await _managed_hosts(kube, spec, namespace, names, endpoint, registry_url)
    return _access(url, hosts, credentials, ca_pem)


async def _managed_ca(
    kube: Kube, spec: RegistrySpec, namespace: str, names: RegistryNames, registry_url: str | None
) -> str | None:
    """The CA of the registry's serving certificate, when Berth knows it."""
    if spec.tls.mode is TLSMode.SELF_SIGNED:
        # ConfigMap data is plain text, not base64.
        config_map = await kube.get(CONFIG_MAP, namespace, names.ca_config_map)
        ca_pem: str | None = ((config_map or {}).get("data") or {}).get("ca.crt")
        if not ca_pem and registry_url is None:
            raise RegistryProblem(
                "CANotFound", f"ConfigMap {namespace}/{names.ca_config_map} has no ca.crt yet"
            )
        return ca_pem
    if spec.tls.mode in (TLSMode.SECRET, TLSMode.CERT_MANAGER):
        secret_name = spec.tls.secret_name if spec.tls.mode is TLSMode.SECRET else names.tls
        return secret_value(await kube.get(SECRET, namespace, str(secret_name)), "ca.crt")
    return None


async def _managed_hosts(
    kube: Kube,
    spec: RegistrySpec,
    namespace: str,
    names: RegistryNames,
    endpoint: JSON,
    registry_url: str | None,
) -> list[str]:
    """Every name the registry answers to: its Service's DNS forms and cluster IP, and
    the external host names."""
    port = spec.expose.service.port
    hosts = [
        f"{names.service}:{port}",
        f"{names.service}.{namespace}:{port}",
        *service_hosts(names.service, namespace, port),
    ]
    service = await kube.get(SERVICE, namespace, names.service)
    cluster_ip = ((service or {}).get("spec") or {}).get("clusterIP")
    if cluster_ip and cluster_ip != "None":
        hosts.append(f"{cluster_ip}:{port}")
    expose = spec.expose
    external = (
        endpoint.get("external"),
        expose.route.host if expose.route else None,
        expose.ingress.host if expose.ingress else None,
        _host(registry_url) if registry_url else None,
    )
    return hosts + [host for host in external if host]


async def _unmanaged_access(
    kube: Kube, registry: JSON, spec: RegistrySpec, registry_url: str | None
) -> RegistryAccess:
    external = spec.external
    assert external is not None  # admission requires it
    namespace = registry["metadata"]["namespace"]
    url = registry_url or external.url
    credentials = None
    if external.credentials_secret_ref is not None:
        secret_name = external.credentials_secret_ref.name
        credentials = await _credentials(
            kube,
            namespace,
            secret_name,
            external.url,
            missing=f"spec.external.credentialsSecretRef of the Registry: Secret "
            f"{namespace}/{secret_name} does not exist",
        )
    ca_pem = None
    if external.ca_secret_ref is not None:
        ref = external.ca_secret_ref
        ca_pem = secret_value(await kube.get(SECRET, namespace, ref.name), ref.key)
        if ca_pem is None:
            raise RegistryProblem(
                "CANotFound",
                f"spec.external.caSecretRef: Secret {namespace}/{ref.name} has no key {ref.key!r}",
            )
    endpoint = (registry.get("status") or {}).get("endpoint") or {}
    hosts = [_host(external.url)]
    hosts += [_host(extra) for extra in (endpoint.get("external"), registry_url) if extra]
    return _access(url, hosts, credentials, ca_pem)
