"""The Secrets (and the cert-manager Certificate) of a Registry: its own state, Berth's
credential, the CA, the serving certificate and the notifications token."""

from __future__ import annotations

import base64
from typing import Any

from berth.api.registry import AuthMode
from berth.resources.registry.config import is_ip, notification_endpoints
from berth.resources.registry.inputs import RegistryInputs
from berth.resources.registry.names import ADMIN_USER, RegistryNames
from berth.resources.render import labels, owned_by, render


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(
    namespace: str, name: str, labels: dict[str, str], secret_type: str, data: dict[str, str]
) -> dict[str, Any]:
    """A Secret child; `data` values are base64 already."""
    return render(
        "registry/secret.yaml.j2",
        namespace=namespace,
        name=name,
        labels=labels,
        type=secret_type,
        data=data,
    )


def notifications_secret(
    registry: dict[str, Any], token: str, endpoints: str | None = None
) -> dict[str, Any]:
    """The Secret holding the token the registry sends as `Authorization: Bearer` with
    its notifications to the operator and, for Managed registries, the endpoint list the
    registry reads from REGISTRY_NOTIFICATIONS_ENDPOINTS (it holds the token, so it is
    not in the ConfigMap)."""
    metadata = registry["metadata"]
    names = RegistryNames(metadata["name"])
    data = {"token": b64(token)}
    if endpoints is not None:
        data["endpoints"] = b64(endpoints)
    return owned_by(
        secret(
            metadata["namespace"],
            names.notifications,
            labels(metadata["name"], "notifications"),
            "Opaque",
            data,
        ),
        registry,
    )


def _secret(
    inputs: RegistryInputs, name: str, component: str, kind: str, **data: str
) -> dict[str, Any]:
    return secret(inputs.namespace, name, labels(inputs.names.registry, component), kind, data)


def registry_secrets(inputs: RegistryInputs) -> dict[str, Any]:
    """What distribution reads from a Secret: the http secret and the auth file."""
    material, mode = inputs.material, inputs.spec.auth.mode
    data = {"http-secret": b64(material.http_secret)}
    if mode is AuthMode.HTPASSWD and material.htpasswd is not None:
        data["htpasswd"] = b64(material.htpasswd)
    if mode is AuthMode.TOKEN and material.token_ca_pem is not None:
        data["token-ca.crt"] = b64(material.token_ca_pem)
    return _secret(inputs, inputs.names.secrets, "registry", "Opaque", **data)


def notifications(inputs: RegistryInputs) -> dict[str, Any]:
    token, endpoints = inputs.material.notifications_token, notification_endpoints(inputs)
    assert token is not None and endpoints is not None, "wanted only with notifications"
    return notifications_secret(inputs.owner, token, endpoints)


def admin(inputs: RegistryInputs) -> dict[str, Any]:
    password = inputs.material.admin_password
    assert password is not None
    return _secret(
        inputs, inputs.names.admin, "registry", "kubernetes.io/basic-auth",
        username=b64(ADMIN_USER), password=b64(password),
    )  # fmt: skip


def token_signing(inputs: RegistryInputs) -> dict[str, Any]:
    pair = inputs.material.token_signing
    assert pair is not None
    return _secret(
        inputs, inputs.names.token_signing, "token-server", "kubernetes.io/tls",
        **{"tls.crt": b64(pair.cert_pem), "tls.key": b64(pair.key_pem)},
    )  # fmt: skip


def ca(inputs: RegistryInputs) -> dict[str, Any]:
    """Berth's CA: it signs the SelfSigned serving certificate and the token server's."""
    pair = inputs.material.ca
    assert pair is not None
    return _secret(
        inputs, inputs.names.ca_secret, "ca", "Opaque",
        **{"ca.crt": b64(pair.cert_pem), "ca.key": b64(pair.key_pem)},
    )  # fmt: skip


def ca_config_map(inputs: RegistryInputs) -> dict[str, Any]:
    """The CA's certificate, for clients (status.caConfigMap)."""
    pair = inputs.material.ca
    assert pair is not None
    return render(
        "registry/ca-configmap.yaml.j2",
        names=inputs.names,
        namespace=inputs.namespace,
        labels=labels(inputs.names.registry, "ca"),
        ca_pem=pair.cert_pem,
    )


def serving_tls(inputs: RegistryInputs) -> dict[str, Any]:
    """SelfSigned: the serving certificate Berth's CA issued."""
    ca_pair, serving = inputs.material.ca, inputs.material.serving
    assert ca_pair is not None and serving is not None
    return _secret(
        inputs, inputs.names.tls, "registry", "kubernetes.io/tls",
        **{"tls.crt": b64(serving.cert_pem), "tls.key": b64(serving.key_pem),
           "ca.crt": b64(ca_pair.cert_pem)},
    )  # fmt: skip


def certificate(inputs: RegistryInputs) -> dict[str, Any]:
    """CertManager: the Certificate cert-manager issues into the TLS Secret."""
    issuer = inputs.spec.tls.issuer_ref
    assert issuer is not None  # admission requires it
    wanted = inputs.material.serving_names
    return render(
        "registry/certificate.yaml.j2",
        names=inputs.names,
        namespace=inputs.namespace,
        labels=labels(inputs.names.registry, "registry"),
        dns_names=[n for n in wanted if not is_ip(n)],
        ip_addresses=[n for n in wanted if is_ip(n)],
        issuer=issuer.model_dump(mode="json"),
    )
