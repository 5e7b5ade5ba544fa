"""The Secrets (and the cert-manager Certificate) of a Registry: its own state, Berth's
credential, the CA, the serving certificate and the notifications token."""

from __future__ import annotations

import base64
from typing import Any

from berth.api.registry import AuthMode
from berth.resources.registry.config import is_ip, notification_endpoints
from berth.resources.registry.inputs import RegistryInputs, TLSMaterial
from berth.resources.registry.names import ADMIN_USER, CA_ROTATION_KEY, RegistryNames
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
    inputs: RegistryInputs, name: str, component: str, kind: str, text: dict[str, str]
) -> dict[str, Any]:
    """A Secret child of `inputs`' Registry; `text` values are encoded here."""
    data = {key: b64(value) for key, value in text.items()}
    return secret(inputs.namespace, name, labels(inputs.names.registry, component), kind, data)


def _pair(pair: TLSMaterial | None, cert: str = "tls.crt", key: str = "tls.key") -> dict[str, str]:
    assert pair is not None, "wanted only with this material"
    return {cert: pair.cert_pem, key: pair.key_pem}


def registry_secrets(inputs: RegistryInputs) -> dict[str, Any]:
    """What distribution reads from a Secret: the http secret and the auth file."""
    material, mode = inputs.material, inputs.spec.auth.mode
    text = {"http-secret": material.http_secret}
    if mode is AuthMode.HTPASSWD and material.htpasswd is not None:
        text["htpasswd"] = material.htpasswd
    if mode is AuthMode.TOKEN and material.token_ca_pem is not None:
        text["token-ca.crt"] = material.token_ca_pem
    return _secret(inputs, inputs.names.secrets, "registry", "Opaque", text)


def notifications(inputs: RegistryInputs) -> dict[str, Any]:
    token, endpoints = inputs.material.notifications_token, notification_endpoints(inputs)
    assert token is not None and endpoints is not None, "wanted only with notifications"
    return notifications_secret(inputs.owner, token, endpoints)


def admin(inputs: RegistryInputs) -> dict[str, Any]:
    password = inputs.material.admin_password
    assert password is not None
    text = {"username": ADMIN_USER, "password": password}
    return _secret(inputs, inputs.names.admin, "registry", "kubernetes.io/basic-auth", text)


def token_signing(inputs: RegistryInputs) -> dict[str, Any]:
    text = _pair(inputs.material.token_signing)
    return _secret(inputs, inputs.names.token_signing, "token-server", "kubernetes.io/tls", text)


def ca(inputs: RegistryInputs) -> dict[str, Any]:
    """Berth's CA: it signs the SelfSigned serving certificate and the token server's."""
    text = _pair(inputs.material.ca, "ca.crt", "ca.key")
    if inputs.material.ca_record is not None:
        text[CA_ROTATION_KEY] = inputs.material.ca_record
    return _secret(inputs, inputs.names.ca_secret, "ca", "Opaque", text)


def ca_config_map(inputs: RegistryInputs) -> dict[str, Any]:
    """The CA bundle, for clients (status.caConfigMap)."""
    assert inputs.material.ca is not None
    return render(
        "registry/ca-configmap.yaml.j2",
        names=inputs.names,
        namespace=inputs.namespace,
        labels=labels(inputs.names.registry, "ca"),
        ca_pem=inputs.material.ca_bundle,
    )


def serving_tls(inputs: RegistryInputs) -> dict[str, Any]:
    """SelfSigned: the serving certificate Berth's CA issued."""
    ca_pair = inputs.material.ca
    assert ca_pair is not None
    text = {**_pair(inputs.material.serving), "ca.crt": ca_pair.cert_pem}
    return _secret(inputs, inputs.names.tls, "registry", "kubernetes.io/tls", text)


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
