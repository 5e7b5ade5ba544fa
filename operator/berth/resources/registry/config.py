"""distribution's configuration and what it points at: the token realm, the
notification endpoints, the names the serving certificate covers."""

from __future__ import annotations

import hashlib
import ipaddress
from typing import Any

import yaml

from berth.api.registry import AuthMode
from berth.resources.registry.inputs import RegistryInputs, RegistryView
from berth.resources.registry.names import (
    AUTH_DIR,
    DATA_PATH,
    DEBUG_PORT,
    REGISTRY_PORT,
    TLS_DIR,
    TOKEN_ISSUER,
    TOKEN_SERVER_PORT,
)


def service_hosts(name: str, namespace: str, port: int) -> list[str]:
    """The in-cluster host names (with port) of a registry's Service."""
    return [
        f"{name}.{namespace}.svc:{port}",
        f"{name}.{namespace}.svc.cluster.local:{port}",
    ]


def serving_names(registry: RegistryView, cluster_ip: str | None) -> list[str]:
    """Every name the serving certificate must cover: Service DNS forms, cluster IP and
    the external host of a Route or Ingress."""
    name, namespace = registry.names.service, registry.namespace
    names = [
        f"{name}.{namespace}.svc",
        f"{name}.{namespace}.svc.cluster.local",
        f"{name}.{namespace}",
        name,
    ]
    if cluster_ip and cluster_ip != "None":
        names.append(cluster_ip)
    expose = registry.spec.expose
    for host in (
        expose.route.host if expose.route else None,
        expose.ingress and expose.ingress.host,
    ):
        if host and host not in names:
            names.append(host)
    return names


def token_server_names(registry: RegistryView) -> list[str]:
    """The names the token server's certificate covers."""
    server, namespace = registry.names.token_server, registry.namespace
    return [
        f"{server}.{namespace}.svc",
        f"{server}.{namespace}.svc.cluster.local",
        f"{server}.{namespace}",
        server,
    ]


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def registry_config(registry: RegistryView) -> dict[str, Any]:
    """distribution's config.yml. Secrets are not in it: REGISTRY_HTTP_SECRET and the S3
    keys come from Secrets as environment variables."""
    spec = registry.spec
    storage = spec.storage
    assert storage is not None, "Managed registries have storage (admission checks it)"
    driver: dict[str, Any]
    if storage.s3 is not None:
        s3 = storage.s3
        driver = {"s3": {"bucket": s3.bucket, "region": s3.region}}
        if s3.region_endpoint:
            driver["s3"]["regionendpoint"] = s3.region_endpoint
        if s3.root_directory:
            driver["s3"]["rootdirectory"] = s3.root_directory
    else:
        driver = {"filesystem": {"rootdirectory": DATA_PATH}}
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "json", "fields": {"service": "registry"}},
        "storage": {
            **driver,
            "delete": {"enabled": True},
            "cache": {"blobdescriptor": "inmemory"},
            "maintenance": {
                "uploadpurging": {
                    "enabled": True,
                    "age": "168h",
                    "interval": "24h",
                    "dryrun": False,
                },
                "readonly": {"enabled": registry.read_only},
            },
        },
        "http": {
            "addr": f":{REGISTRY_PORT}",
            "headers": {"X-Content-Type-Options": ["nosniff"]},
            "debug": {
                "addr": f":{DEBUG_PORT}",
                "prometheus": {"enabled": True, "path": "/metrics"},
            },
        },
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }
    if registry.tls_enabled:
        config["http"]["tls"] = {
            "certificate": f"{TLS_DIR}/tls.crt",
            "key": f"{TLS_DIR}/tls.key",
        }
    if spec.auth.mode is AuthMode.HTPASSWD:
        config["auth"] = {"htpasswd": {"realm": "berth", "path": f"{AUTH_DIR}/htpasswd"}}
    elif spec.auth.mode is AuthMode.TOKEN:
        config["auth"] = {
            "token": {
                "realm": token_realm(registry),
                "service": token_service(registry),
                "issuer": TOKEN_ISSUER,
                "rootcertbundle": f"{AUTH_DIR}/token-ca.crt",
            }
        }
    return config


def config_yaml(registry: RegistryView) -> str:
    return yaml.safe_dump(registry_config(registry), sort_keys=True)


def token_service(registry: RegistryView) -> str:
    return f"{registry.names.service}.{registry.namespace}.svc"


def token_realm(registry: RegistryView) -> str:
    scheme = "https" if registry.tls_enabled else "http"
    host = f"{registry.names.token_server}.{registry.namespace}.svc"
    return f"{scheme}://{host}:{TOKEN_SERVER_PORT}/token"


def notification_endpoints(inputs: RegistryInputs) -> str | None:
    """distribution's notifications.endpoints, as YAML: manifest pushes and deletes to
    the operator, with the shared token; blob events and pulls are not sent."""
    token = inputs.material.notifications_token
    if inputs.notifications_url is None or token is None:
        return None
    endpoint = {
        "name": "berth",
        "url": f"{inputs.notifications_url}/{inputs.namespace}/{inputs.names.registry}",
        "headers": {"Authorization": [f"Bearer {token}"]},
        "timeout": "2s",
        "threshold": 5,
        "backoff": "2s",
        "ignoredmediatypes": ["application/octet-stream"],
        "ignore": {"actions": ["pull"]},
    }
    return yaml.safe_dump([endpoint], sort_keys=True)


def checksum(*parts: str | None) -> str:
    """What the Pods depend on; a change rolls them (htpasswd is read once at start)."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update((part or "").encode())
        digest.update(b"\0")
    return digest.hexdigest()
