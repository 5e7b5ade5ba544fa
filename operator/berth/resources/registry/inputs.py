"""What the builders are given: the Registry (its owner reference, spec and the cluster
it runs on) and the material the reconciler keeps in Secrets.

`RegistryTarget` is the Registry alone, known at the start of a pass; `RegistryInputs`
adds the material, known once the Service has its cluster IP and the Secrets are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from berth.api.registry import RegistrySpec, TLSMode
from berth.constants import ANNOTATION_MAINTENANCE, MAINTENANCE_READ_ONLY
from berth.resources.registry.names import RegistryNames


@dataclass(frozen=True)
class TLSMaterial:
    cert_pem: str
    key_pem: str
    ca_pem: str | None = None  # published for clients; None for user-provided Secrets


@dataclass(frozen=True)
class RegistryMaterial:
    """State the reconciler keeps in Secrets and hands to the builders."""

    http_secret: str
    ca: TLSMaterial | None = None  # SelfSigned: the CA (cert and key)
    serving: TLSMaterial | None = None  # SelfSigned: the serving certificate
    htpasswd: str | None = None  # Htpasswd: the whole file
    admin_password: str | None = None  # Htpasswd, Token: Berth's own credential
    token_signing: TLSMaterial | None = None  # Token: the token server's signing key
    serving_names: tuple[str, ...] = ()  # CertManager: the names to request
    token_server_tls: TLSMaterial | None = None  # Token with TLS: the token server's cert
    notifications_token: str | None = None  # sent with notifications to the operator
    # CAs trusted beside `ca` during a CA rotation: the next one before it signs, the
    # previous one after (its certificates may still be served).
    ca_trusted: tuple[str, ...] = ()
    ca_record: str | None = None  # the CA rotation's record (berth.reconcile.rotation)

    @property
    def ca_bundle(self) -> str:
        """Every CA a client must trust, in a stable order (the same set before and
        after a rotation's switch makes the same bundle)."""
        pems = {pem.strip() + "\n" for pem in self.ca_trusted}
        if self.ca is not None:
            pems.add(self.ca.cert_pem.strip() + "\n")
        return "".join(sorted(pems))

    @property
    def token_ca_pem(self) -> str | None:
        """Token: the certificate the registry trusts token signatures with."""
        return self.token_signing.cert_pem if self.token_signing else None


class RegistryView:
    """What follows from the Registry object alone; shared by target and inputs."""

    owner: dict[str, Any]  # the Registry: apiVersion, kind, metadata.name/uid/namespace
    spec: RegistrySpec

    @property
    def names(self) -> RegistryNames:
        return RegistryNames(self.owner["metadata"]["name"])

    @property
    def namespace(self) -> str:
        return str(self.owner["metadata"]["namespace"])

    @property
    def maintenance(self) -> bool:
        annotations = self.owner["metadata"].get("annotations") or {}
        return annotations.get(ANNOTATION_MAINTENANCE) == MAINTENANCE_READ_ONLY

    @property
    def read_only(self) -> bool:
        return self.spec.read_only or self.maintenance

    @property
    def tls_enabled(self) -> bool:
        return self.spec.tls.mode is not TLSMode.DISABLED

    @property
    def tls_secret_name(self) -> str | None:
        if self.spec.tls.mode is TLSMode.SECRET:
            return self.spec.tls.secret_name
        return self.names.tls if self.tls_enabled else None


@dataclass(frozen=True)
class RegistryTarget(RegistryView):
    owner: dict[str, Any]
    spec: RegistrySpec
    openshift: bool = False
    # The operator's notifications endpoint (constants.notifications_url); None: no
    # notifications, TagPolicies poll.
    notifications_url: str | None = None
    operator_image: str | None = None  # what the token server runs

    def with_material(self, material: RegistryMaterial) -> RegistryInputs:
        return RegistryInputs(
            self.owner,
            self.spec,
            material,
            self.openshift,
            self.notifications_url,
            self.operator_image,
        )


@dataclass(frozen=True)
class RegistryInputs(RegistryView):
    owner: dict[str, Any]
    spec: RegistrySpec
    material: RegistryMaterial
    openshift: bool = False
    notifications_url: str | None = None
    operator_image: str | None = None
