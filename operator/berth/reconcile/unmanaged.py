"""Unmanaged registries: Berth runs nothing, and Ready follows an authenticated probe of
`/v2/` at `spec.external.url`, with a reason a person can act on when it fails."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from berth.api.registry import ExternalRegistry
from berth.k8s.api import Kube
from berth.k8s.kinds import SECRET
from berth.k8s.secrets import secret_value
from berth.observability import REDACTOR
from berth.registry.client import RegistryClient, RegistryError

PROBE_TIMEOUT: Final = 10.0


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str


class SecretProblem(Exception):
    pass


def credentials_from_secret(secret: dict[str, Any], url: str) -> Credentials:
    """basic-auth (username/password) or dockerconfigjson (the entry for the URL's host)."""
    username, password = secret_value(secret, "username"), secret_value(secret, "password")
    if username is not None and password is not None:
        return Credentials(username, password)
    config = secret_value(secret, ".dockerconfigjson")
    if config is None:
        raise SecretProblem("has neither username/password nor .dockerconfigjson")
    host = urlsplit(url).netloc
    try:
        auths = json.loads(config).get("auths", {})
    except json.JSONDecodeError as error:
        raise SecretProblem(f".dockerconfigjson is not JSON: {error.msg}") from None
    entry = auths.get(host) or auths.get(f"https://{host}") or auths.get(f"http://{host}")
    if not entry:
        raise SecretProblem(f".dockerconfigjson has no entry for {host}")
    if entry.get("username") is not None:
        return Credentials(entry["username"], entry.get("password", ""))
    user, _, secret_part = base64.b64decode(entry.get("auth", "")).decode().partition(":")
    return Credentials(user, secret_part)


async def probe_external(kube: Kube, namespace: str, external: ExternalRegistry) -> ProbeResult:
    credentials: Credentials | None = None
    ca_pem: str | None = None
    if external.credentials_secret_ref is not None:
        name = external.credentials_secret_ref.name
        secret = await kube.get(SECRET, namespace, name)
        if secret is None:
            return ProbeResult(
                False,
                "CredentialsNotFound",
                f"spec.external.credentialsSecretRef: Secret {name!r} does not exist",
            )
        try:
            credentials = credentials_from_secret(secret, external.url)
        except SecretProblem as problem:
            return ProbeResult(
                False,
                "InvalidCredentials",
                f"spec.external.credentialsSecretRef: Secret {name!r} {problem}",
            )
        REDACTOR.register(credentials.password)
    if external.ca_secret_ref is not None:
        ref = external.ca_secret_ref
        secret = await kube.get(SECRET, namespace, ref.name)
        ca_pem = secret_value(secret, ref.key)
        if ca_pem is None:
            return ProbeResult(
                False,
                "CANotFound",
                f"spec.external.caSecretRef: Secret {ref.name!r} "
                + ("does not exist" if secret is None else f"has no key {ref.key!r}"),
            )
    client = RegistryClient(
        external.url,
        username=credentials.username if credentials else None,
        password=credentials.password if credentials else None,
        ca_pem=ca_pem,
        retries=0,
        timeout=PROBE_TIMEOUT,
    )
    try:
        async with client:
            await client.ping()
    except RegistryError as error:
        return _explain(error, external, has_credentials=credentials is not None)
    except ValueError as error:  # a CA bundle that does not parse
        return ProbeResult(False, "InvalidCA", f"spec.external.caSecretRef: {error}")
    return ProbeResult(
        True, "Reachable", f"{external.url}/v2/ answers and accepts Berth's credentials"
    )


def _explain(
    error: RegistryError, external: ExternalRegistry, *, has_credentials: bool
) -> ProbeResult:
    url = external.url.rstrip("/")
    if error.status is None:
        text = str(error)
        if "TLS" in text or "certificate" in text.lower() or "SSL" in text:
            return ProbeResult(
                False,
                "TLSError",
                f"the TLS handshake with {url} failed ({text}); if its certificate is signed by "
                "a private CA, name that CA in spec.external.caSecretRef",
            )
        return ProbeResult(
            False,
            "Unreachable",
            f"cannot connect to {url} ({text}); check that the registry is running and that "
            "spec.external.url is right",
        )
    if error.status == 401:
        hint = (
            "the credentials in spec.external.credentialsSecretRef were refused"
            if has_credentials
            else "it requires credentials: set spec.external.credentialsSecretRef"
        )
        return ProbeResult(False, "Unauthorized", f"{url}/v2/ answered 401: {hint}")
    if error.status == 404:
        return ProbeResult(
            False,
            "NotARegistry",
            f"{url}/v2/ answered 404: this does not look like a registry (distribution API v2)",
        )
    return ProbeResult(False, "UnexpectedResponse", f"{url}/v2/ answered {error.status}: {error}")
